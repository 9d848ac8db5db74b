//! Reverse-mode differentiation of ONNX graphs into standard ONNX operators.
//!
//! The engine knows no op: it finds the values on a path from the requested
//! inputs to the loss, walks the graph backwards, sums gradient contributions of
//! values with several consumers, and asks the op's rule (its gradient facet in
//! [`crate::ops::registry`]) for the gradients of the inputs that need one.
//! Integer and boolean values, and the outputs of ops the registry marks
//! non-differentiable, never carry gradients.

pub use crate::ops::grad::{scalar, tensor_attr, GradCtx};
pub use crate::ops::nn::batchnorm;

use crate::error::{Error, OpStage, Result};
use crate::onnx::builder::Emitter;
use crate::onnx::tensor::{is_float_type, FLOAT};
use crate::onnx::{node_label, GraphProto, NodeProto, TensorProto};
use crate::ops::grad::sanitize;
use crate::ops::registry::{self, Gradient};
use crate::ops::shapes::ValueShapes;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The backward pass appended to a forward graph.
#[derive(Debug, Clone)]
pub struct Backward {
    /// The forward nodes, possibly with extra outputs rules asked for (MaxPool
    /// indices, Dropout masks), followed by the gradient nodes.
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    /// Gradient value of each requested input that the loss depends on.
    pub gradients: BTreeMap<String, String>,
}

/// Differentiates `loss` with respect to `wrt` (initializers or graph inputs).
/// `b` supplies fresh names; `shapes` the static types the rules may use.
pub fn differentiate(
    graph: &GraphProto,
    shapes: &mut ValueShapes,
    b: &mut Emitter,
    loss: &str,
    wrt: &[String],
) -> Result<Backward> {
    let mut forward = graph.node.clone();
    let active = differentiable_values(&forward, shapes, wrt);
    if !active.contains(loss) {
        return Err(Error::invalid(format!(
            "the loss '{loss}' does not depend on any trainable tensor"
        )));
    }
    let relevant = nodes_on_path_to(&forward, &active, loss);
    let producers: HashMap<&str, usize> = forward
        .iter()
        .enumerate()
        .flat_map(|(index, node)| {
            node.output
                .iter()
                .filter(|o| !o.is_empty())
                .map(move |o| (o.as_str(), index))
        })
        .collect();

    let mut contributions: HashMap<String, Vec<String>> = HashMap::new();
    let loss_type = shapes.elem_type(loss).unwrap_or(FLOAT);
    let seed = b.constant("grad/seed", scalar(loss_type, 1.0));
    contributions.insert(loss.to_string(), vec![seed]);

    let mut extra_outputs: Vec<(usize, usize, String)> = Vec::new();
    for index in (0..forward.len()).rev() {
        if !relevant[index] {
            continue;
        }
        let node = &forward[index];
        let output_grads: Vec<Option<String>> = node
            .output
            .iter()
            .map(|o| {
                contributions
                    .remove(o)
                    .map(|parts| sum(b, shapes, parts, o))
            })
            .collect();
        if output_grads.iter().all(Option::is_none) {
            continue;
        }
        let needs: Vec<bool> = node
            .input
            .iter()
            .map(|i| !i.is_empty() && active.contains(i))
            .collect();
        if !needs.iter().any(|&n| n) {
            continue;
        }
        let rule = registry::for_node(node, b.opset)
            .and_then(|op| op.gradient_rule())
            .ok_or_else(|| {
                let op = match node.domain() {
                    "" | "ai.onnx" => node.op_type().to_string(),
                    domain => format!("{domain}:{}", node.op_type()),
                };
                Error::UnsupportedOp {
                    stage: OpStage::Gradient,
                    op,
                    node: node_label(node),
                    supported: registry::differentiable_ops().join(", "),
                }
            })?;
        let mut ctx = GradCtx {
            node,
            node_index: index,
            forward: &forward,
            producers: &producers,
            b: &mut *b,
            shapes: &mut *shapes,
            output_grads,
            needs: needs.clone(),
            extra_outputs: &mut extra_outputs,
        };
        let input_grads = rule(&mut ctx).map_err(|e| match e {
            Error::Invalid { reason } => Error::Gradient {
                node: node_label(node),
                reason,
            },
            other => other,
        })?;
        for (i, grad) in input_grads.into_iter().enumerate() {
            if let (Some(grad), true) = (grad, needs.get(i).copied().unwrap_or(false)) {
                contributions
                    .entry(node.input[i].clone())
                    .or_default()
                    .push(grad);
            }
        }
    }
    for (node_index, output_index, name) in extra_outputs {
        let outputs = &mut forward[node_index].output;
        while outputs.len() <= output_index {
            outputs.push(String::new());
        }
        outputs[output_index] = name;
    }

    let mut gradients = BTreeMap::new();
    for name in wrt {
        if let Some(parts) = contributions.remove(name) {
            gradients.insert(name.clone(), sum(b, shapes, parts, name));
        }
    }
    forward.append(&mut b.nodes);
    Ok(Backward {
        nodes: forward,
        initializers: std::mem::take(&mut b.initializers),
        gradients,
    })
}

/// The `wrt` tensors the loss depends on through differentiable ops: those
/// [`differentiate`] returns a gradient for, found without emitting anything.
pub fn reaching_loss(
    graph: &GraphProto,
    shapes: &ValueShapes,
    loss: &str,
    wrt: &[String],
) -> HashSet<String> {
    let active = differentiable_values(&graph.node, shapes, wrt);
    if !active.contains(loss) {
        return HashSet::new();
    }
    let relevant = nodes_on_path_to(&graph.node, &active, loss);
    graph
        .node
        .iter()
        .zip(relevant)
        .filter(|(_, on_path)| *on_path)
        .flat_map(|(node, _)| node.input.iter())
        .filter(|i| wrt.contains(i))
        .cloned()
        .collect()
}

/// Float values computed from a `wrt` tensor through differentiable ops.
fn differentiable_values(
    nodes: &[NodeProto],
    shapes: &ValueShapes,
    wrt: &[String],
) -> HashSet<String> {
    let mut active: HashSet<String> = wrt.iter().cloned().collect();
    for node in nodes {
        let never = registry::find(node.domain(), node.op_type())
            .is_some_and(|op| matches!(op.gradient, Gradient::NotDifferentiable));
        if never {
            continue;
        }
        if node.input.iter().any(|i| active.contains(i)) {
            for output in node.output.iter().filter(|o| !o.is_empty()) {
                // Unknown types are treated as float: the rule will say if it cannot cope.
                if shapes.elem_type(output).is_none_or(is_float_type) {
                    active.insert(output.clone());
                }
            }
        }
    }
    active
}

/// Marks the nodes whose outputs the loss depends on through active values.
fn nodes_on_path_to(nodes: &[NodeProto], active: &HashSet<String>, loss: &str) -> Vec<bool> {
    let mut needed: HashSet<&str> = HashSet::from([loss]);
    let mut relevant = vec![false; nodes.len()];
    for (index, node) in nodes.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o.as_str())) {
            relevant[index] = true;
            needed.extend(
                node.input
                    .iter()
                    .filter(|i| active.contains(*i))
                    .map(String::as_str),
            );
        }
    }
    relevant
}

/// One gradient from several contributions.
fn sum(b: &mut Emitter, shapes: &mut ValueShapes, mut parts: Vec<String>, of: &str) -> String {
    if parts.len() == 1 {
        return parts.pop().expect("one element");
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let total = b.op("Sum", &refs, vec![], &format!("grad/{}", sanitize(of)));
    if let Some(ty) = shapes.get(of).cloned() {
        shapes.insert(&total, ty);
    }
    total
}

/// A model computing `loss` and its gradients with respect to `wrt` (graph
/// inputs or initializers): outputs are the loss followed by one gradient per
/// `wrt` entry. Used by gradient checks and for inspecting backward graphs.
pub fn gradient_model(
    model: &crate::onnx::ModelProto,
    loss: &str,
    wrt: &[String],
) -> Result<(crate::onnx::ModelProto, BTreeMap<String, String>)> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;
    let opset = crate::onnx::default_opset(model).unwrap_or(crate::ldam::contract::MIN_OPSET);
    let mut shapes = ValueShapes::infer(graph, opset);
    let mut b = Emitter::new(
        crate::onnx::builder::NameSet::of_graph(graph),
        "train/",
        opset,
    );
    let mut graph = graph.clone();
    batchnorm::explicit_statistics(&mut graph, &mut b, &mut shapes)?;
    let backward = differentiate(&graph, &mut shapes, &mut b, loss, wrt)?;
    let mut out = model.clone();
    let g = out.graph.insert(graph);
    g.node = backward.nodes;
    g.initializer.extend(backward.initializers);
    g.output.retain(|o| o.name() == loss);
    for name in wrt {
        let grad = backward
            .gradients
            .get(name)
            .ok_or_else(|| Error::invalid(format!("the loss does not depend on '{name}'")))?;
        let elem = shapes.elem_type(name).unwrap_or(FLOAT);
        g.output
            .push(crate::onnx::types::value_info_any_shape(grad, elem));
    }
    Ok((out, backward.gradients))
}
