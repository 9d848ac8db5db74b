//! `compile`: one complete SGD step (forward, LDAM-DRW loss, backward, momentum
//! update, BatchNorm running statistics) as a plain ONNX graph.
//!
//! Contract of the train-step graph: inputs are the model's data inputs, `labels`,
//! `epoch`, `lr` (float scalar) and every state tensor S (trainable parameters,
//! their momentum buffers `S.momentum`, BatchNorm running statistics) as a plain
//! input; outputs are `loss`, the logits, and `S.next` for every state tensor, in
//! the order `metadata_props["ldam_onnx.train.state"]` lists them (a JSON list;
//! see [`crate::ldam::contract`]). The initial values of the state travel in a
//! companion state file ([`TrainStep::save`], [`files::initial_state`]).

pub mod files;
pub mod inference;
pub mod options;
pub mod sam;
pub mod sgd;
pub mod split;
pub mod state;

use options::check_options;
pub use options::CompileOptions;

pub use inference::inference_model;

use crate::autodiff::{self, batchnorm};
use crate::error::{Error, Result};
use crate::ldam::contract::{self, keys, PatchRecord};
use crate::onnx::builder::{Emitter, NameSet};
use crate::onnx::tensor::FLOAT;
use crate::onnx::types::{value_info, value_info_any_shape, Dim};
use crate::onnx::{default_opset, ModelProto, StringStringEntryProto, TensorProto};
use crate::ops::shapes::ValueShapes;
use std::collections::HashSet;

/// Metadata keys written by `compile` (see [`crate::ldam::contract::keys`]).
pub use crate::ldam::contract::keys::{
    BATCHNORM as BATCHNORM_KEY, INFERENCE_OUTPUTS as INFERENCE_OUTPUTS_KEY, STATE as STATE_KEY,
    STATE_KINDS as STATE_KINDS_KEY,
};
pub use crate::ldam::contract::{StateKind, StateTensor, LR_INPUT};

#[derive(Debug, Clone)]
pub struct TrainStep {
    /// The step graph: the state tensors are plain inputs.
    pub model: ModelProto,
    /// The companion state file holding the state's initial values
    /// ([`contract::state_model`]), in the step's state order.
    pub initial_state: ModelProto,
    pub state: Vec<StateTensor>,
    pub record: PatchRecord,
    pub forward_nodes: usize,
    pub backward_nodes: usize,
    pub update_nodes: usize,
    /// Each trained parameter with its gradient value in the step graph (what
    /// the SGD update reads), in state order: where [`split`] cuts the step.
    pub gradients: Vec<(String, String)>,
}

impl TrainStep {
    /// The step's one data input: the graph input that is not the labels, the
    /// epoch, `lr` or a state tensor. An error for a model with none or several.
    pub fn data_input(&self) -> Result<String> {
        let record = &self.record;
        let mut skip = vec![
            record.labels_input.as_str(),
            record.epoch_input.as_str(),
            contract::LR_INPUT,
        ];
        skip.extend(self.state.iter().map(|s| s.name.as_str()));
        Ok(contract::data_input(&self.model, &skip)?.0)
    }
}

/// Compiles a patched model into its training step.
pub fn compile(model: &ModelProto, options: &CompileOptions) -> Result<TrainStep> {
    let record = PatchRecord::read(model)?.ok_or_else(|| {
        Error::compile(
            "the model is not patched (no ldam_onnx metadata); run `ldam-onnx patch` first",
        )
    })?;
    if crate::onnx::metadata(model, keys::STATE).is_some() {
        return Err(Error::compile(
            "the model is already a compiled training step",
        ));
    }
    check_options(options)?;
    crate::ops::validate::check_input(model, "patched model")?;
    let opset = default_opset(model)
        .ok_or_else(|| Error::compile("the model imports no default-domain opset"))?;
    let mut model = model.clone();
    let mut graph = model
        .graph
        .take()
        .ok_or_else(|| Error::compile("the model has no graph"))?;
    // What the deployed model returns: every output of the patched model but the loss.
    let inference_outputs: Vec<crate::onnx::ValueInfoProto> = graph
        .output
        .iter()
        .filter(|o| o.name() != record.loss_output)
        .cloned()
        .collect();
    let forward_nodes = graph.node.len();
    let mut shapes = ValueShapes::infer(&graph, opset);
    let planned = state::plan_graph(&graph, &shapes, &record, options, opset)?;
    let mut b = Emitter::new(NameSet::of_graph(&graph), contract::STEP_PREFIX, opset);

    // Parameters are chosen on the exported graph, before BatchNorm's statistics
    // become explicit values: the planned state's (one naming for every trainer).
    let trainable: Vec<String> = planned
        .iter()
        .filter(|s| s.kind == StateKind::Parameter)
        .map(|s| s.name.clone())
        .collect();
    let statistics = batchnorm::explicit_statistics(&mut graph, &mut b, &mut shapes)?;
    let sam_forward = options.sam.map(|rho| (rho, graph.clone()));
    let backward =
        autodiff::differentiate(&graph, &mut shapes, &mut b, &record.loss_output, &trainable)?;
    let mut backward_nodes = backward.nodes.len() - graph.node.len();
    graph.node = backward.nodes;
    graph.initializer.extend(backward.initializers);
    // With SAM the update takes the gradient of a second pass at w + e.
    let update_gradients = match sam_forward {
        Some((rho, forward)) => {
            let pass = sam::second_pass(
                &forward,
                &shapes,
                &mut b,
                &record.loss_output,
                &trainable,
                &backward.gradients,
                rho,
            )?;
            backward_nodes += pass.nodes.len();
            graph.node.extend(pass.nodes);
            graph.initializer.extend(pass.initializers);
            pass.gradients
        }
        None => backward.gradients,
    };

    let mut state = Vec::new();
    let mut gradients = Vec::new();
    let mut new_initializers: Vec<TensorProto> = Vec::new();
    let mut optimizer = sgd::Sgd::new(&mut b, options.momentum, options.weight_decay);
    for name in &trainable {
        let initializer = graph
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .expect("trainable parameters are initializers");
        let gradient = update_gradients.get(name).ok_or_else(|| {
            Error::invalid(format!(
                "the loss depends on '{name}', but the gradient rules of the ops between them give it \
                 none (an op on that path treats it as a constant input); freezing it trains without it"
            ))
        })?;
        let update = optimizer.step(&mut b, initializer, gradient, LR_INPUT)?;
        gradients.push((name.clone(), gradient.clone()));
        new_initializers.push(update.momentum_initial);
        state.push(StateTensor {
            name: name.clone(),
            next: update.parameter_next,
            kind: StateKind::Parameter,
        });
        state.push(StateTensor {
            name: update.momentum,
            next: update.momentum_next,
            kind: StateKind::Momentum,
        });
    }
    for stats in &statistics {
        let (mean_next, var_next) = sgd::running_statistics(&mut b, stats)?;
        state.push(StateTensor {
            name: stats.running_mean.clone(),
            next: mean_next,
            kind: StateKind::RunningMean,
        });
        state.push(StateTensor {
            name: stats.running_var.clone(),
            next: var_next,
            kind: StateKind::RunningVar,
        });
    }
    let update_nodes = b.nodes.len();
    graph.node.append(&mut b.nodes);
    graph.initializer.extend(new_initializers);
    graph.initializer.append(&mut b.initializers);

    // Inputs: data inputs, labels, epoch, lr, then the state (initializer-backed).
    let initializer_names: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    graph
        .input
        .retain(|i| !initializer_names.contains(i.name()));
    if !b.names.claim(LR_INPUT) && graph.input.iter().any(|i| i.name() == LR_INPUT) {
        return Err(Error::compile(format!(
            "the model already has an input named '{LR_INPUT}'"
        )));
    }
    graph.input.push(value_info(LR_INPUT, FLOAT, &[]));
    // The state's values leave the step for its companion state file: plain
    // graph inputs are what every runtime lets a caller feed (an input backed
    // by an initializer is refused by onnxruntime-web and silently ignored by
    // onnxruntime-node).
    let mut initial_state = Vec::with_capacity(state.len());
    for s in &state {
        // Parameters are initializers by construction; running statistics are
        // whatever the BatchNormalization nodes name, which a model may wire to
        // another value.
        let position = graph
            .initializer
            .iter()
            .position(|t| t.name() == s.name)
            .ok_or_else(|| {
                Error::compile(format!(
                    "the {} '{}' is not an initializer: a training step keeps it as state, so it must be one",
                    s.kind.as_str(),
                    s.name
                ))
            })?;
        if graph.initializer[position].data_type() != FLOAT {
            return Err(Error::compile(format!(
                "the {} '{}' is {}: a training step keeps float32 state",
                s.kind.as_str(),
                s.name,
                crate::onnx::tensor::elem_type_name(graph.initializer[position].data_type())
            )));
        }
        let tensor = graph.initializer.remove(position);
        graph.input.push(value_info(
            &s.name,
            tensor.data_type(),
            &fixed_dims(&tensor),
        ));
        initial_state.push(tensor);
    }
    let logits_output = graph
        .output
        .iter()
        .find(|o| o.name() == record.logits_output)
        .cloned()
        .unwrap_or_else(|| value_info_any_shape(&record.logits_output, FLOAT));
    let loss_output = graph
        .output
        .iter()
        .find(|o| o.name() == record.loss_output)
        .cloned()
        .unwrap_or_else(|| value_info(&record.loss_output, FLOAT, &[]));
    graph.output = vec![loss_output, logits_output];
    for (s, tensor) in state.iter().zip(&initial_state) {
        graph
            .output
            .push(value_info(&s.next, tensor.data_type(), &fixed_dims(tensor)));
    }
    graph.value_info.extend(inference_outputs.iter().cloned());
    model.graph = Some(graph);
    model.metadata_props.extend(train_metadata(&state, options));
    let names: Vec<&str> = inference_outputs.iter().map(|o| o.name()).collect();
    let batchnorm: Vec<[&str; 4]> = statistics
        .iter()
        .map(|s| {
            [
                s.batch_mean.as_str(),
                s.running_mean.as_str(),
                s.batch_var.as_str(),
                s.running_var.as_str(),
            ]
        })
        .collect();
    for (key, value) in [
        (keys::INFERENCE_OUTPUTS, serde_json::to_string(&names)),
        (keys::BATCHNORM, serde_json::to_string(&batchnorm)),
    ] {
        let value = value.expect("lists of strings serialise");
        model.metadata_props.push(contract::entry(key, value));
    }
    crate::ops::validate::check_model(&model).map_err(|e| {
        Error::invalid(format!(
            "the training step failed its structural check (a bug): {e}"
        ))
    })?;
    Ok(TrainStep {
        model,
        initial_state: contract::state_model("initial_state", initial_state),
        state,
        record,
        forward_nodes,
        backward_nodes,
        update_nodes,
        gradients,
    })
}

fn train_metadata(state: &[StateTensor], options: &CompileOptions) -> Vec<StringStringEntryProto> {
    let mut entries = contract::state_entries(state).to_vec();
    entries.extend(
        [
            (keys::LR_INPUT, LR_INPUT.to_string()),
            (keys::OPTIMIZER, "sgd".to_string()),
            (keys::MOMENTUM, options.momentum.to_string()),
            (keys::WEIGHT_DECAY, options.weight_decay.to_string()),
            (keys::FROZEN, options.freeze.join(",")),
        ]
        .into_iter()
        .chain(options.sam.map(|rho| (keys::SAM_RHO, rho.to_string())))
        .map(|(key, value)| contract::entry(key, value)),
    );
    entries
}

fn fixed_dims(tensor: &TensorProto) -> Vec<Dim> {
    tensor.dims.iter().map(|&d| Dim::Fixed(d)).collect()
}
