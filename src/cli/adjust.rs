//! `ldam-onnx adjust`: post-hoc logit adjustment and tau-normalisation of a
//! trained, deployable model.

use super::counts_args::{CountsArgs, COUNTS_FLAGS};
use anyhow::{Context, Result};
use clap::Args;
use ldam_onnx::adjust::{adjust, AdjustOptions};
use ldam_onnx::onnx::io::{self, SaveOptions};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    group = clap::ArgGroup::new("change").required(true).multiple(true).args(["logit_adjust", "tau_norm"]),
    group = clap::ArgGroup::new("counts").args(COUNTS_FLAGS),
    after_help = "Both changes are rewrites of the inference graph: --logit-adjust T subtracts \
T * log(pi_j), pi_j = n_j / sum n, from the logits (Menon et al., ICLR 2021); --tau-norm P divides \
each class's weights of the final linear layer by their L2 norm to the power P (Kang et al., ICLR \
2020), bias unchanged. --logit-adjust takes the class counts from --class-counts, --class-counts-file or \
--labels-file, else from the model, where `train` records them. The output is a plain inference model; `ldam-onnx eval` measures the effect."
)]
pub struct AdjustArgs {
    /// A deployable classifier, e.g. the model.onnx that `train` writes
    model: PathBuf,
    /// Where to write the adjusted model
    #[arg(short, long)]
    output: PathBuf,
    /// Replace the output file if it exists
    #[arg(long)]
    force: bool,
    /// Subtract T * log(class prior) from the logits (post-hoc logit adjustment)
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    logit_adjust: Option<f64>,
    /// Divide each class's final-layer weights by their norm to the power P (tau-normalisation)
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    tau_norm: Option<f64>,
    #[command(flatten)]
    counts: CountsArgs,
    /// The output (or softmax input) holding the logits [default: recorded, else the one float [N, C] output]
    #[arg(long, value_name = "NAME")]
    logits: Option<String>,
}

pub fn run_adjust(args: AdjustArgs) -> Result<()> {
    if args.output.exists() && !args.force {
        return Err(ldam_onnx::Error::OutputExists { path: args.output }.into());
    }
    let loaded = io::load_with_data(&args.model)?;
    let options = AdjustOptions {
        logit_adjust: args.logit_adjust,
        tau_norm: args.tau_norm,
        class_counts: args.counts.source(),
        logits: args.logits.clone(),
    };
    let (adjusted, summary) = adjust(&loaded.model, &options).map_err(|e| match e {
        counts @ ldam_onnx::Error::Counts(_) => anyhow::Error::from(counts),
        other => anyhow::Error::from(other).context(args.model.display().to_string()),
    })?;
    io::save(
        &adjusted,
        Some(&loaded),
        &args.output,
        SaveOptions::overwriting(args.force),
    )
    .with_context(|| args.output.display().to_string())?;
    println!(
        "adjusted {} -> {}",
        args.model.display(),
        args.output.display()
    );
    if let (Some(tau), Some(offsets)) = (args.logit_adjust, &summary.offsets) {
        let shown: Vec<String> = offsets.iter().map(|o| format!("{o:.4}")).collect();
        println!(
            "  logits '{}' [N, {}] minus {tau} * log(pi): [{}]",
            summary.logits,
            summary.classes,
            shown.join(", ")
        );
    }
    if let (Some(p), Some((weight, norms))) = (args.tau_norm, &summary.normalized) {
        let shown: Vec<String> = norms.iter().map(|n| format!("{n:.4}")).collect();
        println!(
            "  '{weight}': class weights divided by their norm^{p}; norms were [{}]",
            shown.join(", ")
        );
    }
    Ok(())
}
