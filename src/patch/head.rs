//! Classifier-head detection: which value is the logits `[N, C]`, and which linear
//! layer (if any) produces it.

use crate::error::{Error, Result};
use crate::onnx::tensor::FLOAT;
use crate::onnx::types::{tensor_type, Dim, TensorType};
use crate::onnx::{attr_int, GraphProto, NodeProto};

/// The detected classifier head.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// The value holding the logits.
    pub logits: String,
    /// The graph output the logits were found through (itself, or a Softmax of it).
    pub output: String,
    /// Whether the logits themselves are a graph output.
    pub logits_is_output: bool,
    /// The op (Softmax/LogSoftmax) between the logits and the output, if any.
    pub activation: Option<String>,
    pub batch: Dim,
    pub classes: usize,
    /// The op type producing the logits; `None` when they are a graph input.
    pub producer_op: Option<String>,
    /// The final linear layer, when it is a Gemm or MatMul(+Add) with an initializer weight.
    pub linear: Option<LinearLayer>,
}

/// A final linear layer `logits = features @ W (+ b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLayer {
    /// Index of the node producing the logits (Gemm, MatMul or the Add after MatMul).
    pub node: usize,
    /// Index of the MatMul when the layer is MatMul + Add.
    pub matmul: Option<usize>,
    pub node_name: String,
    pub features: String,
    pub weight: String,
    pub weight_dims: Vec<i64>,
    /// Axis of the weight that runs over input features (normalised by the cosine head).
    pub feature_axis: usize,
    pub bias: Option<String>,
}

impl LinearLayer {
    /// Whether the weight is stored `[C, F]` (PyTorch's layout, `Gemm transB=1`).
    pub fn transposed(&self) -> bool {
        self.feature_axis == 1
    }
}

/// Finds the logits, either through `requested` (the setting `logits`) or as the single
/// float rank-2 output (looking through a trailing Softmax/LogSoftmax).
pub fn detect(graph: &GraphProto, requested: Option<&str>) -> Result<Head> {
    let candidates = candidates(graph);
    let chosen = match requested {
        Some(name) => candidates
            .iter()
            .find(|c| c.logits == name || c.output == name)
            .cloned()
            .ok_or_else(|| {
                Error::setting(
                    "logits",
                    format!(
                        "'{name}' is not a float [N, C] output (or the input of a final Softmax); candidates: {}",
                        list(&candidates)
                    ),
                )
            })?,
        None => match candidates.as_slice() {
            [one] => one.clone(),
            [] => {
                let outputs: Vec<String> = graph
                    .output
                    .iter()
                    .map(|o| match tensor_type(o) {
                        Some(t) => format!("'{}' {}", o.name(), t.describe()),
                        None => format!("'{}' (not a tensor)", o.name()),
                    })
                    .collect();
                return Err(Error::patch(format!(
                    "no float32 output of rank 2 [N, C] to use as logits; the outputs are: {}",
                    outputs.join(", ")
                )));
            }
            many => {
                return Err(Error::AmbiguousLogits {
                    candidates: list(many),
                })
            }
        },
    };
    Ok(Head {
        linear: linear_layer(graph, &chosen.logits),
        producer_op: producer(graph, &chosen.logits).map(|(_, n)| n.op_type().to_string()),
        ..chosen
    })
}

fn list(candidates: &[Head]) -> String {
    if candidates.is_empty() {
        return "none".to_string();
    }
    candidates
        .iter()
        .map(|c| match &c.activation {
            Some(op) => format!("'{}' ({op} of '{}')", c.output, c.logits),
            None => format!("'{}'", c.output),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn producer<'g>(graph: &'g GraphProto, value: &str) -> Option<(usize, &'g NodeProto)> {
    graph
        .node
        .iter()
        .enumerate()
        .find(|(_, n)| n.output.iter().any(|o| o == value))
}

fn consumers(graph: &GraphProto, value: &str) -> usize {
    graph
        .node
        .iter()
        .map(|n| n.input.iter().filter(|i| *i == value).count())
        .sum::<usize>()
        + graph.output.iter().filter(|o| o.name() == value).count()
}

fn candidates(graph: &GraphProto) -> Vec<Head> {
    graph
        .output
        .iter()
        .filter_map(|output| {
            let ty = tensor_type(output)?;
            let (batch, classes) = logits_dims(&ty)?;
            let (logits, activation) = match producer(graph, output.name()) {
                Some((_, node)) if is_class_softmax(node) => (
                    node.input.first()?.clone(),
                    Some(node.op_type().to_string()),
                ),
                _ => (output.name().to_string(), None),
            };
            let logits_is_output = graph.output.iter().any(|o| o.name() == logits);
            Some(Head {
                logits,
                output: output.name().to_string(),
                logits_is_output,
                activation,
                batch,
                classes,
                producer_op: None,
                linear: None,
            })
        })
        // A model exporting both logits and their softmax has one head, not
        // two; nor one exporting the logits again through Identity (a
        // deployed model keeps its export's output beside `logits`).
        .fold(Vec::new(), |mut heads: Vec<Head>, head| {
            let same = |h: &Head| {
                through_identity(graph, &h.logits) == through_identity(graph, &head.logits)
            };
            match heads.iter_mut().find(|h| same(h)) {
                Some(existing) if head.activation.is_none() => *existing = head,
                Some(_) => {}
                None => heads.push(head),
            }
            heads
        })
}

/// The value `name` copies, following Identity nodes back.
fn through_identity<'g>(graph: &'g GraphProto, mut name: &'g str) -> &'g str {
    for _ in 0..graph.node.len() {
        match producer(graph, name) {
            Some((_, node)) if node.op_type() == "Identity" => match node.input.first() {
                Some(input) => name = input,
                None => break,
            },
            _ => break,
        }
    }
    name
}

fn logits_dims(ty: &TensorType) -> Option<(Dim, usize)> {
    if ty.elem_type != FLOAT {
        return None;
    }
    match ty.shape.as_deref()? {
        [batch, Dim::Fixed(classes)] if *classes >= 2 => Some((batch.clone(), *classes as usize)),
        _ => None,
    }
}

/// Softmax or LogSoftmax over the last axis of a rank-2 value (axis 1 or -1; the
/// default is 1 before opset 13 and -1 since, both the class axis here).
fn is_class_softmax(node: &NodeProto) -> bool {
    matches!(node.op_type(), "Softmax" | "LogSoftmax")
        && matches!(attr_int(node, "axis", -1), 1 | -1)
}

fn initializer_dims(graph: &GraphProto, name: &str) -> Option<Vec<i64>> {
    graph
        .initializer
        .iter()
        .find(|t| t.name() == name)
        .map(|t| t.dims.clone())
}

/// The linear layer producing `logits`, if it has the shape the cosine rewrite needs.
fn linear_layer(graph: &GraphProto, logits: &str) -> Option<LinearLayer> {
    let (index, node) = producer(graph, logits)?;
    match node.op_type() {
        "Gemm" => {
            if attr_int(node, "transA", 0) != 0 {
                return None;
            }
            let weight = node.input.get(1)?;
            let weight_dims = initializer_dims(graph, weight).filter(|d| d.len() == 2)?;
            let bias = node.input.get(2).filter(|b| !b.is_empty()).cloned();
            Some(LinearLayer {
                node: index,
                matmul: None,
                node_name: node.name().to_string(),
                features: node.input.first()?.clone(),
                weight: weight.clone(),
                weight_dims,
                feature_axis: if attr_int(node, "transB", 0) != 0 {
                    1
                } else {
                    0
                },
                bias,
            })
        }
        "MatMul" => matmul_layer(graph, index, node, None),
        "Add" => {
            // MatMul + Add with an initializer bias, either operand order.
            let (matmul_input, bias) = match (node.input.first()?, node.input.get(1)?) {
                (a, b) if initializer_dims(graph, b).is_some() => (a, b),
                (a, b) if initializer_dims(graph, a).is_some() => (b, a),
                _ => return None,
            };
            let (matmul_index, matmul) = producer(graph, matmul_input)?;
            if matmul.op_type() != "MatMul" || consumers(graph, matmul_input) != 1 {
                return None;
            }
            let mut layer = matmul_layer(graph, matmul_index, matmul, Some(bias.clone()))?;
            layer.node = index;
            layer.matmul = Some(matmul_index);
            layer.node_name = node.name().to_string();
            Some(layer)
        }
        _ => None,
    }
}

fn matmul_layer(
    graph: &GraphProto,
    index: usize,
    node: &NodeProto,
    bias: Option<String>,
) -> Option<LinearLayer> {
    let weight = node.input.get(1)?;
    let weight_dims = initializer_dims(graph, weight).filter(|d| d.len() == 2)?;
    Some(LinearLayer {
        node: index,
        matmul: None,
        node_name: node.name().to_string(),
        features: node.input.first()?.clone(),
        weight: weight.clone(),
        weight_dims,
        feature_axis: 0,
        bias,
    })
}
