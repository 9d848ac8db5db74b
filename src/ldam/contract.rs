//! The graph contract: every name and metadata entry that one stage writes into a
//! model and a later stage (or a user) reads back. `patch` records its loss
//! configuration, `compile` its state list, `train` the input normalisation and
//! class counts of the model it exports and the position of its checkpoints; they
//! all read and write them through this module, which sits just above `onnx` so
//! that every layer can use it.
//!
//! Metadata values that are lists are JSON arrays of strings. Earlier versions
//! wrote the state lists comma-joined; [`read_list`] reads both, so their training
//! steps and checkpoints still load.

use super::{LossConfig, LossKind};
use crate::error::{Error, Result};
use crate::onnx::types::{tensor_type, Dim};
use crate::onnx::{
    metadata, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    ValueInfoProto,
};
use std::path::{Path, PathBuf};

/// The default-domain opset the loss needs (SoftmaxCrossEntropyLoss, opset 13).
pub const MIN_OPSET: i64 = 13;

/// Prefix of every node and intermediate value `patch` emits (`ldam/...`).
pub const PATCH_PREFIX: &str = "ldam/";
/// Prefix of the initializers holding the loss constants (`ldam.margins`, ...).
pub const CONSTANT_PREFIX: &str = "ldam.";
/// Prefix of every node and intermediate value `compile` emits (`train/...`).
pub const STEP_PREFIX: &str = "train/";

/// Whether `name` is one of the tool's own tensors (loss constants, values of
/// the loss subgraph or of the training step) rather than the model's.
pub fn is_tool_tensor(name: &str) -> bool {
    [CONSTANT_PREFIX, PATCH_PREFIX, STEP_PREFIX]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Name of the training step's learning-rate input (float scalar).
pub const LR_INPUT: &str = "lr";

/// The momentum buffer of `parameter` in a training step's state.
pub fn momentum_name(parameter: &str) -> String {
    format!("{parameter}.momentum")
}

/// The step output holding the value of state tensor `state` after the step.
pub fn next_name(state: &str) -> String {
    format!("{state}.next")
}

/// Keys of `metadata_props`, all starting with [`keys::PREFIX`].
pub mod keys {
    /// The prefix shared by every key the tool writes.
    pub const PREFIX: &str = "ldam_onnx.";

    // Written by `patch` (see [`super::PatchRecord`]).
    pub const VERSION: &str = "ldam_onnx.version";
    /// Comma-separated training examples per class.
    pub const CLASS_COUNTS: &str = "ldam_onnx.class_counts";
    pub const LOSS: &str = "ldam_onnx.loss";
    pub const MAX_M: &str = "ldam_onnx.max_m";
    pub const SCALE: &str = "ldam_onnx.scale";
    pub const GAMMA: &str = "ldam_onnx.gamma";
    pub const REWEIGHT: &str = "ldam_onnx.reweight";
    pub const DRW_EPOCH: &str = "ldam_onnx.drw_epoch";
    pub const BETA: &str = "ldam_onnx.beta";
    /// Recorded for loss `la` only.
    pub const LA_TAU: &str = "ldam_onnx.la_tau";
    /// Recorded for loss `vs` only.
    pub const VS_GAMMA: &str = "ldam_onnx.vs_gamma";
    pub const VS_TAU: &str = "ldam_onnx.vs_tau";
    pub const LOGITS: &str = "ldam_onnx.logits";
    pub const HEAD: &str = "ldam_onnx.head";
    pub const LABELS_INPUT: &str = "ldam_onnx.labels_input";
    pub const EPOCH_INPUT: &str = "ldam_onnx.epoch_input";
    pub const LOSS_OUTPUT: &str = "ldam_onnx.loss_output";
    pub const LOGITS_OUTPUT: &str = "ldam_onnx.logits_output";
    /// `train` or `frozen`: what `patch` did with inference-mode BatchNorm.
    pub const BATCHNORM_MODE: &str = "ldam_onnx.batchnorm";

    // Written by `compile`.
    /// JSON list of the state tensors, in the order of the step's `S.next` outputs.
    pub const STATE: &str = "ldam_onnx.train.state";
    /// JSON list of the state tensors' kinds ([`super::StateKind`]), in the same order.
    pub const STATE_KINDS: &str = "ldam_onnx.train.state_kinds";
    pub const LR_INPUT: &str = "ldam_onnx.train.lr_input";
    pub const OPTIMIZER: &str = "ldam_onnx.train.optimizer";
    pub const MOMENTUM: &str = "ldam_onnx.train.momentum";
    pub const WEIGHT_DECAY: &str = "ldam_onnx.train.weight_decay";
    /// Sharpness-aware minimisation's radius, when the step uses it.
    pub const SAM_RHO: &str = "ldam_onnx.train.sam_rho";
    /// Comma-separated names of the initializers kept fixed.
    pub const FROZEN: &str = "ldam_onnx.train.frozen";
    /// JSON list of the exported outputs an inference model returns.
    pub const INFERENCE_OUTPUTS: &str = "ldam_onnx.train.inference_outputs";
    /// JSON list of `[batch_mean, running_mean, batch_var, running_var]` per BatchNorm.
    pub const BATCHNORM: &str = "ldam_onnx.train.batchnorm";
    /// The companion file holding the state's initial values, relative to the
    /// step file; absent when the step's own initializers hold them.
    pub const INITIAL_STATE: &str = "ldam_onnx.train.initial_state";

    // Written by `train`.
    /// The input normalisation (`MEANS/STDS`) an exported model was trained with.
    pub const INPUT_NORMALIZATION: &str = "ldam_onnx.input_normalization";
    /// Comma-separated training class counts of an exported model, which decide
    /// the many/medium/few groups of its report.
    pub const TRAIN_CLASS_COUNTS: &str = "ldam_onnx.train_class_counts";
    // Written by `adjust`.
    /// `tau` of the post-hoc logit adjustment applied to an exported model.
    pub const ADJUST_LOGIT_TAU: &str = "ldam_onnx.adjust.logit_tau";
    /// `p` of the tau-normalisation applied to an exported model's classifier.
    pub const ADJUST_TAU_NORM: &str = "ldam_onnx.adjust.tau_norm";

    /// JSON position and settings of a checkpoint.
    pub const CHECKPOINT: &str = "ldam_onnx.checkpoint";
}

/// One `metadata_props` entry.
pub fn entry(key: &str, value: impl Into<String>) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value.into()),
    }
}

/// Sets `key` to `value` in `model`, replacing an entry already there.
pub fn set(model: &mut ModelProto, key: &str, value: impl Into<String>) {
    model.metadata_props.retain(|e| e.key() != key);
    model.metadata_props.push(entry(key, value));
}

/// A list as a metadata value: a JSON array of strings.
pub fn list_value<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&items).expect("a list of strings serialises")
}

/// The list stored under `key`, `None` when the key is absent: a JSON array of
/// strings, or the comma-joined form of earlier versions (empty items dropped).
pub fn read_list(model: &ModelProto, key: &str) -> Option<Vec<String>> {
    let text = metadata(model, key)?;
    if let Ok(items) = serde_json::from_str::<Vec<String>>(text) {
        return Some(items);
    }
    Some(
        text.split(',')
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// A comma-separated list of class counts stored under metadata `key`.
pub fn parse_counts(text: &str, key: &str) -> Result<Vec<u64>> {
    text.split(',')
        .map(|n| n.trim().parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::invalid(format!("metadata '{key}' is not a list of counts")))
}

/// What `patch` records: the loss configuration and the contract's names.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRecord {
    pub config: LossConfig,
    pub logits: String,
    /// `cosine` or `keep`.
    pub head: String,
    pub labels_input: String,
    pub epoch_input: String,
    pub loss_output: String,
    pub logits_output: String,
}

/// Whether the model was written by `patch`.
pub fn is_patched(model: &ModelProto) -> bool {
    metadata(model, keys::LOSS).is_some()
}

impl PatchRecord {
    /// The metadata entries of the record, in a fixed order.
    pub fn entries(&self) -> Vec<StringStringEntryProto> {
        let c = &self.config;
        let counts = c
            .class_counts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // The LA and VS settings only with their loss, so the records of the
        // other losses read as before.
        let loss_settings = match c.loss {
            LossKind::La => vec![(keys::LA_TAU, c.la_tau.to_string())],
            LossKind::Vs => vec![
                (keys::VS_GAMMA, c.vs_gamma.to_string()),
                (keys::VS_TAU, c.vs_tau.to_string()),
            ],
            LossKind::Ldam | LossKind::Ce | LossKind::Focal => Vec::new(),
        };
        [
            (keys::VERSION, env!("CARGO_PKG_VERSION").to_string()),
            (keys::CLASS_COUNTS, counts),
            (keys::LOSS, c.loss.to_string()),
            (keys::MAX_M, c.max_m.to_string()),
            (keys::SCALE, c.scale.to_string()),
            (keys::GAMMA, c.gamma.to_string()),
            (keys::REWEIGHT, c.reweight.to_string()),
            (keys::DRW_EPOCH, c.drw_epoch.to_string()),
            (keys::BETA, c.beta.to_string()),
        ]
        .into_iter()
        .chain(loss_settings)
        .chain([
            (keys::LOGITS, self.logits.clone()),
            (keys::HEAD, self.head.clone()),
            (keys::LABELS_INPUT, self.labels_input.clone()),
            (keys::EPOCH_INPUT, self.epoch_input.clone()),
            (keys::LOSS_OUTPUT, self.loss_output.clone()),
            (keys::LOGITS_OUTPUT, self.logits_output.clone()),
        ])
        .map(|(key, value)| entry(key, value))
        .collect()
    }

    /// Reads the record back; `None` for a model that was never patched.
    pub fn read(model: &ModelProto) -> Result<Option<PatchRecord>> {
        if !is_patched(model) {
            return Ok(None);
        }
        let get = |key: &str| -> Result<&str> {
            metadata(model, key)
                .ok_or_else(|| Error::invalid(format!("patched model lacks metadata '{key}'")))
        };
        let number = |key: &str| -> Result<f64> {
            let v = get(key)?;
            v.parse()
                .map_err(|_| Error::invalid(format!("metadata '{key}' is not a number: '{v}'")))
        };
        let number_or = |key: &str, default: f64| -> Result<f64> {
            match metadata(model, key) {
                Some(_) => number(key),
                None => Ok(default),
            }
        };
        let class_counts = parse_counts(get(keys::CLASS_COUNTS)?, keys::CLASS_COUNTS)?;
        let config = LossConfig {
            class_counts,
            loss: get(keys::LOSS)?.parse()?,
            max_m: number(keys::MAX_M)?,
            scale: number(keys::SCALE)?,
            gamma: number(keys::GAMMA)?,
            reweight: get(keys::REWEIGHT)?.parse()?,
            drw_epoch: number(keys::DRW_EPOCH)? as i64,
            beta: number(keys::BETA)?,
            la_tau: number_or(keys::LA_TAU, crate::ldam::LA_TAU)?,
            vs_gamma: number_or(keys::VS_GAMMA, crate::ldam::VS_GAMMA)?,
            vs_tau: number_or(keys::VS_TAU, crate::ldam::VS_TAU)?,
        };
        Ok(Some(PatchRecord {
            config,
            logits: get(keys::LOGITS)?.to_string(),
            head: get(keys::HEAD)?.to_string(),
            labels_input: get(keys::LABELS_INPUT)?.to_string(),
            epoch_input: get(keys::EPOCH_INPUT)?.to_string(),
            loss_output: get(keys::LOSS_OUTPUT)?.to_string(),
            logits_output: get(keys::LOGITS_OUTPUT)?.to_string(),
        }))
    }

    /// The inputs the patch added (labels, epoch): not data.
    pub fn added_inputs(&self) -> [&str; 2] {
        [&self.labels_input, &self.epoch_input]
    }
}

/// The training class counts recorded in an exported or patched model, if any.
pub fn recorded_train_counts(model: &ModelProto) -> Result<Option<Vec<u64>>> {
    if let Some(text) = metadata(model, keys::TRAIN_CLASS_COUNTS) {
        return parse_counts(text, keys::TRAIN_CLASS_COUNTS).map(Some);
    }
    Ok(PatchRecord::read(model)?.map(|r| r.config.class_counts))
}

/// What a state tensor of the training step holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Parameter,
    Momentum,
    RunningMean,
    RunningVar,
}

keyword_enum!(StateKind {
    Parameter => "parameter",
    Momentum => "momentum",
    RunningMean => "running_mean",
    RunningVar => "running_var",
});

/// One tensor the training loop carries from step to step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTensor {
    pub name: String,
    /// The output holding the value after the step (`S.next`).
    pub next: String,
    pub kind: StateKind,
}

/// The metadata entries listing `state` (names, then kinds) in step order.
pub fn state_entries(state: &[StateTensor]) -> [StringStringEntryProto; 2] {
    let names: Vec<&str> = state.iter().map(|s| s.name.as_str()).collect();
    let kinds: Vec<&str> = state.iter().map(|s| s.kind.as_str()).collect();
    [
        entry(keys::STATE, list_value(&names)),
        entry(keys::STATE_KINDS, list_value(&kinds)),
    ]
}

/// The state tensors a training step lists, in step order; `None` when `model`
/// is not a training step.
pub fn state_names(model: &ModelProto) -> Option<Vec<String>> {
    read_list(model, keys::STATE)
}

/// The kinds of the state tensors, as written (`parameter`, `momentum`,
/// `running_mean`, `running_var`); `None` when not recorded.
pub fn state_kinds(model: &ModelProto) -> Option<Vec<String>> {
    read_list(model, keys::STATE_KINDS)
}

/// The element type `model` declares for its input `name`, float32 when unstated:
/// what a trainer casts its batches to (int64 for token ids).
pub fn input_elem_type(model: &ModelProto, name: &str) -> i32 {
    model
        .graph
        .as_ref()
        .and_then(|g| g.input.iter().find(|i| i.name() == name))
        .and_then(tensor_type)
        .map_or(crate::onnx::tensor::FLOAT, |t| t.elem_type)
}

/// The inputs of `graph` that carry data: those without an initializer (old
/// exporters list weights as inputs too) and not named in `skip`.
pub fn data_inputs<'g>(graph: &'g GraphProto, skip: &[&str]) -> Vec<&'g ValueInfoProto> {
    graph
        .input
        .iter()
        .filter(|i| !skip.contains(&i.name()))
        .filter(|i| !graph.initializer.iter().any(|t| t.name() == i.name()))
        .collect()
}

/// The model's one data input: its name and dims. Inputs with an initializer
/// and the names in `skip` (the patched contract's `labels` and `epoch`) are
/// not data.
pub fn data_input(model: &ModelProto, skip: &[&str]) -> Result<(String, Vec<Dim>)> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;
    let data = data_inputs(graph, skip);
    let [input] = data.as_slice() else {
        let names: Vec<&str> = data.iter().map(|i| i.name()).collect();
        return Err(Error::config(format!(
            "the model needs exactly one data input, it has {}: {}",
            names.len(),
            names.join(", ")
        )));
    };
    let dims = tensor_type(input).and_then(|t| t.shape).ok_or_else(|| {
        Error::config(format!(
            "the model's input '{}' has no stated shape, so data cannot be checked against it",
            input.name()
        ))
    })?;
    Ok((input.name().to_string(), dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_metadata(entries: &[(&str, &str)]) -> ModelProto {
        ModelProto {
            metadata_props: entries.iter().map(|(k, v)| entry(k, *v)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn state_lists_are_written_as_json_and_read_back() {
        let state = [
            StateTensor {
                name: "fc.weight".into(),
                next: next_name("fc.weight"),
                kind: StateKind::Parameter,
            },
            StateTensor {
                name: momentum_name("fc.weight"),
                next: next_name(&momentum_name("fc.weight")),
                kind: StateKind::Momentum,
            },
        ];
        let model = ModelProto {
            metadata_props: state_entries(&state).to_vec(),
            ..Default::default()
        };
        assert_eq!(
            metadata(&model, keys::STATE),
            Some(r#"["fc.weight","fc.weight.momentum"]"#)
        );
        assert_eq!(
            state_names(&model),
            Some(vec!["fc.weight".into(), "fc.weight.momentum".into()])
        );
        assert_eq!(
            state_kinds(&model),
            Some(vec!["parameter".into(), "momentum".into()])
        );
    }

    #[test]
    fn comma_joined_state_lists_of_earlier_versions_still_read() {
        let model = with_metadata(&[
            (keys::STATE, "a.weight,a.weight.momentum"),
            (keys::STATE_KINDS, "parameter,momentum"),
        ]);
        assert_eq!(
            state_names(&model),
            Some(vec!["a.weight".into(), "a.weight.momentum".into()])
        );
        assert_eq!(
            state_kinds(&model),
            Some(vec!["parameter".into(), "momentum".into()])
        );
        let empty = with_metadata(&[(keys::STATE, "")]);
        assert_eq!(state_names(&empty), Some(vec![]));
        assert_eq!(state_names(&ModelProto::default()), None);
    }

    #[test]
    fn tool_tensors_are_recognised_by_their_prefixes() {
        for name in ["ldam.margins", "ldam/onehot", "train/sgd/momentum"] {
            assert!(is_tool_tensor(name), "{name}");
        }
        for name in ["fc.weight", "ldam_margins", "training/x"] {
            assert!(!is_tool_tensor(name), "{name}");
        }
    }

    #[test]
    fn every_key_starts_with_the_prefix() {
        let all = [
            keys::VERSION,
            keys::CLASS_COUNTS,
            keys::LOSS,
            keys::MAX_M,
            keys::SCALE,
            keys::GAMMA,
            keys::REWEIGHT,
            keys::DRW_EPOCH,
            keys::BETA,
            keys::LA_TAU,
            keys::VS_GAMMA,
            keys::VS_TAU,
            keys::LOGITS,
            keys::HEAD,
            keys::LABELS_INPUT,
            keys::EPOCH_INPUT,
            keys::LOSS_OUTPUT,
            keys::LOGITS_OUTPUT,
            keys::STATE,
            keys::STATE_KINDS,
            keys::LR_INPUT,
            keys::OPTIMIZER,
            keys::MOMENTUM,
            keys::WEIGHT_DECAY,
            keys::FROZEN,
            keys::SAM_RHO,
            keys::INFERENCE_OUTPUTS,
            keys::BATCHNORM,
            keys::INPUT_NORMALIZATION,
            keys::TRAIN_CLASS_COUNTS,
            keys::CHECKPOINT,
            keys::ADJUST_LOGIT_TAU,
            keys::ADJUST_TAU_NORM,
        ];
        for key in all {
            assert!(key.starts_with(keys::PREFIX), "{key}");
        }
    }
}

/// A state file: an ONNX model with no inputs and no nodes whose outputs are
/// `tensors`, each held by an initializer of the same name, in the given order.
/// Any runtime returns the values by running it with an empty feed, and any
/// ONNX tool reads them as initializers; a training step's initial state and a
/// run's checkpoints are both written this way.
pub fn state_model(graph_name: &str, tensors: Vec<TensorProto>) -> ModelProto {
    let output = tensors
        .iter()
        .map(|t| {
            let dims: Vec<Dim> = t.dims.iter().map(|&d| Dim::Fixed(d)).collect();
            crate::onnx::types::value_info(t.name(), t.data_type(), &dims)
        })
        .collect();
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("ldam-onnx".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some(graph_name.into()),
            initializer: tensors,
            output,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Where the companion of the step file `step` goes: `NAME.onnx` becomes
/// `NAME.state.onnx` beside it.
pub fn companion_path(step: &Path) -> PathBuf {
    let name = step
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".onnx").unwrap_or(&name);
    step.with_file_name(format!("{stem}.state.onnx"))
}
