//! `ldam-onnx patch`: the LDAM-DRW loss subgraph appended to a classifier.

use super::counts_args::{CountsArgs, COUNTS_FLAGS};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ldam_onnx::error::SettingNames;
use ldam_onnx::ldam::{LossConfig, LossKind, Reweight};
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::patch::batchnorm::BatchNormMode;
use ldam_onnx::patch::{self, ContractNames, HeadMode, PatchOptions};
use std::path::PathBuf;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LossArg {
    /// Label-distribution-aware margin loss: CE(s * (z - m_y onehot(y)), y)
    Ldam,
    /// Plain softmax cross-entropy
    Ce,
    /// Focal loss (gamma from --gamma)
    Focal,
    /// Logit-adjusted cross-entropy CE(z + T log(pi), y), pi_j = n_j / sum n (Menon et al.); Balanced Softmax at --la-tau 1
    La,
    /// VS loss CE(Delta z + iota, y), Delta_j = (n_j/n_max)^G, iota_j = T log(pi_j) (Kini et al.)
    Vs,
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

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BatchNormArg {
    /// Inference-mode BatchNorm becomes training-mode: batch statistics, running statistics updated (model.train())
    Train,
    /// Keep BatchNorm as exported: running statistics fixed (fine-tuning with frozen BatchNorm)
    Frozen,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("counts").required(true).args(COUNTS_FLAGS))]
pub struct PatchArgs {
    /// The exported classifier (.onnx); it is never modified
    model: PathBuf,
    /// Where to write the patched model [default: <stem>.ldam.onnx beside the input]
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Replace the output file if it exists
    #[arg(long)]
    force: bool,

    #[command(flatten)]
    counts: CountsArgs,

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
    /// Temperature T of --loss la: CE(z + T log(pi), y); 1 is Balanced Softmax (Ren et al., NeurIPS 2020)
    #[arg(long, default_value_t = ldam_onnx::ldam::LA_TAU, value_name = "T")]
    la_tau: f64,
    /// Exponent G of --loss vs's scales Delta_j = (n_j/n_max)^G
    #[arg(long, default_value_t = ldam_onnx::ldam::VS_GAMMA, value_name = "G")]
    vs_gamma: f64,
    /// Temperature T of --loss vs's offsets iota_j = T log(pi_j)
    #[arg(long, default_value_t = ldam_onnx::ldam::VS_TAU, value_name = "T")]
    vs_tau: f64,
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
    /// What inference-mode BatchNormalization nodes (eval-mode and dynamo exports) do in training
    #[arg(long, value_enum, default_value_t = BatchNormArg::Train)]
    batchnorm: BatchNormArg,

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

/// External tensors up to this size are read into the patched model (and written
/// inline); larger ones stay in the data file.
const SMALL_CONSTANT_BYTES: u64 = 64 * 1024;

pub fn run_patch(args: PatchArgs) -> Result<()> {
    let mut loaded = io::load(&args.model)?;
    // Small constants are read, so that the batch can be freed where it hides in
    // their values; weights stay in their files.
    loaded.read_external_data_up_to(SMALL_CONSTANT_BYTES)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| io::sibling_with_suffix(&args.model, "ldam"));
    // Fail on an existing output before any work is done.
    if output.exists() && !args.force {
        return Err(ldam_onnx::Error::OutputExists { path: output }.into());
    }
    let source = args
        .counts
        .source()
        .context("one of --class-counts, --class-counts-file or --labels-file is required")?;
    let config = LossConfig {
        // Read from `source` once the model's classes are known.
        class_counts: Vec::new(),
        loss: match args.loss {
            LossArg::Ldam => LossKind::Ldam,
            LossArg::Ce => LossKind::Ce,
            LossArg::Focal => LossKind::Focal,
            LossArg::La => LossKind::La,
            LossArg::Vs => LossKind::Vs,
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
        la_tau: args.la_tau,
        vs_gamma: args.vs_gamma,
        vs_tau: args.vs_tau,
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
        batchnorm: match args.batchnorm {
            BatchNormArg::Train => BatchNormMode::Train,
            BatchNormArg::Frozen => BatchNormMode::Frozen,
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
        SaveOptions::overwriting(args.force),
    )?;
    eprintln!("{}", summary.head_note.describe(SettingNames::Flags));
    for line in patch::trainability::patch_notes(&summary, options.batchnorm) {
        eprintln!("{line}");
    }
    for finding in patch::trainability::check(&patched) {
        if finding.is_warning() {
            eprintln!("warning: {}", finding.line());
        }
    }

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
            LossKind::La => format!(" (tau {})", c.la_tau),
            LossKind::Vs => format!(" (gamma {}, tau {})", c.vs_gamma, c.vs_tau),
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
