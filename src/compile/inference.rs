//! Recovering the deployable inference model from a training step and the
//! current state values: the forward graph with BatchNorm reading its running
//! statistics, Dropout off, the loss, backward and update removed, and the
//! trained values as initializers.

use crate::autodiff::batchnorm;
use crate::compile::state::PlannedState;
use crate::error::{Error, Result};
use crate::ldam::contract::{self, keys, PatchRecord, StateKind};
use crate::onnx::builder::{Emitter, NameSet};
use crate::onnx::types::{tensor_type, Dim, TensorType};
use crate::onnx::{metadata, ModelProto, TensorProto};
use crate::ops::shapes::ValueShapes;
use std::collections::{HashMap, HashSet};

/// The inference model of a compiled training step, whose state tensors take the
/// values in `state` (typically the latest `S.next` values; the step's
/// [`TrainStep::initial_values`](super::TrainStep::initial_values) before any
/// training). Every state tensor the deployed graph reads needs a value, but for
/// one that a step keeping its state in initializers still holds.
pub fn inference_model(
    step: &ModelProto,
    state: &HashMap<String, TensorProto>,
) -> Result<ModelProto> {
    let state_names: Vec<String> = contract::state_names(step).ok_or_else(|| {
        Error::invalid(format!(
            "not a compiled training step (no {} metadata)",
            keys::STATE
        ))
    })?;
    let outputs: Vec<String> = parse_json(step, keys::INFERENCE_OUTPUTS)?;
    let batchnorm: Vec<[String; 4]> = parse_json(step, keys::BATCHNORM)?;
    let running: HashMap<&str, &str> = batchnorm
        .iter()
        .flat_map(|[batch_mean, running_mean, batch_var, running_var]| {
            [
                (batch_mean.as_str(), running_mean.as_str()),
                (batch_var.as_str(), running_var.as_str()),
            ]
        })
        .collect();
    // A recovery that fails on a step broken on arrival (its nodes out of
    // order, a value read before it is defined) is the input's fault; the step
    // is checked only then, not on every evaluation of a training run.
    deployable(step.clone(), &state_names, state, &outputs, &running).map_err(|e| {
        match crate::ops::validate::check_model(step) {
            Err(input) => {
                Error::invalid(format!("the training step is not a valid graph: {input}"))
            }
            Ok(()) => e,
        }
    })
}

/// The inference model of a patched (not compiled) model whose planned state
/// ([`super::state::plan`]) takes the values in `state`: what a trainer that runs
/// the patched graph itself (libtorch) deploys, the same model [`inference_model`]
/// recovers from the compiled step. Momentum buffers are not part of it.
pub fn inference_model_of_patched(
    patched: &ModelProto,
    plan: &[PlannedState],
    state: &HashMap<String, TensorProto>,
) -> Result<ModelProto> {
    let deployed: Vec<String> = plan
        .iter()
        .filter(|s| s.kind != StateKind::Momentum)
        .map(|s| s.name.clone())
        .collect();
    let state: HashMap<String, TensorProto> = state
        .iter()
        .filter(|(name, _)| deployed.contains(name))
        .map(|(name, tensor)| (name.clone(), tensor.clone()))
        .collect();
    let record = PatchRecord::read(patched)?
        .ok_or_else(|| Error::invalid("the model is not patched (no ldam_onnx metadata)"))?;
    let outputs: Vec<String> = patched
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("the model has no graph"))?
        .output
        .iter()
        .map(|o| o.name().to_string())
        .filter(|o| *o != record.loss_output)
        .collect();
    // BatchNorm in the form the compiled step has, so that both deploy alike: a
    // node with running statistics reads them again, one whose statistics the
    // graph computes (weight standardisation) keeps its batch statistics.
    let mut model = patched.clone();
    let opset = crate::onnx::default_opset(&model)
        .ok_or_else(|| Error::invalid("the model imports no default-domain opset"))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;
    let mut shapes = ValueShapes::infer(graph, opset);
    let mut b = Emitter::new(NameSet::of_graph(graph), contract::STEP_PREFIX, opset);
    let statistics = batchnorm::explicit_statistics(graph, &mut b, &mut shapes)?;
    let running: HashMap<&str, &str> = statistics
        .iter()
        .flat_map(|s| {
            [
                (s.batch_mean.as_str(), s.running_mean.as_str()),
                (s.batch_var.as_str(), s.running_var.as_str()),
            ]
        })
        .collect();
    deployable(model, &deployed, &state, &outputs, &running)
}

/// `model` (a step or a patched model) as a deployable model: the state values
/// as initializers, BatchNorm reading its running statistics (`running` maps the
/// step's explicit batch statistics to them), Dropout off, only what `outputs`
/// need kept.
fn deployable(
    mut model: ModelProto,
    state_names: &[String],
    state: &HashMap<String, TensorProto>,
    outputs: &[String],
    running: &HashMap<&str, &str>,
) -> Result<ModelProto> {
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;

    if let Some(name) = state.keys().find(|name| !state_names.contains(name)) {
        return Err(Error::config(format!(
            "'{name}' is not a state tensor of this training step"
        )));
    }
    // In the state's order, so that equal states give equal files.
    for (name, tensor) in state_names
        .iter()
        .filter_map(|name| state.get(name).map(|tensor| (name, tensor)))
    {
        // The slot a value fills: an initializer (a patched model, or a step
        // that keeps its state inside), or else the step's plain state input.
        let expected = match graph.initializer.iter().find(|t| t.name() == name) {
            Some(slot) => Some(TensorType {
                elem_type: slot.data_type(),
                shape: Some(slot.dims.iter().map(|&d| Dim::Fixed(d)).collect()),
            }),
            None => graph
                .input
                .iter()
                .find(|i| i.name() == name)
                .and_then(tensor_type),
        }
        .ok_or_else(|| Error::invalid(format!("state tensor '{name}' has no slot in the graph")))?;
        let given = TensorType {
            elem_type: tensor.data_type(),
            shape: Some(tensor.dims.iter().map(|&d| Dim::Fixed(d)).collect()),
        };
        if given != expected {
            return Err(Error::config(format!(
                "state tensor '{name}': expected {}, got {}",
                expected.describe(),
                given.describe()
            )));
        }
        let value = TensorProto {
            name: Some(name.clone()),
            ..tensor.clone()
        };
        match graph.initializer.iter_mut().find(|t| t.name() == name) {
            Some(slot) => *slot = value,
            None => graph.initializer.push(value),
        }
    }

    // BatchNorm normalises with its running statistics again; Dropout is off.
    for node in &mut graph.node {
        match node.op_type() {
            "BatchNormalization" => {
                for input in node.input.iter_mut().skip(3) {
                    if let Some(stat) = running.get(input.as_str()) {
                        *input = stat.to_string();
                    }
                }
            }
            "Dropout" => node.input.truncate(2),
            _ => {}
        }
    }

    // Outputs as exported; inputs: the data inputs only.
    let declared: HashMap<String, crate::onnx::ValueInfoProto> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .map(|v| (v.name().to_string(), v.clone()))
        .collect();
    graph.output = outputs
        .iter()
        .map(|name| {
            declared.get(name).cloned().unwrap_or_else(|| {
                crate::onnx::types::value_info_any_shape(name, crate::onnx::tensor::FLOAT)
            })
        })
        .collect();
    prune_to_outputs(graph);
    let read: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph
        .initializer
        .retain(|t| read.contains(t.name()) || outputs.iter().any(|o| o == t.name()));
    let initializers: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    graph
        .input
        .retain(|i| !initializers.contains(i.name()) && read.contains(i.name()));
    if let Some(missing) = graph
        .input
        .iter()
        .find(|i| state_names.iter().any(|s| s == i.name()))
    {
        return Err(Error::config(format!(
            "no value given for state tensor '{}', which the deployable model reads",
            missing.name()
        )));
    }
    let defined: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    graph.value_info.retain(|v| defined.contains(v.name()));
    model
        .metadata_props
        .retain(|p| !p.key().starts_with(keys::PREFIX));
    crate::ops::validate::check_model(&model).map_err(|e| {
        Error::invalid(format!(
            "the recovered inference model failed its structural check (a bug): {e}"
        ))
    })?;
    Ok(model)
}

fn parse_json<T: serde::de::DeserializeOwned>(step: &ModelProto, key: &str) -> Result<T> {
    let text = metadata(step, key)
        .ok_or_else(|| Error::invalid(format!("the training step lacks metadata '{key}'")))?;
    serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("metadata '{key}' is not valid: {e}")))
}

/// Keeps only the nodes the graph's outputs depend on.
fn prune_to_outputs(graph: &mut crate::onnx::GraphProto) {
    crate::onnx::retain_nodes_reaching_outputs(graph);
    // BatchNormalization's unused training outputs are dropped.
    for node in &mut graph.node {
        if node.op_type() == "BatchNormalization" {
            node.output.truncate(1);
            node.attribute.retain(|a| a.name() != "training_mode");
        }
    }
}
