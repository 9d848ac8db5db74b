//! Argument structs (clap derive) and the glue from arguments to library calls.

mod message;
mod sgd;
mod train;

pub use message::message;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ldam_onnx::counts::CountsSource;
use ldam_onnx::error::SettingNames;
use ldam_onnx::inspect;
use ldam_onnx::ldam::{LossConfig, LossKind, Reweight};
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::patch::{self, ContractNames, HeadMode, PatchOptions};
use sgd::SgdArgs;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "ldam-onnx",
    version,
    about = "Make an ONNX classifier trainable with the LDAM-DRW long-tail loss",
    long_about = "Make an ONNX classifier trainable with the LDAM-DRW long-tail loss \
(Cao et al., NeurIPS 2019).\n\n\
  ldam-onnx inspect model.onnx\n\
  ldam-onnx patch model.onnx --class-counts 5000,2997,1796,1077,645,387,232,139,83,50\n\
  ldam-onnx train model.ldam.onnx --train cifar-10-batches-bin --imbalance-ratio 100 --out runs/ldam-drw\n\
  ldam-onnx eval runs/ldam-drw/model.onnx --test cifar-10-batches-bin\n\n\
`patch` appends the label-distribution-aware margin loss and deferred re-weighting to the \
graph, with inputs `labels` and `epoch` and output `loss`, and records its settings in the \
model's metadata."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Summarise a model: inputs, outputs, ops, parameters, classifier head, loss settings
    Inspect(InspectArgs),
    /// Append the LDAM-DRW loss subgraph to a classifier
    Patch(PatchArgs),
    /// Compile a patched model into one SGD training step as a plain ONNX graph
    Compile(CompileArgs),
    /// Train a patched model on real data; writes checkpoints, report, plots and model.onnx
    Train(train::TrainArgs),
    /// Test-set accuracy of any ONNX classifier, per class and by shot group
    Eval(train::EvalArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "The training-step graph takes the model's inputs, `labels`, `epoch`, `lr` and \
every state tensor S (parameters, momentum buffers `S.momentum`, BatchNorm running statistics; \
initializers hold their current values) and returns `loss`, the logits and `S.next` for every S. \
Feed each S.next back as S for the next step."
)]
struct CompileArgs {
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

#[derive(Args, Debug)]
struct InspectArgs {
    /// The ONNX model to summarise
    model: PathBuf,
    /// Output format: readable text, JSON, or Graphviz dot (appended nodes highlighted)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Text,
    Json,
    Dot,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LossArg {
    /// Label-distribution-aware margin loss: CE(s * (z - m_y onehot(y)), y)
    Ldam,
    /// Plain softmax cross-entropy
    Ce,
    /// Focal loss (gamma from --gamma)
    Focal,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ReweightArg {
    /// No class weights
    None,
    /// Effective-number class weights from the first epoch
    Rw,
    /// Deferred re-weighting: ones before --drw-epoch, effective-number weights from it on
    Drw,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum HeadArg {
    /// Cosine head for --loss ldam when the logits come from a linear layer
    Auto,
    /// Leave the classifier head as exported
    Keep,
    /// Rewrite the final linear layer into the normalised (cosine) classifier
    Cosine,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("counts").required(true).args(["class_counts", "class_counts_file", "labels_file"]))]
struct PatchArgs {
    /// The exported classifier (.onnx); it is never modified
    model: PathBuf,
    /// Where to write the patched model [default: <stem>.ldam.onnx beside the input]
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Replace the output file if it exists
    #[arg(long)]
    force: bool,

    /// Training examples per class, comma-separated, in class order (e.g. 5000,2997,1796)
    #[arg(long, value_name = "N,N,...")]
    class_counts: Option<String>,
    /// File with the class counts: one integer per line, or a JSON array
    #[arg(long, value_name = "FILE")]
    class_counts_file: Option<PathBuf>,
    /// Training labels to count: one integer per line, or an NPZ with array `y`
    #[arg(long, value_name = "FILE")]
    labels_file: Option<PathBuf>,

    /// Training loss
    #[arg(long, value_enum, default_value_t = LossArg::Ldam)]
    loss: LossArg,
    /// Largest LDAM margin, given to the rarest class (m_j ~ n_j^-1/4)
    #[arg(long, default_value_t = 0.5)]
    max_m: f64,
    /// LDAM logit scale s
    #[arg(long, default_value_t = 30.0)]
    scale: f64,
    /// Focal loss focusing parameter
    #[arg(long, default_value_t = 1.0)]
    gamma: f64,
    /// Class re-weighting scheme
    #[arg(long, value_enum, default_value_t = ReweightArg::Drw)]
    reweight: ReweightArg,
    /// First epoch (0-based) with class-balanced weights under --reweight drw
    #[arg(long, default_value_t = 160)]
    drw_epoch: i64,
    /// Effective-number beta: w_j ~ (1 - beta) / (1 - beta^n_j)
    #[arg(long, default_value_t = 0.9999)]
    beta: f64,
    /// What to do with the final linear layer
    #[arg(long, value_enum, default_value_t = HeadArg::Auto)]
    head: HeadArg,

    /// The output (or softmax input) holding the logits, when several qualify
    #[arg(long, value_name = "NAME")]
    logits: Option<String>,
    /// Name of the new labels input
    #[arg(long, default_value = "labels", value_name = "NAME")]
    labels_name: String,
    /// Name of the new epoch input
    #[arg(long, default_value = "epoch", value_name = "NAME")]
    epoch_name: String,
    /// Name of the new loss output
    #[arg(long, default_value = "loss", value_name = "NAME")]
    loss_name: String,
    /// Name of the logits output added when the logits are not already an output
    #[arg(long, default_value = "logits", value_name = "NAME")]
    logits_output_name: String,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let done = |()| ExitCode::SUCCESS;
    match cli.command {
        Command::Inspect(args) => run_inspect(args).map(done),
        Command::Patch(args) => run_patch(args).map(done),
        Command::Compile(args) => run_compile(args).map(done),
        Command::Train(args) => train::run_train(args),
        Command::Eval(args) => train::run_eval(args),
    }
}

fn run_inspect(args: InspectArgs) -> Result<()> {
    let loaded = io::load(&args.model)?;
    let text = match args.format {
        Format::Text => inspect::render_text(&inspect::summarize(&loaded)?),
        Format::Json => inspect::render_json(&inspect::summarize(&loaded)?),
        Format::Dot => inspect::render_dot(&loaded.model),
    };
    print!("{text}");
    Ok(())
}

fn run_patch(args: PatchArgs) -> Result<()> {
    let loaded = io::load(&args.model)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| io::sibling_with_suffix(&args.model, "ldam"));
    // Fail on an existing output before any work is done.
    if output.exists() && !args.force {
        return Err(ldam_onnx::Error::OutputExists { path: output }.into());
    }
    let source = match (
        &args.class_counts,
        &args.class_counts_file,
        &args.labels_file,
    ) {
        (Some(list), _, _) => CountsSource::List(list.clone()),
        (_, Some(file), _) => CountsSource::File(file.clone()),
        (_, _, Some(file)) => CountsSource::Labels(file.clone()),
        _ => unreachable!("clap requires one of the counts flags"),
    };
    let config = LossConfig {
        // Read from `source` once the model's classes are known.
        class_counts: Vec::new(),
        loss: match args.loss {
            LossArg::Ldam => LossKind::Ldam,
            LossArg::Ce => LossKind::Ce,
            LossArg::Focal => LossKind::Focal,
        },
        max_m: args.max_m,
        scale: args.scale,
        gamma: args.gamma,
        reweight: match args.reweight {
            ReweightArg::None => Reweight::None,
            ReweightArg::Rw => Reweight::Rw,
            ReweightArg::Drw => Reweight::Drw,
        },
        drw_epoch: args.drw_epoch,
        beta: args.beta,
    };
    let options = PatchOptions {
        config,
        head: match args.head {
            HeadArg::Auto => HeadMode::Auto,
            HeadArg::Keep => HeadMode::Keep,
            HeadArg::Cosine => HeadMode::Cosine,
        },
        logits: args.logits.clone(),
        names: ContractNames {
            labels: args.labels_name.clone(),
            epoch: args.epoch_name.clone(),
            loss: args.loss_name.clone(),
            logits: args.logits_output_name.clone(),
        },
    };
    let (patched, summary) =
        patch::patch_with_counts(&loaded.model, &source, &options).map_err(|e| match e {
            // The counts' own errors name their flag or file, not the model.
            counts @ ldam_onnx::Error::Counts(_) => anyhow::Error::from(counts),
            other => anyhow::Error::from(other).context(args.model.display().to_string()),
        })?;
    io::save(
        &patched,
        Some(&loaded),
        &output,
        SaveOptions {
            overwrite: args.force,
        },
    )?;
    eprintln!("{}", summary.head_note.describe(SettingNames::Flags));

    let c = &options.config;
    println!("patched {} -> {}", args.model.display(), output.display());
    println!(
        "  logits '{}' [{}, {}]; loss {}{}; reweight {}{}",
        summary.head.logits,
        summary.head.batch,
        summary.head.classes,
        c.loss,
        match c.loss {
            LossKind::Ldam => format!(" (max_m {}, scale {})", c.max_m, c.scale),
            LossKind::Focal => format!(" (gamma {})", c.gamma),
            LossKind::Ce => String::new(),
        },
        c.reweight,
        match c.reweight {
            Reweight::Drw => format!(" (from epoch {}, beta {})", c.drw_epoch, c.beta),
            Reweight::Rw => format!(" (beta {})", c.beta),
            Reweight::None => String::new(),
        }
    );
    println!(
        "  appended {} nodes and {} initializers ({}); new inputs: {}; new outputs: {}",
        summary.appended_nodes,
        summary.appended_initializers.len(),
        summary
            .appended_initializers
            .iter()
            .filter(|n| n.starts_with(ldam_onnx::ldam::contract::CONSTANT_PREFIX))
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        summary.new_inputs.join(", "),
        summary.new_outputs.join(", ")
    );
    Ok(())
}

fn run_compile(args: CompileArgs) -> Result<()> {
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
    if output.exists() && !args.force {
        return Err(ldam_onnx::Error::OutputExists { path: output }.into());
    }
    let options = args.sgd.options();
    let step = ldam_onnx::compile::compile(&loaded.model, &options)
        .with_context(|| format!("{}", args.model.display()))?;
    io::save(
        &step.model,
        Some(&loaded),
        &output,
        SaveOptions {
            overwrite: args.force,
        },
    )?;
    let count = |kind| step.state.iter().filter(|s| s.kind == kind).count();
    use ldam_onnx::compile::StateKind;
    println!("compiled {} -> {}", args.model.display(), output.display());
    println!(
        "  state: {} parameters, {} momentum buffers, {} running statistics",
        count(StateKind::Parameter),
        count(StateKind::Momentum),
        count(StateKind::RunningMean) + count(StateKind::RunningVar)
    );
    println!(
        "  nodes: {} forward, {} backward, {} update; SGD momentum {}, weight decay {}",
        step.forward_nodes,
        step.backward_nodes,
        step.update_nodes,
        options.momentum,
        options.weight_decay
    );
    Ok(())
}
