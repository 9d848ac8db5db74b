//! Checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! A checkpoint is an ONNX state file (a graph with no nodes whose initializers,
//! also its outputs, are the state tensors: weights, momentum buffers, BatchNorm running statistics),
//! so any ONNX tool can read the weights; the run's position and settings are
//! JSON in its `metadata_props`. It is replaced atomically, so a process killed
//! at any moment leaves the previous checkpoint or the new one, never a mix.

use crate::error::{Error, Result};
use crate::ldam::contract;
use crate::onnx::{ModelProto, TensorProto};
use crate::train::report::{write_atomically, EpochRecord};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file name inside a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.onnx";
const PROGRESS_KEY: &str = crate::ldam::contract::keys::CHECKPOINT;

/// Where a run stands, apart from the state tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The epoch in progress (0-based); equals the number of epochs when done.
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// Running sums of `epoch` so far, so that its record is exact after a resume.
    pub partial: EpochTotals,
    /// The records of the finished epochs.
    pub records: Vec<EpochRecord>,
    /// The run's settings (what resuming continues with).
    pub settings: serde_json::Value,
}

/// Sums over the trained batches of one epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochTotals {
    /// Sum over batches of (mean batch loss x batch size).
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    /// Seconds spent training in this epoch.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub progress: Progress,
    pub state: HashMap<String, TensorProto>,
}

impl Checkpoint {
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(CHECKPOINT_FILE)
    }

    /// The checkpoint as a state file ([`contract::state_model`]); tensors
    /// sorted by name so that equal checkpoints are equal files.
    fn to_model(&self) -> Result<ModelProto> {
        let mut names: Vec<&String> = self.state.keys().collect();
        names.sort();
        let progress = serde_json::to_string(&self.progress)
            .map_err(|e| Error::invalid(format!("checkpoint progress: {e}")))?;
        let mut model = contract::state_model(
            "checkpoint",
            names.iter().map(|n| self.state[*n].clone()).collect(),
        );
        contract::set(&mut model, PROGRESS_KEY, progress);
        Ok(model)
    }

    /// Replaces `run_dir/checkpoint.onnx` atomically.
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
        let path = Checkpoint::path(run_dir);
        let bytes = crate::onnx::io::to_bytes(&self.to_model()?);
        write_atomically(&path, |file| file.write_all(&bytes))?;
        Ok(path)
    }

    /// Reads `run_dir/checkpoint.onnx`.
    pub fn load(run_dir: &Path) -> Result<Checkpoint> {
        let path = Checkpoint::path(run_dir);
        if !path.exists() {
            return Err(Error::NoCheckpoint {
                path,
                run_dir: run_dir.to_path_buf(),
            });
        }
        let model = crate::onnx::io::load_with_data(&path)?.model;
        let bad = |why: String| Error::NotOnnx {
            path: path.clone(),
            reason: format!("not an ldam-onnx checkpoint: {why}"),
        };
        let json = model
            .metadata_props
            .iter()
            .find(|e| e.key() == PROGRESS_KEY)
            .map(|e| e.value().to_string())
            .ok_or_else(|| bad(format!("no '{PROGRESS_KEY}' metadata")))?;
        let progress: Progress = serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
        let state = model
            .graph
            .map(|g| g.initializer)
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.name().to_string(), t))
            .collect();
        Ok(Checkpoint { progress, state })
    }
}
