//! A fixed batch dimension made symbolic, when the graph provably does not
//! depend on its value.
//!
//! torch's default exporter fixes every input's first dimension at the example's
//! batch size, and bakes that size into the shape constants of `Reshape` and
//! `Expand` (a class token expanded to `[2, 1, D]`, a flatten to `[2, -1]`). Such a
//! model can only ever see batches of that size. The rewrite frees the inputs'
//! first dimension, replaces the size in shape constants by the batch read from
//! the input at run time, and then proves the result: shape inference at two
//! other batch sizes must reach the outputs with the batch in front and every
//! `Reshape` must keep its element count. A graph that fails the proof is refused
//! with the node that pins the batch, before anything is written.

use crate::error::{Error, Result};
use crate::ldam::contract::PATCH_PREFIX;
use crate::onnx::builder::{attr_int, Emitter, NameSet};
use crate::onnx::tensor::i64_tensor;
use crate::onnx::types::{tensor_type, value_info, Dim};
use crate::onnx::{node_label, GraphProto, NodeProto};
use crate::ops::shapes::ValueShapes;
use std::collections::HashSet;

/// The symbolic name the freed dimension gets.
pub const BATCH_SYMBOL: &str = "batch";

/// What freeing the batch changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreedBatch {
    /// The inputs whose first dimension was fixed.
    pub inputs: Vec<String>,
    /// The size it was fixed at.
    pub size: i64,
    /// The nodes whose shape constant now reads the batch at run time.
    pub rewritten: Vec<String>,
}

/// How to free a fixed batch at export, for messages.
pub const DYNAMIC_BATCH_EXPORT: &str = "export with a dynamic batch: \
     torch.onnx.export(model, (x,), path, dynamic_shapes=({0: torch.export.Dim(\"batch\")},)) \
     with the default exporter, or dynamic_axes={\"<input>\": {0: \"batch\"}} with dynamo=False";

/// Frees the batch dimension of `graph`'s data inputs when they fix it; `None`
/// when no input does. `names` keeps the emitted names fresh.
pub fn free_batch(
    graph: &mut GraphProto,
    opset: i64,
    names: &mut NameSet,
) -> Result<Option<FreedBatch>> {
    let initializers: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let mut fixed = Vec::new();
    for input in graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name()))
    {
        if let Some(Dim::Fixed(size)) = tensor_type(input)
            .and_then(|t| t.shape)
            .and_then(|s| s.first().cloned())
        {
            fixed.push((input.name().to_string(), size));
        }
    }
    let Some(&(_, size)) = fixed.first() else {
        return Ok(None);
    };
    // A first dimension is the batch only if the outputs lead with it too: a
    // time-major sequence input [T, N, F] fixes its length there instead.
    let outputs_lead = graph
        .output
        .iter()
        .any(|o| first_dim(o) == Some(Dim::Fixed(size)));
    if !outputs_lead {
        return Ok(None);
    }
    if let Some((name, other)) = fixed.iter().find(|(_, s)| *s != size) {
        return Err(Error::patch(format!(
            "the inputs fix different batch sizes ({} has {size}, '{name}' has {other}); {DYNAMIC_BATCH_EXPORT}",
            fixed[0].0
        )));
    }
    let before = ValueShapes::infer(graph, opset);
    let mut reader = BatchReader {
        b: Emitter::new(std::mem::take(names), PATCH_PREFIX, opset),
        source: fixed[0].0.clone(),
        batch: None,
        front: Vec::new(),
    };
    let mut rewritten = drop_zero_initial_states(graph, size);
    rewritten.extend(rewrite_leading_batch(graph, &before, size, &mut reader));

    let symbolic = Dim::Symbolic(BATCH_SYMBOL.to_string());
    let inputs: Vec<String> = fixed.into_iter().map(|(name, _)| name).collect();
    for info in graph
        .input
        .iter_mut()
        .filter(|i| inputs.iter().any(|n| n == i.name()))
    {
        set_first_dim(info, &symbolic);
    }
    for info in graph.output.iter_mut() {
        if first_dim(info) == Some(Dim::Fixed(size)) {
            set_first_dim(info, &symbolic);
        }
    }
    // Intermediate shapes recorded at export would contradict the new batch.
    graph.value_info.clear();
    // The merged-batch rewrite is a search: when its result fails the proof,
    // the graph without it names the node that pins the batch more plainly.
    let without_merged = (
        graph.clone(),
        reader.b.initializers.clone(),
        reader.front.clone(),
    );
    let merged = rewrite_merged_batch(graph, opset, size, &inputs, &mut reader);
    let mut attempt = graph.clone();
    let mut attempt_reader_front = reader.front.clone();
    attempt_reader_front.append(&mut attempt.node);
    attempt.node = attempt_reader_front;
    attempt
        .initializer
        .extend(reader.b.initializers.iter().cloned());
    if !merged.is_empty() && prove(&attempt, opset, size, &inputs).is_err() {
        let (plain, initializers, front) = without_merged;
        *graph = plain;
        reader.b.initializers = initializers;
        reader.front = front;
    } else {
        rewritten.extend(merged);
    }
    reader.finish(graph);
    *names = std::mem::take(&mut reader.b.names);
    prove(graph, opset, size, &inputs)?;
    Ok(Some(FreedBatch {
        inputs,
        size,
        rewritten,
    }))
}

/// Emits the shape constants that read the batch at run time.
struct BatchReader {
    b: Emitter,
    /// The input the batch is read from.
    source: String,
    /// `Shape(source)[0:1]`, once emitted.
    batch: Option<String>,
    /// The nodes computing it, which only read a graph input and so run first.
    front: Vec<NodeProto>,
}

impl BatchReader {
    fn batch(&mut self) -> String {
        if let Some(batch) = &self.batch {
            return batch.clone();
        }
        let first = self.b.nodes.len();
        let shape = self.b.op("Shape", &[&self.source], vec![], "batch_shape");
        let starts = self.b.constant("batch_start", i64_tensor("", &[1], &[0]));
        let ends = self.b.constant("batch_end", i64_tensor("", &[1], &[1]));
        let batch = self
            .b
            .op("Slice", &[&shape, &starts, &ends], vec![], "batch_size");
        self.front.extend(self.b.nodes.drain(first..));
        self.batch = Some(batch.clone());
        batch
    }

    /// `values` with element `at` replaced by `batch * factor`, as a 1-D
    /// int64 value computed at run time; its nodes are in `self.b.nodes`.
    fn shape_with_batch(&mut self, values: &[i64], at: usize, factor: i64) -> String {
        let batch = self.batch();
        let scaled = if factor == 1 {
            batch
        } else {
            let k = self
                .b
                .constant("batch_factor", i64_tensor("", &[1], &[factor]));
            self.b.op("Mul", &[&batch, &k], vec![], "batch_times")
        };
        let mut parts = Vec::new();
        if at > 0 {
            parts.push(
                self.b
                    .constant("shape_head", i64_tensor("", &[at as i64], &values[..at])),
            );
        }
        parts.push(scaled);
        if at + 1 < values.len() {
            parts.push(self.b.constant(
                "shape_tail",
                i64_tensor("", &[(values.len() - at - 1) as i64], &values[at + 1..]),
            ));
        }
        if parts.len() == 1 {
            return parts.remove(0);
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.b
            .op("Concat", &refs, vec![attr_int("axis", 0)], "batch_shape")
    }

    /// Puts the batch reader first and the new constants among the initializers.
    fn finish(&mut self, graph: &mut GraphProto) {
        let mut nodes = std::mem::take(&mut self.front);
        nodes.append(&mut graph.node);
        graph.node = nodes;
        graph.initializer.append(&mut self.b.initializers);
    }
}

/// Initializers and `Constant` outputs that are not graph inputs: the values
/// an exporter wrote down, as opposed to ones computed at run time.
fn literal_values(graph: &GraphProto) -> HashSet<String> {
    graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| !graph.input.iter().any(|i| i.name() == n))
        .chain(
            graph
                .node
                .iter()
                .filter(|n| n.op_type() == "Constant")
                .flat_map(|n| n.output.iter().cloned()),
        )
        .collect()
}

/// Recurrent nodes' initial states that are zeros written at the batch size
/// (as the default exporter writes `h0 = zeros(1, B, H)`): zeros are the
/// default of an absent initial state, at any batch size.
fn drop_zero_initial_states(graph: &mut GraphProto, size: i64) -> Vec<String> {
    let literal = literal_values(graph);
    let zeros: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| literal.contains(t.name()))
        .filter(|t| t.dims.get(1) == Some(&size))
        .filter(|t| crate::onnx::tensor::f32_values(t).is_some_and(|v| v.iter().all(|&x| x == 0.0)))
        .map(|t| t.name().to_string())
        .collect();
    let mut rewritten = Vec::new();
    for node in graph.node.iter_mut() {
        if !matches!(node.op_type(), "LSTM" | "GRU" | "RNN") {
            continue;
        }
        let mut changed = false;
        for slot in [5, 6] {
            if node.input.get(slot).is_some_and(|i| zeros.contains(i)) {
                node.input[slot] = String::new();
                changed = true;
            }
        }
        if changed {
            rewritten.push(node_label(node));
        }
    }
    rewritten
}

fn first_dim(info: &crate::onnx::ValueInfoProto) -> Option<Dim> {
    tensor_type(info)?.shape?.first().cloned()
}

fn set_first_dim(info: &mut crate::onnx::ValueInfoProto, dim: &Dim) {
    if let Some(ty) = tensor_type(info) {
        if let Some(mut shape) = ty.shape {
            if let Some(first) = shape.first_mut() {
                *first = dim.clone();
            }
            let doc = info.doc_string.take();
            *info = value_info(info.name(), ty.elem_type, &shape);
            info.doc_string = doc;
        }
    }
}

/// The ops whose shape operand (input index) can carry the batch size.
fn shape_operand(op: &str) -> Option<usize> {
    match op {
        "Reshape" | "Expand" => Some(1),
        "ConstantOfShape" => Some(0),
        _ => None,
    }
}

/// Replaces a leading `size` in the literal shape constants of Reshape, Expand
/// and ConstantOfShape, where the node's output has the batch in front, by the
/// batch at run time, and returns the rewritten nodes' labels. A Reshape that
/// keeps its input's leading dimension gets 0 ("copy"); the others read the
/// batch from the input.
fn rewrite_leading_batch(
    graph: &mut GraphProto,
    shapes: &ValueShapes,
    size: i64,
    reader: &mut BatchReader,
) -> Vec<String> {
    let literal = literal_values(graph);
    let mut rewritten = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for mut node in std::mem::take(&mut graph.node) {
        let Some(slot) = shape_operand(node.op_type()) else {
            nodes.push(node);
            continue;
        };
        let target = node.input.get(slot).cloned().unwrap_or_default();
        let leads_with_batch = node
            .output
            .first()
            .and_then(|o| shapes.shape(o))
            .and_then(|s| s.first())
            == Some(&Dim::Fixed(size));
        let values = shapes.const_ints(&target).map(<[i64]>::to_vec);
        let Some(values) = values
            .filter(|v| literal.contains(&target) && leads_with_batch && v.first() == Some(&size))
        else {
            nodes.push(node);
            continue;
        };
        let copies_input = node.op_type() == "Reshape"
            && crate::onnx::attr_int(&node, "allowzero", 0) == 0
            && shapes
                .shape(node.input.first().map_or("", String::as_str))
                .and_then(|s| s.first())
                == Some(&Dim::Fixed(size));
        let first_new = reader.b.nodes.len();
        let new_target = if copies_input {
            let mut copied = values.clone();
            copied[0] = 0;
            reader.b.constant(
                "batch_shape",
                i64_tensor("", &[copied.len() as i64], &copied),
            )
        } else {
            reader.shape_with_batch(&values, 0, 1)
        };
        nodes.extend(reader.b.nodes.drain(first_new..));
        node.input[slot] = new_target;
        rewritten.push(node_label(&node));
        nodes.push(node);
    }
    graph.node = nodes;
    rewritten
}

/// Reshapes whose literal target carries the batch inside a product (attention's
/// `[B * heads, L, d]`): at a trial batch size the element counts disagree, and
/// the one element that restores them at `trial / size` times its value is
/// the batch's. Each such target is rewritten to `batch * (element / size)`,
/// one node at a time in graph order, re-inferring after each.
fn rewrite_merged_batch(
    graph: &mut GraphProto,
    opset: i64,
    size: i64,
    inputs: &[String],
    reader: &mut BatchReader,
) -> Vec<String> {
    let trial = size + 3;
    let mut rewritten = Vec::new();
    let reshapes = graph
        .node
        .iter()
        .filter(|n| n.op_type() == "Reshape")
        .count();
    for _ in 0..reshapes {
        let mut probe = graph.clone();
        probe.node.splice(0..0, reader.front.iter().cloned());
        probe
            .initializer
            .extend(reader.b.initializers.iter().cloned());
        for info in probe
            .input
            .iter_mut()
            .filter(|i| inputs.iter().any(|n| n == i.name()))
        {
            set_first_dim(info, &Dim::Fixed(trial));
        }
        let shapes = ValueShapes::infer(&probe, opset);
        let literal = literal_values(&probe);
        let found = graph.node.iter().enumerate().find_map(|(index, node)| {
            if node.op_type() != "Reshape" {
                return None;
            }
            let target = node.input.get(1)?;
            if !literal.contains(target) {
                return None;
            }
            let values = shapes.const_ints(target)?.to_vec();
            let have = static_count(shapes.shape(node.input.first()?)?)?;
            let want = values
                .iter()
                .try_fold(1i64, |acc, &v| (v > 0).then(|| acc * v))?;
            if have == want {
                return None;
            }
            let fits = |i: usize| {
                values[i] % size == 0 && want / values[i] * (values[i] / size * trial) == have
            };
            // An element equal to the batch size itself is the likeliest
            // carrier ([T, B, F] has T a multiple of B as often as not).
            let at = (0..values.len())
                .filter(|&i| fits(i))
                .min_by_key(|&i| (values[i] != size, i))?;
            Some((index, values, at))
        });
        let Some((index, values, at)) = found else {
            break;
        };
        let first_new = reader.b.nodes.len();
        let new_target = reader.shape_with_batch(&values, at, values[at] / size);
        let new_nodes: Vec<NodeProto> = reader.b.nodes.drain(first_new..).collect();
        graph.node[index].input[1] = new_target;
        rewritten.push(node_label(&graph.node[index]));
        graph.node.splice(index..index, new_nodes);
    }
    rewritten
}

fn static_count(dims: &[Dim]) -> Option<i64> {
    dims.iter().try_fold(1i64, |acc, d| match d {
        Dim::Fixed(v) => acc.checked_mul(*v),
        _ => None,
    })
}

/// Shape inference at two batch sizes other than `size`: every node that had a
/// shape keeps one, every Reshape keeps its element count, and every output that
/// led with the batch leads with the new one. The first node that fails pins the batch.
fn prove(graph: &GraphProto, opset: i64, size: i64, inputs: &[String]) -> Result<()> {
    let reference = ValueShapes::infer(graph, opset);
    for trial in [size + 3, 2 * size + 5] {
        let mut probe = graph.clone();
        for info in probe
            .input
            .iter_mut()
            .filter(|i| inputs.iter().any(|n| n == i.name()))
        {
            set_first_dim(info, &Dim::Fixed(trial));
        }
        let shapes = ValueShapes::infer(&probe, opset);
        for node in &probe.node {
            if let Some(reason) = pinned(node, &reference, &shapes) {
                return Err(Error::patch(format!(
                    "the batch size {size} is built into {} ({reason}), so the model cannot take \
                     other batch sizes; {DYNAMIC_BATCH_EXPORT}",
                    node_label(node)
                )));
            }
        }
        for output in &probe.output {
            let declared = tensor_type(output)
                .and_then(|t| t.shape)
                .unwrap_or_default();
            let inferred = shapes.shape(output.name()).unwrap_or_default();
            let symbol = Dim::Symbolic(BATCH_SYMBOL.to_string());
            let disagrees = declared.len() == inferred.len()
                && declared.iter().zip(inferred).any(|(d, i)| match (d, i) {
                    (d, Dim::Fixed(n)) if *d == symbol => *n != trial,
                    (Dim::Fixed(a), Dim::Fixed(b)) => a != b,
                    _ => false,
                });
            if disagrees {
                let shown = |dims: &[Dim]| {
                    dims.iter()
                        .map(Dim::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(Error::patch(format!(
                    "output '{}' [{}] comes out as [{}] at batch size {trial}: the batch size {size} \
                     is built into the graph; {DYNAMIC_BATCH_EXPORT}",
                    output.name(),
                    shown(&declared),
                    shown(inferred)
                )));
            }
        }
    }
    Ok(())
}

/// Why `node` fails at the trial batch size, if it does.
fn pinned(node: &NodeProto, reference: &ValueShapes, trial: &ValueShapes) -> Option<String> {
    for output in node.output.iter().filter(|o| !o.is_empty()) {
        if reference.shape(output).is_some() && trial.shape(output).is_none() {
            return Some(format!(
                "its output '{output}' has no shape at another batch size"
            ));
        }
    }
    if node.op_type() == "Reshape" {
        let count = |name: &str| -> Option<i64> {
            trial.shape(name)?.iter().try_fold(1i64, |acc, d| match d {
                Dim::Fixed(v) => acc.checked_mul(*v),
                _ => None,
            })
        };
        let (input, output) = (node.input.first()?, node.output.first()?);
        if let (Some(a), Some(b)) = (count(input), count(output)) {
            if a != b {
                return Some(format!(
                    "it reshapes {a} elements into {b} at another batch size"
                ));
            }
        }
    }
    None
}
