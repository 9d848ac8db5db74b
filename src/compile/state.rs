//! The state a training step carries from step to step, named and ordered once
//! for every trainer: the ONNX step `compile` emits and the libtorch trainer,
//! which names its state the same way without compiling a step.

use crate::autodiff;
use crate::compile::options::{trainable_parameters, CompileOptions};
use crate::error::{Error, Result};
use crate::ldam::contract::{self, PatchRecord, StateKind};
use crate::onnx::{default_opset, GraphProto, ModelProto};
use crate::ops::nn::batchnorm;
use crate::ops::shapes::ValueShapes;

/// One state tensor: its name and kind, in the step's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedState {
    pub name: String,
    pub kind: StateKind,
}

/// The state of a training step of the patched `model`: every trainable
/// parameter the loss depends on, each followed by its momentum buffer
/// `NAME.momentum`, then the running mean and variance of every training-mode
/// BatchNormalization, in graph order.
pub fn plan(model: &ModelProto, options: &CompileOptions) -> Result<Vec<PlannedState>> {
    let record = PatchRecord::read(model)?.ok_or_else(|| {
        Error::compile(
            "the model is not patched (no ldam_onnx metadata); run `ldam-onnx patch` first",
        )
    })?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::compile("the model has no graph"))?;
    let opset = default_opset(model)
        .ok_or_else(|| Error::compile("the model imports no default-domain opset"))?;
    plan_graph(
        graph,
        &ValueShapes::infer(graph, opset),
        &record,
        options,
        opset,
    )
}

/// [`plan`] of a patched graph whose types `shapes` already holds (compile's).
pub(crate) fn plan_graph(
    graph: &GraphProto,
    shapes: &ValueShapes,
    record: &PatchRecord,
    options: &CompileOptions,
    opset: i64,
) -> Result<Vec<PlannedState>> {
    let trainable = trainable_parameters(graph, options)?;
    let reaching = autodiff::reaching_loss(graph, shapes, &record.loss_output, &trainable);
    let mut state = Vec::new();
    for name in trainable.into_iter().filter(|n| reaching.contains(n)) {
        let momentum = contract::momentum_name(&name);
        state.push(PlannedState {
            name,
            kind: StateKind::Parameter,
        });
        state.push(PlannedState {
            name: momentum,
            kind: StateKind::Momentum,
        });
    }
    let produced = batchnorm::produced_values(graph);
    for node in &graph.node {
        if node.op_type() == "BatchNormalization"
            && batchnorm::is_training(node, opset)
            && batchnorm::keeps_running_statistics(node, &produced)
        {
            for (input, kind) in [(3, StateKind::RunningMean), (4, StateKind::RunningVar)] {
                let name = node
                    .input
                    .get(input)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "{} has no running statistics input {input}",
                            crate::onnx::node_label(node)
                        ))
                    })?;
                state.push(PlannedState {
                    name: name.clone(),
                    kind,
                });
            }
        }
    }
    Ok(state)
}
