//! Checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! A checkpoint is an ONNX state file (a graph with no nodes whose initializers,
//! also its outputs, are the state tensors: weights, momentum buffers, BatchNorm running statistics),
//! so any ONNX tool can read the weights; the run's position and settings are
//! JSON in its `metadata_props`. It is replaced atomically, so a process killed
//! at any moment leaves the previous checkpoint or the new one, never a mix.
//! A checkpoint whose tensors pass the inline limit keeps them in a data file
//! beside it, `checkpoint.onnx.N.data`, a new N for every checkpoint.

use crate::error::{Error, Result};
use crate::ldam::contract;
use crate::onnx::io::{self, SaveOptions};
use crate::onnx::{ModelProto, TensorProto};
use crate::train::report::EpochRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The file name inside a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.onnx";
const PROGRESS_KEY: &str = crate::ldam::contract::keys::CHECKPOINT;

/// The name of the checkpoint's data file of generation `n`.
fn data_file_name(n: u64) -> String {
    format!("{CHECKPOINT_FILE}.{n}.data")
}

/// The checkpoint data files in `run_dir`, with their generations.
fn data_files(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(run_dir, e)),
    };
    let prefix = format!("{CHECKPOINT_FILE}.");
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(run_dir, e))?;
        let name = entry.file_name();
        let generation = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix)?.strip_suffix(".data"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(generation) = generation {
            files.push((generation, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

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

    /// Replaces `run_dir/checkpoint.onnx` atomically, with its tensors in a
    /// data file when they pass this process's inline limit
    /// ([`io::default_inline_limit`]).
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
        self.save_with_limit(run_dir, io::default_inline_limit())
    }

    /// [`Checkpoint::save`], the tensors of at least [`io::EXTERNAL_MIN_BYTES`]
    /// in `checkpoint.onnx.N.data` when the state holds more than `inline_limit`
    /// bytes. N is one more than any data file in the folder: the data is
    /// renamed into place before the checkpoint that names it, so a process
    /// killed at any moment leaves the old checkpoint with its own data or the
    /// new one with its own. The older data files are removed afterwards.
    pub fn save_with_limit(&self, run_dir: &Path, inline_limit: u64) -> Result<PathBuf> {
        let path = Checkpoint::path(run_dir);
        let older = data_files(run_dir)?;
        let generation = older.iter().map(|(n, _)| n + 1).max().unwrap_or(1);
        let options = SaveOptions {
            overwrite: true,
            inline_limit,
        };
        io::save_with_data_file(
            &self.to_model()?,
            None,
            &path,
            &data_file_name(generation),
            options,
        )?;
        for (_, stale) in older {
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&stale, e));
                }
                _ => {}
            }
        }
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
        let model = io::load_with_data(&path)?.model;
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
