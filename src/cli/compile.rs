//! `ldam-onnx compile`: a patched model to its training-step graph.

use super::sgd::SgdArgs;
use anyhow::{Context, Result};
use clap::Args;
use ldam_onnx::onnx::io::{self, SaveOptions};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "The training-step graph takes the model's inputs, `labels`, `epoch`, `lr` and \
every state tensor S (parameters, momentum buffers `S.momentum`, BatchNorm running statistics) \
and returns `loss`, the logits and `S.next` for every S. Feed each S.next back as S for the next \
step. The initial state is written beside the step as NAME.state.onnx: a model with no inputs \
that returns every S when run, so any ONNX runtime (onnxruntime-web and -node included) can \
start training from it."
)]
pub struct CompileArgs {
    /// A model written by `ldam-onnx patch`
    model: PathBuf,
    /// Where to write the training step [default: <stem>.train.onnx beside the input]
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Replace the output file if it exists
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    sgd: SgdArgs,
}

pub fn run_compile(args: CompileArgs) -> Result<()> {
    let loaded = io::load(&args.model)?;
    let output = args.output.clone().unwrap_or_else(|| {
        // model.ldam.onnx -> model.train.onnx
        let stem = args
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = stem.strip_suffix(".ldam").unwrap_or(&stem);
        args.model.with_file_name(format!("{base}.train.onnx"))
    });
    let options = args.sgd.options();
    let step = ldam_onnx::compile::compile(&loaded.model, &options)
        .with_context(|| format!("{}", args.model.display()))?;
    let companion = step.save(&output, Some(&loaded), SaveOptions::overwriting(args.force))?;
    let count = |kind| step.state.iter().filter(|s| s.kind == kind).count();
    use ldam_onnx::compile::StateKind;
    println!(
        "compiled {} -> {} (initial state in {})",
        args.model.display(),
        output.display(),
        companion.display()
    );
    println!(
        "  state: {} parameters, {} momentum buffers, {} running statistics",
        count(StateKind::Parameter),
        count(StateKind::Momentum),
        count(StateKind::RunningMean) + count(StateKind::RunningVar)
    );
    println!(
        "  nodes: {} forward, {} backward, {} update; SGD momentum {}, weight decay {}{}",
        step.forward_nodes,
        step.backward_nodes,
        step.update_nodes,
        options.momentum,
        options.weight_decay,
        match options.sam {
            Some(rho) => format!("; SAM rho {rho} (a second pass at w + e)"),
            None => String::new(),
        }
    );
    Ok(())
}
