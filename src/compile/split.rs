//! The training step split in two for data-parallel training, with one fused
//! allreduce of all gradients between the halves (as Horovod, and ONNX
//! Runtime's former distributed training, place it before the optimizer):
//!
//! - the **gradient graph**: forward, backward and the BatchNorm running
//!   statistics; outputs the loss, the logits, the running statistics' next
//!   values and [`FUSED_GRADIENTS`]: every parameter's gradient flattened,
//!   back to back in state order, times the input [`DENOMINATOR`] (the
//!   slice's loss denominator, so that the ranks' buffers add up to the
//!   global batch's numerator, see [`crate::distributed::loss`]);
//! - the **apply graph**: divides the summed buffer by the input
//!   [`DENOMINATOR_SUM`], splits it into the gradients and runs SGD with
//!   momentum and weight decay on them, the parameters, their momentum
//!   buffers and `lr`; outputs the parameters' and momentum buffers' next
//!   values.
//!
//! The fused buffer is one runtime value, so the allreduce between the halves
//! is one call on one buffer wherever it lives (host memory for MPI, device
//! memory for NCCL), with no copy to gather or scatter the gradients.
//!
//! A pure function of a compiled [`TrainStep`]: each half is the part of the
//! step's nodes that its outputs need, the apply graph stopping at the
//! gradient values (which its splitting nodes define). Running both on one
//! process with denominators 1 computes exactly the step.

use crate::compile::TrainStep;
use crate::error::{Error, Result};
use crate::ldam::contract::{StateKind, STEP_PREFIX};
use crate::onnx::builder::{attr_int, Emitter, NameSet};
use crate::onnx::tensor::{i64_tensor, FLOAT};
use crate::onnx::types::{value_info, Dim};
use crate::onnx::{GraphProto, ModelProto, ValueInfoProto};
use std::collections::{HashMap, HashSet};

/// Output of the gradient graph, input of the apply graph: all gradients,
/// flattened and back to back in state order, times the loss denominator.
pub const FUSED_GRADIENTS: &str = "train/fused_gradients";
/// Input of the gradient graph: this slice's loss denominator (scalar).
pub const DENOMINATOR: &str = "train/loss_denominator";
/// Input of the apply graph: the loss denominators summed over the ranks.
pub const DENOMINATOR_SUM: &str = "train/loss_denominator_sum";

/// One parameter's gradient: where it leaves the gradient graph and enters the
/// apply graph (under the same name), and its place in the fused buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradientSlot {
    pub parameter: String,
    pub gradient: String,
    pub dims: Vec<i64>,
    /// Offset of its first element in the fused buffer.
    pub offset: usize,
    pub len: usize,
}

/// The two halves of a step.
#[derive(Debug, Clone)]
pub struct SplitStep {
    pub gradient: ModelProto,
    pub apply: ModelProto,
    /// The gradients in state order, laid out back to back: elements
    /// `offset..offset + len` of one buffer of [`SplitStep::gradient_len`].
    pub gradients: Vec<GradientSlot>,
}

impl SplitStep {
    /// Elements of all gradients together: the fused buffer's gradient part.
    pub fn gradient_len(&self) -> usize {
        total_len(&self.gradients)
    }
}

/// Splits `step` into its gradient and apply graphs.
pub fn split(step: &TrainStep) -> Result<SplitStep> {
    let graph = step
        .model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("the training step has no graph"))?;
    let input_dims = |name: &str| -> Result<Vec<i64>> {
        let input = graph
            .input
            .iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| Error::invalid(format!("the step has no input '{name}'")))?;
        fixed_dims(input)
            .ok_or_else(|| Error::invalid(format!("state input '{name}' has no fixed shape")))
    };

    let mut gradients = Vec::with_capacity(step.gradients.len());
    let mut offset = 0;
    for (parameter, gradient) in &step.gradients {
        let dims = input_dims(parameter)?;
        let len = dims.iter().product::<i64>().max(0) as usize;
        gradients.push(GradientSlot {
            parameter: parameter.clone(),
            gradient: gradient.clone(),
            dims,
            offset,
            len,
        });
        offset += len;
    }
    let gradient_outputs: Vec<ValueInfoProto> = gradients
        .iter()
        .map(|g| value_info(&g.gradient, FLOAT, &to_dims(&g.dims)))
        .collect();

    let output = |name: &str| -> Result<ValueInfoProto> {
        graph
            .output
            .iter()
            .find(|o| o.name() == name)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("the step has no output '{name}'")))
    };
    let record = &step.record;
    let mut first_outputs = vec![output(&record.loss_output)?, output(&record.logits_output)?];
    first_outputs.extend(gradient_outputs.iter().cloned());
    let mut second_outputs = Vec::new();
    for s in &step.state {
        match s.kind {
            StateKind::RunningMean | StateKind::RunningVar => first_outputs.push(output(&s.next)?),
            StateKind::Parameter | StateKind::Momentum => second_outputs.push(output(&s.next)?),
        }
    }

    let gradient = part(&step.model, graph, first_outputs, &[], &HashSet::new())?;
    let cut: HashSet<&str> = gradients.iter().map(|g| g.gradient.as_str()).collect();
    let apply = part(&step.model, graph, second_outputs, &gradient_outputs, &cut)?;
    let mut names = NameSet::of_graph(graph);
    for name in [FUSED_GRADIENTS, DENOMINATOR, DENOMINATOR_SUM] {
        if !names.claim(name) {
            return Err(Error::invalid(format!(
                "the step already has a value named '{name}', which the split step needs"
            )));
        }
    }
    let opset = crate::onnx::default_opset(&step.model).unwrap_or(crate::ldam::contract::MIN_OPSET);
    let mut emitter = Emitter::new(names, &format!("{STEP_PREFIX}fuse/"), opset);
    let gradient = fuse_outputs(gradient, &gradients, &mut emitter);
    let apply = unfuse_inputs(apply, &gradients, &mut emitter);
    let apply_graph = apply.graph.as_ref().expect("part builds a graph");
    let stray: Vec<&str> = apply_graph
        .input
        .iter()
        .map(|i| i.name())
        .filter(|name| {
            ![FUSED_GRADIENTS, DENOMINATOR_SUM].contains(name)
                && !step.state.iter().any(|s| s.name == *name)
                && *name != crate::ldam::contract::LR_INPUT
        })
        .collect();
    if !stray.is_empty() {
        return Err(Error::invalid(format!(
            "the optimizer update reads {} besides the gradients, the state and lr; the step \
             cannot be split before it",
            stray.join(", ")
        )));
    }
    Ok(SplitStep {
        gradient,
        apply,
        gradients,
    })
}

/// `gradient` (a gradient graph with one output per gradient) with those
/// outputs replaced by [`FUSED_GRADIENTS`] = Concat(flattened gradients) x
/// [`DENOMINATOR`].
fn fuse_outputs(
    mut model: ModelProto,
    gradients: &[GradientSlot],
    emitter: &mut Emitter,
) -> ModelProto {
    let Some(graph) = model.graph.as_mut() else {
        return model;
    };
    let flat = emitter.constant("flat", i64_tensor("", &[1], &[-1]));
    let pieces: Vec<String> = gradients
        .iter()
        .map(|g| emitter.op("Reshape", &[&g.gradient, &flat], vec![], "flat_gradient"))
        .collect();
    let piece_refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let concatenated = emitter.op(
        "Concat",
        &piece_refs,
        vec![attr_int("axis", 0)],
        "gradients",
    );
    emitter.op_into(
        "Mul",
        &[&concatenated, DENOMINATOR],
        vec![],
        FUSED_GRADIENTS,
    );
    let fused: HashSet<&str> = gradients.iter().map(|g| g.gradient.as_str()).collect();
    graph.output.retain(|o| !fused.contains(o.name()));
    graph.output.push(value_info(
        FUSED_GRADIENTS,
        FLOAT,
        &[Dim::Fixed(total_len(gradients) as i64)],
    ));
    graph.input.push(value_info(DENOMINATOR, FLOAT, &[]));
    graph.node.append(&mut emitter.nodes);
    graph.initializer.append(&mut emitter.initializers);
    model
}

/// `apply` (an apply graph with one input per gradient) reading
/// [`FUSED_GRADIENTS`] / [`DENOMINATOR_SUM`] instead, split back into the
/// gradients under their own names.
fn unfuse_inputs(
    mut model: ModelProto,
    gradients: &[GradientSlot],
    emitter: &mut Emitter,
) -> ModelProto {
    let Some(graph) = model.graph.as_mut() else {
        return model;
    };
    let mean = emitter.op(
        "Div",
        &[FUSED_GRADIENTS, DENOMINATOR_SUM],
        vec![],
        "mean_gradients",
    );
    let lens: Vec<i64> = gradients.iter().map(|g| g.len as i64).collect();
    let split_sizes = emitter.constant("split", i64_tensor("", &[lens.len() as i64], &lens));
    let pieces: Vec<String> = gradients
        .iter()
        .map(|_| emitter.names.fresh(&format!("{STEP_PREFIX}fuse/piece")))
        .collect();
    let node_name = emitter.names.fresh(&format!("{STEP_PREFIX}fuse/Split"));
    emitter.nodes.push(crate::onnx::NodeProto {
        name: Some(node_name),
        op_type: Some("Split".to_string()),
        input: vec![mean, split_sizes],
        output: pieces.clone(),
        attribute: vec![attr_int("axis", 0)],
        ..Default::default()
    });
    for (g, piece) in gradients.iter().zip(&pieces) {
        let shape = emitter.constant("shape", i64_tensor("", &[g.dims.len() as i64], &g.dims));
        emitter.op_into("Reshape", &[piece, &shape], vec![], &g.gradient);
    }
    let fused: HashSet<&str> = gradients.iter().map(|g| g.gradient.as_str()).collect();
    graph.input.retain(|i| !fused.contains(i.name()));
    graph.input.insert(
        0,
        value_info(
            FUSED_GRADIENTS,
            FLOAT,
            &[Dim::Fixed(total_len(gradients) as i64)],
        ),
    );
    graph
        .input
        .insert(1, value_info(DENOMINATOR_SUM, FLOAT, &[]));
    let mut nodes = std::mem::take(&mut emitter.nodes);
    nodes.append(&mut graph.node);
    graph.node = nodes;
    graph.initializer.append(&mut emitter.initializers);
    model
}

fn total_len(gradients: &[GradientSlot]) -> usize {
    gradients.last().map_or(0, |g| g.offset + g.len)
}

fn fixed_dims(info: &ValueInfoProto) -> Option<Vec<i64>> {
    crate::onnx::types::tensor_type(info)?
        .shape?
        .into_iter()
        .map(|d| match d {
            Dim::Fixed(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn to_dims(dims: &[i64]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

/// The model computing `outputs` from `graph`'s nodes, with the values in
/// `cut` (declared by `cut_inputs`) taken as inputs instead of computed: the
/// nodes the outputs need, in the step's order, the graph inputs and
/// initializers those nodes read.
fn part(
    model: &ModelProto,
    graph: &GraphProto,
    outputs: Vec<ValueInfoProto>,
    cut_inputs: &[ValueInfoProto],
    cut: &HashSet<&str>,
) -> Result<ModelProto> {
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, node)| node.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut needed_nodes = vec![false; graph.node.len()];
    let mut read: HashSet<&str> = HashSet::new();
    let output_names: Vec<String> = outputs.iter().map(|o| o.name().to_string()).collect();
    let mut pending: Vec<&str> = output_names.iter().map(String::as_str).collect();
    while let Some(value) = pending.pop() {
        if !read.insert(value) || cut.contains(value) {
            continue;
        }
        if let Some(&i) = producer.get(value) {
            if !needed_nodes[i] {
                needed_nodes[i] = true;
                let node = &graph.node[i];
                pending.extend(
                    node.input
                        .iter()
                        .map(String::as_str)
                        .filter(|n| !n.is_empty()),
                );
                // Subgraph attributes (If, Loop) read outer values by name.
                for attribute in &node.attribute {
                    if let Some(g) = &attribute.g {
                        pending.extend(outer_reads(g));
                    }
                }
            }
        }
    }
    let mut input: Vec<ValueInfoProto> = cut_inputs.to_vec();
    input.extend(
        graph
            .input
            .iter()
            .filter(|i| read.contains(i.name()) && !cut.contains(i.name()))
            .cloned(),
    );
    let part_graph = GraphProto {
        name: graph.name.clone(),
        node: graph
            .node
            .iter()
            .zip(&needed_nodes)
            .filter(|(_, &needed)| needed)
            .map(|(node, _)| node.clone())
            .collect(),
        initializer: graph
            .initializer
            .iter()
            .filter(|t| read.contains(t.name()))
            .cloned()
            .collect(),
        input,
        output: outputs,
        value_info: graph
            .value_info
            .iter()
            .filter(|v| read.contains(v.name()))
            .cloned()
            .collect(),
        ..Default::default()
    };
    Ok(ModelProto {
        graph: Some(part_graph),
        ..model.clone()
    })
}

/// Names a subgraph reads from outside itself (conservatively: every input of
/// its nodes).
fn outer_reads(graph: &GraphProto) -> Vec<&str> {
    graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .filter(|n| !n.is_empty())
        .collect()
}
