//! Argument structs (clap derive) and the glue from arguments to library calls.

mod adjust;
mod compare;
mod compile;
mod counts_args;
mod data_args;
mod deploy;
mod export_data;
mod inspect;
mod message;
mod patch;
mod serve_web;
mod sgd;
mod train;

pub use message::message;

use anyhow::Result;
use clap::{Parser, Subcommand};
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
    Inspect(inspect::InspectArgs),
    /// Append the LDAM-DRW loss subgraph to a classifier
    Patch(patch::PatchArgs),
    /// Compile a patched model into one SGD training step as a plain ONNX graph
    Compile(compile::CompileArgs),
    /// Train a patched model on real data; writes checkpoints, report, plots and model.onnx
    Train(train::TrainArgs),
    /// Test-set accuracy of any ONNX classifier, per class and by shot group
    Eval(train::EvalArgs),
    /// Compare runs: top-1 error and many/medium/few table, per-class accuracy plot
    Compare(compare::CompareArgs),
    /// Post-hoc logit adjustment and tau-normalisation of a trained classifier
    Adjust(adjust::AdjustArgs),
    /// Write a long-tailed train/test subset as one binary for the browser trainer (web/)
    ExportData(export_data::ExportDataArgs),
    /// Serve a folder (the browser trainer, web/) over HTTP on 127.0.0.1
    ServeWeb(serve_web::ServeWebArgs),
    /// The deployable model of a training step with a trained state file (the browser trainer's download)
    Deploy(deploy::DeployArgs),
}

/// Environment variable: inline tensor bytes past which every model file the
/// command writes keeps its weights in a data file beside it, and past which an
/// in-memory model reaches ONNX Runtime through such files [default: 1 GiB].
pub const INLINE_LIMIT_ENV: &str = "LDAM_INLINE_LIMIT";

fn apply_inline_limit() -> Result<()> {
    let Some(value) = std::env::var_os(INLINE_LIMIT_ENV) else {
        return Ok(());
    };
    let bytes = value
        .to_str()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{INLINE_LIMIT_ENV}={}: not a number of bytes",
                value.to_string_lossy()
            )
        })?;
    ldam_onnx::onnx::io::set_default_inline_limit(bytes);
    Ok(())
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    apply_inline_limit()?;
    let done = |()| ExitCode::SUCCESS;
    match cli.command {
        Command::Inspect(args) => inspect::run_inspect(args).map(done),
        Command::Patch(args) => patch::run_patch(args).map(done),
        Command::Compile(args) => compile::run_compile(args).map(done),
        Command::Train(args) => train::run_train(args),
        Command::Eval(args) => train::run_eval(args),
        Command::Compare(args) => compare::run_compare(args).map(done),
        Command::Adjust(args) => adjust::run_adjust(args).map(done),
        Command::ExportData(args) => export_data::run_export_data(args).map(done),
        Command::ServeWeb(args) => serve_web::run_serve_web(args).map(done),
        Command::Deploy(args) => deploy::run_deploy(args).map(done),
    }
}
