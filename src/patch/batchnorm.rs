//! BatchNormalization as PyTorch trains it.
//!
//! Exports rarely keep BatchNorm in training mode: the dynamo exporter and the
//! legacy exporter in eval mode write inference-mode nodes (or fold them into the
//! convolutions). An inference-mode node normalises with its running statistics,
//! which the step never updates: training through it is fine-tuning with frozen
//! statistics. `model.train()` instead normalises with the batch's statistics and
//! moves the running ones, which is what `BatchNormMode::Train` restores.

use crate::onnx::{GraphProto, NodeProto};
use crate::ops::nn::batchnorm::is_training;

/// What `patch` does with inference-mode BatchNormalization nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchNormMode {
    /// Turn them into training-mode nodes: batch statistics, running statistics
    /// updated (PyTorch's `model.train()`).
    #[default]
    Train,
    /// Keep them as exported: running statistics fixed (fine-tuning with frozen
    /// BatchNorm, PyTorch's `bn.eval()`).
    Frozen,
}

keyword_enum!(BatchNormMode { Train => "train", Frozen => "frozen" });

/// The normalisation layers of a graph, by how they behave in training.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Normalisation {
    /// BatchNormalization normalising with batch statistics.
    pub training: usize,
    /// BatchNormalization normalising with running statistics.
    pub inference: usize,
    /// LayerNormalization, GroupNormalization, InstanceNormalization: per-example
    /// statistics, the same in training and inference.
    pub per_example: usize,
    /// Conv and ConvTranspose nodes.
    pub convolutions: usize,
}

impl Normalisation {
    pub fn of(graph: &GraphProto, opset: i64) -> Normalisation {
        let mut survey = Normalisation::default();
        for node in &graph.node {
            match node.op_type() {
                "BatchNormalization" if is_training(node, opset) => survey.training += 1,
                "BatchNormalization" => survey.inference += 1,
                "LayerNormalization" | "GroupNormalization" | "InstanceNormalization" => {
                    survey.per_example += 1
                }
                "Conv" | "ConvTranspose" => survey.convolutions += 1,
                _ => {}
            }
        }
        survey
    }

    /// A convolutional network with no normalisation left: BatchNorm was almost
    /// certainly folded into the convolutions at export.
    pub fn looks_folded(&self) -> bool {
        self.convolutions > 0 && self.training + self.inference + self.per_example == 0
    }
}

/// The export call that keeps BatchNorm trainable, for messages.
pub const TRAINABLE_EXPORT: &str = "export with python/ldam_onnx_export.py's \
     export_for_training(model, example, path), or torch.onnx.export(model, (x,), path, \
     dynamo=False, training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, \
     dynamic_axes=...)";

/// Turns every inference-mode BatchNormalization of `graph` whose running
/// statistics are initializers into a training-mode one and returns the nodes'
/// labels. From opset 14 the node's
/// `training_mode` attribute says so; before it, the presence of the running
/// statistics outputs, which both forms get, under fresh names (`fresh`).
pub fn to_training_mode(
    graph: &mut GraphProto,
    opset: i64,
    fresh: &mut dyn FnMut(&str) -> String,
) -> Vec<String> {
    let initializers: std::collections::HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let mut converted = Vec::new();
    for node in graph.node.iter_mut() {
        if node.op_type() != "BatchNormalization" || is_training(node, opset) {
            continue;
        }
        // Statistics computed in the graph (weight standardisation written as
        // a batch norm) are not a layer's running statistics: left as they are.
        let running = [3, 4]
            .iter()
            .all(|&i| node.input.get(i).is_some_and(|n| initializers.contains(n)));
        if !running {
            continue;
        }
        converted.push(crate::onnx::node_label(node));
        if opset >= 14 {
            set_training_mode(node);
        }
        // Both forms list the updated running statistics as outputs (ONNX
        // Runtime insists on them in training mode); nothing reads them.
        node.output.truncate(1);
        let base = node.output.first().cloned().unwrap_or_default();
        node.output.push(fresh(&format!("{base}.running_mean")));
        node.output.push(fresh(&format!("{base}.running_var")));
    }
    converted
}

fn set_training_mode(node: &mut NodeProto) {
    node.attribute.retain(|a| a.name() != "training_mode");
    node.attribute
        .push(crate::onnx::builder::attr_int("training_mode", 1));
}
