//! A training step on disk: the step file and its companion state file, which
//! holds the state's initial values and which the step names, relative to
//! itself, in `metadata_props["ldam_onnx.train.initial_state"]`.

use super::TrainStep;
use crate::error::{Error, Result};
use crate::ldam::contract::{self, keys};
use crate::onnx::io::{self, LoadedModel, SaveOptions};
use crate::onnx::{metadata, ModelProto, TensorProto};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

impl TrainStep {
    /// The state's initial values, by name.
    pub fn initial_values(&self) -> HashMap<String, TensorProto> {
        state_tensors(&self.initial_state)
            .map(|t| (t.name().to_string(), t.clone()))
            .collect()
    }

    /// Writes the step to `path` and its companion state file beside it
    /// ([`contract::companion_path`]), and returns the companion's path.
    /// `source` is the model the tensors were loaded with (its external data is
    /// copied). Both paths are checked before either file is written, so a
    /// refused write leaves nothing behind.
    pub fn save(
        &self,
        path: &Path,
        source: Option<&LoadedModel>,
        options: SaveOptions,
    ) -> Result<PathBuf> {
        let companion = contract::companion_path(path);
        if !options.overwrite {
            for file in [path, companion.as_path()] {
                if file.exists() {
                    return Err(Error::OutputExists {
                        path: file.to_path_buf(),
                    });
                }
            }
        }
        let companion_name = companion
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::config(format!("{}: output path has no file name", path.display()))
            })?;
        let mut step = self.model.clone();
        contract::set(&mut step, keys::INITIAL_STATE, companion_name);
        // The companion first: a step file on disk always has its state beside it.
        io::save(&self.initial_state, source, &companion, options)?;
        io::save(&step, source, path, options)?;
        Ok(companion)
    }
}

/// The tensors of a state file, in its order.
pub fn state_tensors(model: &ModelProto) -> impl Iterator<Item = &TensorProto> {
    model.graph.iter().flat_map(|g| g.initializer.iter())
}

/// The initial values of a step file's state, by name: the initializers of the
/// companion file the step names, or, in a step that names none, the step's own
/// initializers of its state tensors (a layout runtimes other than native ONNX
/// Runtime cannot feed, still read).
pub fn initial_state(step: &LoadedModel) -> Result<HashMap<String, TensorProto>> {
    let names = contract::state_names(&step.model).ok_or_else(|| {
        Error::invalid(format!(
            "{}: not a compiled training step (no {} metadata)",
            step.path.display(),
            keys::STATE
        ))
    })?;
    let companion;
    let holder = match metadata(&step.model, keys::INITIAL_STATE) {
        Some(relative) => {
            companion = io::load_with_data(&step.dir.join(relative))?;
            &companion.model
        }
        None => &step.model,
    };
    let values: HashMap<String, TensorProto> = state_tensors(holder)
        .filter(|t| names.iter().any(|n| n == t.name()))
        .map(|t| (t.name().to_string(), t.clone()))
        .collect();
    if let Some(missing) = names.iter().find(|n| !values.contains_key(n.as_str())) {
        return Err(Error::invalid(format!(
            "{}: no initial value for state tensor '{missing}'",
            step.path.display()
        )));
    }
    Ok(values)
}
