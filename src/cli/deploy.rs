//! `ldam-onnx deploy`: a compiled step and a trained state file (the companion
//! format: the browser trainer's download) to the deployable model.

use anyhow::{Context, Result};
use clap::Args;
use ldam_onnx::compile::files::state_tensors;
use ldam_onnx::contract::{self, keys};
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::onnx::{metadata, TensorProto};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "Example: ldam-onnx deploy mlp.train.onnx --state mlp.trained.state.onnx -o mlp.onnx\n\
The state file holds one initializer per state tensor, as the step's own state file does; \
its metadata's input normalisation and training class counts (which the browser trainer \
records) are kept in the deployed model, as `ldam-onnx train` keeps them."
)]
pub struct DeployArgs {
    /// The training step (`ldam-onnx compile`)
    step: PathBuf,
    /// The trained state, in the format of the step's state file
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// Where to write the deployable model
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Replace the output file if it exists
    #[arg(long)]
    force: bool,
}

pub fn run_deploy(args: DeployArgs) -> Result<()> {
    let step = io::load_with_data(&args.step)?;
    // The state's weights stay in its data file, if it has one: saving copies
    // them from there into the output's, without holding them in memory.
    let state = io::load(&args.state)?;
    let values: HashMap<String, TensorProto> = state_tensors(&state.model)
        .map(|t| (t.name().to_string(), t.clone()))
        .collect();
    let mut model = ldam_onnx::compile::inference_model(&step.model, &values)
        .with_context(|| format!("{} with {}", args.step.display(), args.state.display()))?;
    for key in [keys::INPUT_NORMALIZATION, keys::TRAIN_CLASS_COUNTS] {
        if let Some(value) = metadata(&state.model, key) {
            contract::set(&mut model, key, value.to_string());
        }
    }
    io::save(
        &model,
        Some(&state),
        &args.output,
        SaveOptions::overwriting(args.force),
    )?;
    println!(
        "deployed {} with {} -> {}",
        args.step.display(),
        args.state.display(),
        args.output.display()
    );
    Ok(())
}
