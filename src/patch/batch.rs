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

use super::batch_axis;
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
    let Some((inputs, size)) = fixed_batch(graph)? else {
        return Ok(None);
    };
    let before = ValueShapes::infer(graph, opset);
    let literal = literal_values(graph);
    let replicated = |name: &str| {
        literal.contains(name)
            && literal_tensor(graph, name).is_some_and(|t| identical_rows(&t, size))
    };
    let flow = batch_axis::follow(
        graph,
        &before,
        size,
        &inputs,
        &|n| literal.contains(n),
        &replicated,
    )
    .map_err(|p| {
        Error::patch(format!(
            "the batch size {size} is built into {} ({}), so the model cannot take other \
                 batch sizes; {DYNAMIC_BATCH_EXPORT}",
            p.node, p.reason
        ))
    })?;
    for output in &graph.output {
        let leads = first_dim(output) == Some(Dim::Fixed(size));
        let carrier = flow.carriers.get(output.name());
        if leads && carrier != Some(&batch_axis::Carrier { dim: 0, inner: 1 }) {
            return Err(Error::patch(format!(
                "output '{}' does not hold one row per example (the batch reaches it as {carrier:?}); \
                 {DYNAMIC_BATCH_EXPORT}",
                output.name()
            )));
        }
    }
    let mut reader = BatchReader {
        b: Emitter::new(std::mem::take(names), PATCH_PREFIX, opset),
        source: inputs[0].clone(),
        batch: None,
        front: Vec::new(),
    };
    let mut rewritten = apply_rewrites(graph, &flow.rewrites, &mut reader);
    rewritten.extend(expand_replicated(
        graph,
        &flow.replicated,
        size,
        &mut reader,
    ));

    let symbolic = Dim::Symbolic(BATCH_SYMBOL.to_string());
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
    reader.finish(graph);
    *names = std::mem::take(&mut reader.b.names);
    prove(graph, opset, size, &inputs)?;
    Ok(Some(FreedBatch {
        inputs,
        size,
        rewritten,
    }))
}

/// The value of an initializer or a `Constant` node's output.
fn literal_tensor(graph: &GraphProto, name: &str) -> Option<crate::onnx::TensorProto> {
    use crate::onnx::NodeAttributes;
    if let Some(t) = graph.initializer.iter().find(|t| t.name() == name) {
        return Some(t.clone());
    }
    graph
        .node
        .iter()
        .find(|n| n.op_type() == "Constant" && n.output.iter().any(|o| o == name))
        .and_then(|n| n.tensor_attr("value").cloned())
}

/// Whether `tensor` is `[size, ...]` with every row's bytes equal to the first's
/// (false when its values are not in memory: external and not read).
fn identical_rows(tensor: &crate::onnx::TensorProto, size: i64) -> bool {
    if tensor.dims.first() != Some(&size) || size < 2 {
        return false;
    }
    let Some(bytes) = crate::onnx::tensor::le_bytes(tensor) else {
        return false;
    };
    let row = bytes.len() / size as usize;
    row > 0 && bytes.len() % row == 0 && bytes.chunks(row).all(|r| r == &bytes[..row])
}

/// Each replicated constant becomes its first row expanded to the batch at run
/// time, read by its consumer in its place.
fn expand_replicated(
    graph: &mut GraphProto,
    replicated: &[batch_axis::ReplicatedConstant],
    size: i64,
    reader: &mut BatchReader,
) -> Vec<String> {
    let mut rewritten = Vec::new();
    for constant in replicated {
        let Some(tensor) = literal_tensor(graph, &constant.name) else {
            continue;
        };
        // `identical_rows` read these bytes when it marked the constant replicated.
        let Some(bytes) = crate::onnx::tensor::le_bytes(&tensor) else {
            continue;
        };
        let row_len = bytes.len() / size as usize;
        let mut row_dims = tensor.dims.clone();
        row_dims[0] = 1;
        let first_row = crate::onnx::TensorProto {
            dims: row_dims,
            data_type: tensor.data_type,
            raw_data: Some(prost::bytes::Bytes::copy_from_slice(&bytes[..row_len])),
            ..Default::default()
        };
        let row = reader
            .b
            .constant(&format!("{}_row", constant.name), first_row);
        let first_new = reader.b.nodes.len();
        let shape = reader.shape_with_batch(&tensor.dims, 0, 1);
        let expanded = reader.b.op("Expand", &[&row, &shape], vec![], "batch_rows");
        let new_nodes: Vec<NodeProto> = reader.b.nodes.drain(first_new..).collect();
        // Emitted just before the consumer, whose index shifts by what went in before.
        let index = graph
            .node
            .iter()
            .position(|n| n.input.get(constant.slot) == Some(&constant.name))
            .unwrap_or(constant.node.min(graph.node.len()));
        graph.node[index].input[constant.slot] = expanded;
        rewritten.push(node_label(&graph.node[index]));
        graph.node.splice(index..index, new_nodes);
    }
    rewritten
}

/// The data inputs whose first dimension is a fixed batch, and its size.
fn fixed_batch(graph: &GraphProto) -> Result<Option<(Vec<String>, i64)>> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let fixed: Vec<(String, i64)> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name()))
        .filter_map(|input| match first_dim(input) {
            Some(Dim::Fixed(size)) => Some((input.name().to_string(), size)),
            _ => None,
        })
        .collect();
    let Some(&(_, size)) = fixed.first() else {
        return Ok(None);
    };
    // A first dimension is the batch only if the outputs lead with it too: a
    // time-major sequence input [T, N, F] fixes its length there instead.
    if !graph
        .output
        .iter()
        .any(|o| first_dim(o) == Some(Dim::Fixed(size)))
    {
        return Ok(None);
    }
    if let Some((name, other)) = fixed.iter().find(|(_, s)| *s != size) {
        return Err(Error::patch(format!(
            "the inputs fix different batch sizes ('{}' has {size}, '{name}' has {other}); {DYNAMIC_BATCH_EXPORT}",
            fixed[0].0
        )));
    }
    Ok(Some((fixed.into_iter().map(|(n, _)| n).collect(), size)))
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

/// Recurrent nodes' initial states that are provably zero are dropped: zeros
/// are what an absent initial state means, at any batch size, while the
/// exporters write them at the export's batch (the default exporter as an
/// initializer `zeros(1, B, H)`, the legacy one in eval mode as such a
/// constant expanded). Runs before the recurrent nodes are unrolled and the
/// batch is freed. Returns the nodes changed.
pub fn drop_zero_initial_states(graph: &mut GraphProto) -> Result<Vec<String>> {
    let zero: HashSet<String> = graph
        .node
        .iter()
        .filter(|n| matches!(n.op_type(), "LSTM" | "GRU" | "RNN"))
        .flat_map(|n| n.input.iter().skip(5).take(2))
        .filter(|name| !name.is_empty() && is_zero(graph, name, 0))
        .cloned()
        .collect();
    let mut rewritten = Vec::new();
    for node in graph.node.iter_mut() {
        if !matches!(node.op_type(), "LSTM" | "GRU" | "RNN") {
            continue;
        }
        let mut changed = false;
        for slot in [5, 6] {
            if node.input.get(slot).is_some_and(|i| zero.contains(i)) {
                node.input[slot] = String::new();
                changed = true;
            }
        }
        if changed {
            rewritten.push(node_label(node));
        }
    }
    if !rewritten.is_empty() {
        // The zeros' producers, written at the export's batch, would still run.
        crate::onnx::retain_nodes_reaching_outputs(graph);
    }
    Ok(rewritten)
}

/// Whether `name` holds only zeros whatever the inputs: a zero initializer or
/// Constant, a ConstantOfShape of zero, or an Expand of such a value.
fn is_zero(graph: &GraphProto, name: &str, depth: usize) -> bool {
    use crate::onnx::NodeAttributes;
    let all_zero = |t: &crate::onnx::TensorProto| {
        crate::onnx::tensor::f32_values(t).is_some_and(|v| v.iter().all(|&x| x == 0.0))
    };
    if depth > 8 || graph.input.iter().any(|i| i.name() == name) {
        return false;
    }
    if let Some(t) = literal_tensor(graph, name) {
        return all_zero(&t);
    }
    let Some(node) = graph
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == name))
    else {
        return false;
    };
    match node.op_type() {
        "ConstantOfShape" => node.tensor_attr("value").is_none_or(all_zero),
        "Expand" | "Identity" | "Cast" => node
            .input
            .first()
            .is_some_and(|i| is_zero(graph, i, depth + 1)),
        _ => false,
    }
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

/// Points each shape operand the tracker found at a value that follows the
/// batch at run time, and returns the rewritten nodes' labels.
fn apply_rewrites(
    graph: &mut GraphProto,
    rewrites: &[batch_axis::TargetRewrite],
    reader: &mut BatchReader,
) -> Vec<String> {
    let mut before: Vec<Vec<NodeProto>> = vec![Vec::new(); graph.node.len()];
    let mut rewritten = Vec::new();
    for rewrite in rewrites {
        let node = &mut graph.node[rewrite.node];
        let slot = if node.op_type() == "ConstantOfShape" {
            0
        } else {
            1
        };
        let first_new = reader.b.nodes.len();
        let target = if rewrite.factor == 0 {
            let values = &rewrite.values;
            reader.b.constant(
                "batch_shape",
                i64_tensor("", &[values.len() as i64], values),
            )
        } else {
            reader.shape_with_batch(&rewrite.values, rewrite.at, rewrite.factor)
        };
        before[rewrite.node].extend(reader.b.nodes.drain(first_new..));
        node.input[slot] = target;
        rewritten.push(node_label(node));
    }
    let mut nodes = Vec::with_capacity(graph.node.len());
    for (node, mut preceding) in std::mem::take(&mut graph.node).into_iter().zip(before) {
        nodes.append(&mut preceding);
        nodes.push(node);
    }
    graph.node = nodes;
    rewritten
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
