//! BatchNormalization in training mode, made explicit.
//!
//! A training-mode BatchNormalization normalises with the batch's own mean and
//! (biased) variance. We compute those two per-channel statistics with plain
//! ReduceMean nodes just before the node and feed them to the same op in its
//! inference form; they are exactly what the running-statistics update needs
//! (PyTorch-style, in `compile::sgd`). The gradient rule recognises statistics
//! written this way (`centered_input`) and emits the closed-form training-mode
//! gradient, reusing the centred input; the chain rule through the ReduceMean
//! nodes would give the same values with about three times the full-size ops.

use crate::error::{Error, Result};
use crate::onnx::builder::{attr_int, Emitter};
use crate::onnx::tensor::{i64_tensor, FLOAT};
use crate::onnx::types::{Dim, TensorType};
use crate::onnx::{attribute, node_label, GraphProto, NodeProto};
use crate::ops::shapes::values::ValueShapes;
use std::collections::HashSet;

/// The values one rewritten BatchNormalization exposes to the training step.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatistics {
    /// The node's name (its first output when unnamed).
    pub node_name: String,
    /// The running statistics the node took as inputs 3 and 4 (the state to update).
    pub running_mean: String,
    pub running_var: String,
    /// ONNX momentum (weight of the running value; PyTorch's is 1 - this); default 0.9.
    pub momentum: f32,
    /// Per-channel batch mean, [C].
    pub batch_mean: String,
    /// Per-channel biased batch variance, [C]: the one normalisation uses.
    pub batch_var: String,
    /// Scalar of X's type: elements per channel (N times the spatial size), at run time.
    pub per_channel_count: String,
}

/// Whether a BatchNormalization normalises with batch statistics: the
/// training_mode attribute from opset 14; before it, the presence of the
/// optional statistics outputs.
pub fn is_training(node: &NodeProto, opset: i64) -> bool {
    if opset >= 14 {
        crate::onnx::attr_int(node, "training_mode", 0) != 0
    } else {
        node.output.iter().skip(1).any(|o| !o.is_empty())
    }
}

/// Whether a training-mode BatchNormalization keeps running statistics a step
/// must update: all but one whose inputs 3 and 4 are both computed by nodes.
/// PyTorch's `F.batch_norm(x, None, None, training=True)` (NF-Net's weight
/// standardisation) has none; its exports feed those inputs computed values,
/// which nothing reads after the step. (Statistics that are graph inputs are
/// kept, and compile says they must be initializers.)
/// `produced` holds every value a node of the graph computes ([`produced_values`]).
pub fn keeps_running_statistics(node: &NodeProto, produced: &HashSet<String>) -> bool {
    let computed = |i: usize| {
        node.input
            .get(i)
            .is_some_and(|name| produced.contains(name))
    };
    !(computed(3) && computed(4))
}

/// Every value some node of `graph` computes.
pub fn produced_values(graph: &GraphProto) -> HashSet<String> {
    graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).cloned())
        .collect()
}

/// Rewrites every training-mode BatchNormalization of `graph` into its inference
/// form fed with explicit batch statistics, inserted just before the node (the
/// graph stays topologically sorted). New constants become initializers of
/// `graph`; `shapes` is re-inferred for the rewritten graph.
pub fn explicit_statistics(
    graph: &mut GraphProto,
    b: &mut Emitter,
    shapes: &mut ValueShapes,
) -> Result<Vec<BatchStatistics>> {
    let opset = b.opset;
    if !graph
        .node
        .iter()
        .any(|n| n.op_type() == "BatchNormalization" && is_training(n, opset))
    {
        return Ok(Vec::new());
    }
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name().to_string()))
        .collect();
    let produced = produced_values(graph);
    let mut statistics = Vec::new();
    let mut new_types = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for mut node in std::mem::take(&mut graph.node) {
        if node.op_type() == "BatchNormalization" && is_training(&node, opset) {
            let first_new_node = b.nodes.len();
            let first_new_constant = b.initializers.len();
            let keeps = keeps_running_statistics(&node, &produced);
            let stats = make_explicit(&mut node, b, shapes, &used, &mut new_types)?;
            if keeps {
                statistics.push(stats);
            }
            nodes.extend(b.nodes.drain(first_new_node..));
            graph
                .initializer
                .extend(b.initializers.drain(first_new_constant..));
        }
        nodes.push(node);
    }
    graph.node = nodes;
    // Inferred afresh so that the new axes constants are known as constants (the
    // ReduceMean gradient reads them), then refined with the statistics' shapes.
    *shapes = ValueShapes::infer(graph, opset);
    for (name, ty) in new_types {
        shapes.insert(&name, ty);
    }
    Ok(statistics)
}

/// Emits the statistics of one node into `b` and turns the node into its
/// inference form reading them.
fn make_explicit(
    node: &mut NodeProto,
    b: &mut Emitter,
    shapes: &ValueShapes,
    used: &HashSet<String>,
    new_types: &mut Vec<(String, TensorType)>,
) -> Result<BatchStatistics> {
    let label = node_label(node);
    if node.input.len() != 5 || node.input.iter().any(String::is_empty) {
        return Err(Error::invalid(format!(
            "{label} does not have its five inputs"
        )));
    }
    if let Some(consumed) = node
        .output
        .iter()
        .skip(1)
        .find(|o| !o.is_empty() && used.contains(*o))
    {
        return Err(Error::invalid(format!(
            "{label}: its running-statistics output '{consumed}' is used by the graph; \
             the training step updates running statistics itself, so nothing may read them"
        )));
    }
    let x = node.input[0].clone();
    let rank = shapes.rank(&x).ok_or_else(|| {
        Error::invalid(format!("{label}: the rank of its input '{x}' is unknown, so its batch statistics cannot be computed"))
    })?;
    if rank < 2 {
        return Err(Error::invalid(format!(
            "{label}: input '{x}' has rank {rank}, BatchNormalization needs [N, C, ...]"
        )));
    }
    let node_name = match node.name() {
        "" => node.output[0].clone(),
        name => name.to_string(),
    };
    let hint = format!("bn/{}", node_name.trim_start_matches('/').replace('/', "_"));
    let axes = statistic_axes(rank);

    let mean_kept = b.reduce("ReduceMean", &x, &axes, true, &format!("{hint}/mean_kept"));
    // [1, C, 1, ...] -> [C]: the same values, no second pass over X.
    let flat = b.constant(&format!("{hint}/flat"), i64_tensor("", &[1], &[-1]));
    let batch_mean = b.op(
        "Reshape",
        &[&mean_kept, &flat],
        vec![],
        &format!("{hint}/batch_mean"),
    );
    let centered = b.sub(&x, &mean_kept, &format!("{hint}/centered"));
    let squared = b.mul(&centered, &centered, &format!("{hint}/squared"));
    let batch_var = b.reduce(
        "ReduceMean",
        &squared,
        &axes,
        false,
        &format!("{hint}/batch_var"),
    );
    // Elements per channel = Size(X) / C, in X's type.
    let size = b.op("Size", &[&x], vec![], &format!("{hint}/size"));
    let channels = b.op("Size", &[&batch_mean], vec![], &format!("{hint}/channels"));
    let count = b.div(&size, &channels, &format!("{hint}/count_i64"));
    let elem_type = shapes.elem_type(&x).unwrap_or(FLOAT);
    // Cast rather than CastLike, which only exists from opset 15.
    let per_channel_count = b.op(
        "Cast",
        &[&count],
        vec![attr_int("to", i64::from(elem_type))],
        &format!("{hint}/per_channel_count"),
    );

    let x_shape = shapes.shape(&x).map(<[Dim]>::to_vec);
    let channel_dim = x_shape.as_ref().map_or(Dim::Unknown, |s| s[1].clone());
    let channel_only = |keep: bool| -> Vec<Dim> {
        if keep {
            (0..rank)
                .map(|a| {
                    if a == 1 {
                        channel_dim.clone()
                    } else {
                        Dim::Fixed(1)
                    }
                })
                .collect()
        } else {
            vec![channel_dim.clone()]
        }
    };
    let typed = |shape: Option<Vec<Dim>>| TensorType { elem_type, shape };
    new_types.extend([
        (mean_kept, typed(Some(channel_only(true)))),
        (batch_mean.clone(), typed(Some(channel_only(false)))),
        (centered, typed(x_shape.clone())),
        (squared, typed(x_shape)),
        (batch_var.clone(), typed(Some(channel_only(false)))),
        (per_channel_count.clone(), typed(Some(vec![]))),
    ]);

    let statistics = BatchStatistics {
        node_name,
        running_mean: node.input[3].clone(),
        running_var: node.input[4].clone(),
        momentum: attribute(node, "momentum").and_then(|a| a.f).unwrap_or(0.9),
        batch_mean: batch_mean.clone(),
        batch_var: batch_var.clone(),
        per_channel_count,
    };
    node.input[3] = batch_mean;
    node.input[4] = batch_var;
    node.output.truncate(1);
    node.attribute.retain(|a| a.name() != "training_mode");
    Ok(statistics)
}

/// The centred input C = X - mean(X) of an inference-form BatchNormalization whose
/// mean and variance inputs are the batch statistics of its own input X, written
/// as `explicit_statistics` writes them: mean = ReduceMean(X) (kept dims dropped
/// by a Reshape to [-1], or by keepdims=0) and var = ReduceMean(C * C), both
/// over every axis but the channel. For such a node the gradient rule emits the
/// closed-form training-mode gradient, reusing C from the forward pass, instead
/// of differentiating through the statistics.
pub fn centered_input<'g>(
    node: &NodeProto,
    producer: impl Fn(&str) -> Option<&'g NodeProto>,
    shapes: &ValueShapes,
) -> Option<String> {
    let x = node.input.first()?.as_str();
    let rank = shapes.rank(x)?;
    let reduces = |node: &NodeProto, input: &str, keepdims: bool| -> bool {
        node.op_type() == "ReduceMean"
            && node.input.first().map(String::as_str) == Some(input)
            && crate::onnx::attr_int(node, "keepdims", 1) == i64::from(keepdims)
            && reduce_axes(node, shapes, rank).as_deref() == Some(&statistic_axes(rank)[..])
    };
    let var = producer(node.input.get(4)?)?;
    let squared = producer(var.input.first()?)?;
    let centered = squared.input.first()?;
    if squared.op_type() != "Mul" || squared.input.get(1) != Some(centered) {
        return None;
    }
    if !reduces(var, &squared.output[0], false) {
        return None;
    }
    let subtraction = producer(centered)?;
    if subtraction.op_type() != "Sub" || subtraction.input.first().map(String::as_str) != Some(x) {
        return None;
    }
    let mean_kept = subtraction.input.get(1)?;
    if !reduces(producer(mean_kept)?, x, true) {
        return None;
    }
    let mean = producer(node.input.get(3)?)?;
    let same_mean = reduces(mean, x, false)
        || (mean.op_type() == "Reshape"
            && mean.input.first() == Some(mean_kept)
            && mean.input.get(1).and_then(|shape| shapes.const_ints(shape)) == Some(&[-1][..]));
    same_mean.then(|| centered.clone())
}

/// Every axis of a rank-`rank` tensor but the channel (axis 1).
fn statistic_axes(rank: usize) -> Vec<i64> {
    std::iter::once(0).chain(2..rank as i64).collect()
}

/// A ReduceMean's constant axes (an input from opset 18, an attribute before),
/// non-negative and sorted.
fn reduce_axes(node: &NodeProto, shapes: &ValueShapes, rank: usize) -> Option<Vec<i64>> {
    let axes = match node.input.get(1).filter(|a| !a.is_empty()) {
        Some(axes) => shapes.const_ints(axes)?.to_vec(),
        None => attribute(node, "axes").map(|a| a.ints.clone())?,
    };
    let mut axes: Vec<i64> = axes
        .into_iter()
        .map(|a| if a < 0 { a + rank as i64 } else { a })
        .collect();
    axes.sort_unstable();
    Some(axes)
}
