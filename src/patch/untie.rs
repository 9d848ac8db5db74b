//! Parameters the exporter merged because their values happened to be equal.
//!
//! Both of torch's exporters deduplicate initializers with equal contents: a
//! fresh network's normalisation layers all start at weight 1 and bias 0, so the
//! dynamo exporter gives six BatchNorms one weight and one bias (and even feeds
//! a BatchNorm its own bias as running mean), and the legacy exporter in eval
//! mode routes copies through `Identity` nodes. In PyTorch they are separate
//! parameters that drift apart from the first step on; trained tied, they get one
//! summed gradient, and a running statistic tied to a parameter cannot be
//! updated at all. This pass gives each such use its own copy: of tensors read
//! as a normalisation layer's, and of any constant-filled tensor read more than
//! once (the zero biases of attention projections).

use crate::onnx::builder::NameSet;
use crate::onnx::tensor::is_float_type;
use crate::onnx::{GraphProto, NodeProto, TensorProto};
use std::collections::{HashMap, HashSet};

/// The inputs of `node` that hold a normalisation layer's own tensors
/// (scale, bias, running statistics), with the role each plays.
fn normalisation_slots(node: &NodeProto) -> &'static [(usize, &'static str)] {
    match node.op_type() {
        "BatchNormalization" => &[
            (1, "weight"),
            (2, "bias"),
            (3, "running_mean"),
            (4, "running_var"),
        ],
        "LayerNormalization" | "GroupNormalization" | "InstanceNormalization" => {
            &[(1, "weight"), (2, "bias")]
        }
        _ => &[],
    }
}

/// Gives every use of a merged normalisation tensor beyond its first its own
/// initializer, and turns `Identity` copies of float initializers into
/// initializers of their own. Returns the names of the new initializers.
pub fn untie(graph: &mut GraphProto, names: &mut NameSet) -> Vec<String> {
    let mut created = identity_copies(graph);
    let values = float_parameters(graph);
    // Merged: read more than once, once at least as a normalisation tensor.
    // Several reads with no normalisation among them (a recurrent weight
    // sliced per gate, a weight shared on purpose) stay as they are.
    let mut reads: HashMap<&str, usize> = HashMap::new();
    let mut normalisation: HashSet<&str> = HashSet::new();
    for node in &graph.node {
        for (slot, input) in node.input.iter().enumerate() {
            if values.contains_key(input) {
                *reads.entry(input).or_default() += 1;
                if normalisation_slots(node).iter().any(|&(s, _)| s == slot) {
                    normalisation.insert(input);
                }
            }
        }
    }
    // A constant-filled tensor (zeros, ones) read more than once was merged
    // too: random weights are never equal, fresh biases and scales always are.
    let merged: HashSet<String> = reads
        .iter()
        .filter(|&(&name, &count)| {
            count > 1 && (normalisation.contains(name) || constant_filled(&values[name]))
        })
        .map(|(&name, _)| name.to_string())
        .collect();
    let mut first_read = HashSet::new();
    let mut new_tensors = Vec::new();
    for node in graph.node.iter_mut() {
        for slot in 0..node.input.len() {
            let name = node.input[slot].clone();
            if !merged.contains(&name) || first_read.insert(name.clone()) {
                continue;
            }
            let role = normalisation_slots(node)
                .iter()
                .find(|&&(s, _)| s == slot)
                .map_or_else(|| format!("input{slot}"), |&(_, role)| role.to_string());
            let base = match node.name.as_deref() {
                Some(n) if !n.is_empty() => format!("{n}.{role}"),
                _ => format!("{name}.{role}"),
            };
            let copy_name = names.fresh(&base);
            let mut copy = values[&name].clone();
            copy.name = Some(copy_name.clone());
            new_tensors.push(copy);
            node.input[slot] = copy_name.clone();
            created.push(copy_name);
        }
    }
    graph.initializer.extend(new_tensors);
    created
}

/// `Identity(initializer)` nodes become initializers named as their output.
fn identity_copies(graph: &mut GraphProto) -> Vec<String> {
    let float_initializers = float_parameters(graph);
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    let mut created = Vec::new();
    let mut kept = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let copies = node.op_type() == "Identity"
            && node.input.len() == 1
            && node.output.len() == 1
            && float_initializers.contains_key(&node.input[0])
            && !outputs.contains(&node.output[0]);
        if copies {
            let mut copy = float_initializers[&node.input[0]].clone();
            copy.name = Some(node.output[0].clone());
            created.push(node.output[0].clone());
            graph.initializer.push(copy);
        } else {
            kept.push(node);
        }
    }
    graph.node = kept;
    created
}

/// Float initializers of rank >= 1 that no graph input overrides, by name.
fn float_parameters(graph: &GraphProto) -> HashMap<String, TensorProto> {
    let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    graph
        .initializer
        .iter()
        .filter(|t| is_float_type(t.data_type()) && !t.dims.is_empty())
        .filter(|t| !inputs.contains(t.name()))
        .map(|t| (t.name().to_string(), t.clone()))
        .collect()
}

/// Whether every element of `tensor` equals the first (and it has more than one).
fn constant_filled(tensor: &TensorProto) -> bool {
    match crate::onnx::tensor::f32_values(tensor) {
        Some(values) => values.len() > 1 && values.iter().all(|&v| v == values[0]),
        None => false,
    }
}
