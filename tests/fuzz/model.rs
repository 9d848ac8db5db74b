//! Structure-aware mutations of an ONNX model: attributes, dimensions,
//! initializer payloads, op types and domains, edges, duplicate names, opsets,
//! IR version, value types and shapes, nodes, graph inputs and outputs, and the
//! `ldam_onnx.*` metadata that patched and compiled models carry.
//!
//! Every mutation is a function `(model, rng) -> Option<description>`; `None`
//! means it did not apply to this model, and another is drawn.

use super::rng::Rng;
use ::bytes::Bytes;
use ldam_onnx::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_shape_proto, type_proto,
    FunctionProto, SparseTensorProto, TensorShapeProto,
};
use ldam_onnx::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TypeProto, ValueInfoProto,
};

type Mutator = fn(&mut ModelProto, &mut Rng) -> Option<String>;

/// The mutations with their weights.
const MUTATORS: &[(&str, u32, Mutator)] = &[
    ("attribute value", 12, attribute_value),
    ("attribute type", 6, attribute_type),
    ("attribute removal", 5, attribute_removal),
    ("attribute added", 3, attribute_added),
    ("initializer dims", 12, initializer_dims),
    ("initializer payload", 12, initializer_payload),
    ("initializer data type", 6, initializer_data_type),
    ("external data", 3, external_data),
    ("op type", 8, op_type),
    ("domain", 4, domain),
    ("edge", 10, edge),
    ("parameter source", 6, parameter_source),
    ("equivalent rewrite", 8, equivalent_rewrite),
    ("cycle", 4, cycle),
    ("duplicate name", 6, duplicate_name),
    ("opset", 6, opset),
    ("ir version", 3, ir_version),
    ("value info", 10, value_info),
    ("node removal", 6, node_removal),
    ("node duplication", 4, node_duplication),
    ("node order", 3, node_order),
    ("graph io", 6, graph_io),
    ("metadata", 10, metadata),
    ("constant value", 6, constant_value),
    ("subgraph", 2, subgraph),
    ("extras", 2, extras),
];

/// Applies one to three mutations; returns their descriptions.
pub fn mutate(model: &mut ModelProto, rng: &mut Rng) -> Vec<String> {
    let weights: Vec<u32> = MUTATORS.iter().map(|m| m.1).collect();
    let wanted = *rng.pick(&[1, 1, 1, 2, 2, 3]);
    let mut log = Vec::new();
    let mut attempts = 0;
    while log.len() < wanted && attempts < 40 {
        attempts += 1;
        let (name, _, mutator) = MUTATORS[rng.weighted(&weights)];
        if let Some(what) = mutator(model, rng) {
            log.push(format!("{name}: {what}"));
        }
    }
    log
}

// ---------------------------------------------------------------------------
// Helpers

fn graph(model: &mut ModelProto) -> Option<&mut GraphProto> {
    model.graph.as_mut()
}

fn node_index(g: &GraphProto, rng: &mut Rng) -> Option<usize> {
    if g.node.is_empty() {
        return None;
    }
    // The head and the appended loss nodes sit at the end: favour them a little.
    Some(if rng.chance(0.25) {
        g.node.len() - 1 - rng.below(g.node.len().min(12))
    } else {
        rng.below(g.node.len())
    })
}

fn label(node: &NodeProto) -> String {
    format!(
        "{} '{}'",
        node.op_type(),
        if node.name().is_empty() {
            node.output.first().map(String::as_str).unwrap_or("")
        } else {
            node.name()
        }
    )
}

/// Every value name the graph mentions.
fn value_names(g: &GraphProto) -> Vec<String> {
    let mut names: Vec<String> = g
        .input
        .iter()
        .chain(&g.output)
        .map(|v| v.name().to_string())
        .collect();
    names.extend(g.initializer.iter().map(|t| t.name().to_string()));
    for node in &g.node {
        names.extend(node.output.iter().cloned());
    }
    names.retain(|n| !n.is_empty());
    names
}

fn other_name(g: &GraphProto, rng: &mut Rng) -> String {
    let names = value_names(g);
    if names.is_empty() || rng.chance(0.15) {
        rng.pick(&["", "does_not_exist", "labels", "epoch", "loss", "lr"])
            .to_string()
    } else {
        rng.pick(&names).clone()
    }
}

fn interesting_string(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => String::new(),
        1 => "x".repeat(rng.range(1, 300)),
        2 => "ldam/".to_string(),
        3 => "\u{0}\u{ffff}é/..".to_string(),
        4 => "train/loss".to_string(),
        _ => format!("n{}", rng.next_u64()),
    }
}

fn tensor_mut<'g>(g: &'g mut GraphProto, rng: &mut Rng) -> Option<&'g mut TensorProto> {
    if g.initializer.is_empty() {
        return None;
    }
    let i = rng.below(g.initializer.len());
    Some(&mut g.initializer[i])
}

/// Dims: one entry replaced, a dim added or removed, or all cleared.
fn mutate_dims(dims: &mut Vec<i64>, rng: &mut Rng) -> String {
    let before = format!("{dims:?}");
    match rng.below(6) {
        0 | 1 | 2 if !dims.is_empty() => {
            let k = rng.below(dims.len());
            dims[k] = rng.interesting_dim();
        }
        3 => dims.push(rng.interesting_dim()),
        4 if !dims.is_empty() => {
            dims.remove(rng.below(dims.len()));
        }
        5 => dims.clear(),
        _ => {
            let k = rng.below(dims.len().max(1)).min(dims.len());
            dims.insert(k, rng.interesting_dim());
        }
    }
    format!("{before} -> {dims:?}")
}

const DATA_TYPES: &[i32] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 21, 23, 28, 29, 99, -1,
];

/// The payload of a tensor changed in one of the ways a broken exporter or a
/// truncated file produces.
fn mutate_payload(t: &mut TensorProto, rng: &mut Rng) -> String {
    let raw_len = t.raw_data.as_ref().map_or(0, Bytes::len);
    match rng.below(9) {
        0 if raw_len > 0 => {
            let keep = *rng.pick(&[0, raw_len / 2, raw_len - 1, raw_len.saturating_sub(3)]);
            t.raw_data = Some(t.raw_data.as_ref().unwrap().slice(..keep));
            format!("raw_data truncated {raw_len} -> {keep} bytes")
        }
        1 if raw_len > 0 => {
            let mut raw = t.raw_data.as_ref().unwrap().to_vec();
            let extra = rng.range(1, 9);
            raw.extend(rng.bytes(extra));
            t.raw_data = Some(Bytes::from(raw));
            format!("raw_data extended by {extra} bytes")
        }
        2 => {
            // Typed field with the wrong length instead of raw_data.
            let n = (raw_len / 4) as i64 + *rng.pick(&[-1i64, 1, 0, -100, 7]);
            let n = n.clamp(0, 1 << 16) as usize;
            t.raw_data = None;
            t.float_data = vec![0.5; n];
            format!("raw_data -> float_data of {n} values")
        }
        3 => {
            let n = rng.range(0, 9);
            t.int64_data = (0..n).map(|_| rng.interesting_i64()).collect();
            if rng.chance(0.5) {
                t.raw_data = None;
            }
            format!("int64_data = {:?}", t.int64_data)
        }
        4 => {
            t.int32_data = vec![rng.interesting_i64() as i32; rng.range(0, 5)];
            t.double_data = vec![f64::NAN; rng.range(0, 3)];
            format!(
                "int32_data {} and double_data {} values added",
                t.int32_data.len(),
                t.double_data.len()
            )
        }
        5 => {
            t.string_data = vec![Bytes::from_static(b"\xff\xfe"); rng.range(0, 3)];
            if rng.chance(0.5) {
                t.data_type = Some(8);
            }
            format!("string_data {} entries", t.string_data.len())
        }
        6 => {
            t.raw_data = None;
            t.float_data.clear();
            t.int64_data.clear();
            "payload removed".to_string()
        }
        7 => {
            t.segment = Some(ldam_onnx::onnx::proto::tensor_proto::Segment {
                begin: Some(rng.interesting_i64()),
                end: Some(rng.interesting_i64()),
            });
            "segment set".to_string()
        }
        _ => {
            let values: Vec<u8> = (0..raw_len.min(64))
                .flat_map(|_| rng.interesting_f32().to_le_bytes())
                .collect();
            let n = values.len();
            if raw_len > 0 {
                let mut raw = t.raw_data.as_ref().unwrap().to_vec();
                let k = n.min(raw.len());
                raw[..k].copy_from_slice(&values[..k]);
                t.raw_data = Some(Bytes::from(raw));
            }
            "raw_data values set to NaN/inf/extremes".to_string()
        }
    }
}

// ---------------------------------------------------------------------------
// Attributes

fn pick_attribute<'g>(
    g: &'g mut GraphProto,
    rng: &mut Rng,
) -> Option<(String, &'g mut AttributeProto)> {
    let with: Vec<usize> = (0..g.node.len())
        .filter(|&i| !g.node[i].attribute.is_empty())
        .collect();
    if with.is_empty() {
        return None;
    }
    let node = &mut g.node[*rng.pick(&with)];
    let node_label = label(node);
    let k = rng.below(node.attribute.len());
    Some((node_label, &mut node.attribute[k]))
}

fn attribute_value(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let (node, attr) = pick_attribute(g, rng)?;
    let name = attr.name().to_string();
    let what = if attr.i.is_some() {
        attr.i = Some(rng.interesting_i64());
        format!("i = {}", attr.i.unwrap())
    } else if attr.f.is_some() {
        attr.f = Some(rng.interesting_f32());
        format!("f = {}", attr.f.unwrap())
    } else if !attr.ints.is_empty() || attr.r#type == Some(AttributeType::Ints as i32) {
        match rng.below(4) {
            0 => attr.ints.clear(),
            1 => attr.ints.push(rng.interesting_i64()),
            2 => attr.ints.truncate(attr.ints.len().saturating_sub(1)),
            _ => {
                if !attr.ints.is_empty() {
                    let k = rng.below(attr.ints.len());
                    attr.ints[k] = rng.interesting_i64();
                }
            }
        }
        format!("ints = {:?}", attr.ints)
    } else if !attr.floats.is_empty() {
        let k = rng.below(attr.floats.len());
        attr.floats[k] = rng.interesting_f32();
        format!("floats = {:?}", attr.floats)
    } else if attr.s.is_some() {
        let choices: [&[u8]; 6] = [b"", b"\xff\xfe", b"NOTSET", b"SAME_UPPER", b"none", b"mean"];
        let s = *rng.pick(&choices);
        attr.s = Some(Bytes::copy_from_slice(s));
        format!("s = {:?}", String::from_utf8_lossy(s))
    } else if let Some(t) = attr.t.as_mut() {
        if rng.chance(0.5) {
            format!("t.dims {}", mutate_dims(&mut t.dims, rng))
        } else {
            format!("t {}", mutate_payload(t, rng))
        }
    } else {
        return None;
    };
    Some(format!("{node} attribute '{name}' {what}"))
}

fn attribute_type(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let (node, attr) = pick_attribute(g, rng)?;
    let name = attr.name().to_string();
    let what = match rng.below(4) {
        0 => {
            let code = *rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 99, -1]);
            attr.r#type = Some(code);
            format!("type code -> {code}")
        }
        1 => {
            // The value moved to another field, the type code left alone.
            let i = attr.i.take();
            let ints = std::mem::take(&mut attr.ints);
            attr.ints = i.into_iter().collect();
            attr.i = ints.first().copied();
            attr.f = attr.f.or(Some(1.5));
            "value moved between i/ints, f added".to_string()
        }
        2 => {
            attr.i = None;
            attr.f = None;
            attr.ints.clear();
            attr.floats.clear();
            attr.s = None;
            attr.t = None;
            "every value field cleared".to_string()
        }
        _ => {
            attr.s = Some(Bytes::from_static(b"7"));
            attr.r#type = Some(AttributeType::String as i32);
            "now a string '7'".to_string()
        }
    };
    Some(format!("{node} attribute '{name}' {what}"))
}

fn attribute_removal(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let with: Vec<usize> = (0..g.node.len())
        .filter(|&i| !g.node[i].attribute.is_empty())
        .collect();
    if with.is_empty() {
        return None;
    }
    let node = &mut g.node[*rng.pick(&with)];
    let k = rng.below(node.attribute.len());
    let removed = node.attribute.remove(k);
    Some(format!(
        "{} lost attribute '{}'",
        label(node),
        removed.name()
    ))
}

fn attribute_added(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let i = node_index(g, rng)?;
    let node = &mut g.node[i];
    let attr = if !node.attribute.is_empty() && rng.chance(0.5) {
        // A second attribute of the same name with another value.
        let mut copy = node.attribute[rng.below(node.attribute.len())].clone();
        copy.i = Some(rng.interesting_i64());
        copy.ints.push(rng.interesting_i64());
        copy
    } else {
        let name = *rng.pick(&[
            "axis",
            "transB",
            "training_mode",
            "epsilon",
            "group",
            "pads",
            "kernel_shape",
            "to",
            "value",
            "fuzz",
        ]);
        AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(rng.interesting_i64()),
            ..Default::default()
        }
    };
    let name = attr.name().to_string();
    node.attribute.push(attr);
    Some(format!("{} gained attribute '{name}'", label(node)))
}

// ---------------------------------------------------------------------------
// Initializers

fn initializer_dims(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let t = tensor_mut(graph(model)?, rng)?;
    let what = mutate_dims(&mut t.dims, rng);
    Some(format!("'{}' dims {what}", t.name()))
}

fn initializer_payload(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let t = tensor_mut(graph(model)?, rng)?;
    let what = mutate_payload(t, rng);
    Some(format!("'{}' {what}", t.name()))
}

fn initializer_data_type(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let t = tensor_mut(graph(model)?, rng)?;
    let before = t.data_type();
    t.data_type = if rng.chance(0.1) {
        None
    } else {
        Some(*rng.pick(DATA_TYPES))
    };
    Some(format!(
        "'{}' data_type {before} -> {:?}",
        t.name(),
        t.data_type
    ))
}

fn external_data(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let t = tensor_mut(graph(model)?, rng)?;
    t.data_location = Some(DataLocation::External as i32);
    let location = *rng.pick(&[
        "model.onnx",
        "missing.bin",
        "../outside.bin",
        "/etc/hostname",
        "",
        "sub/../model.onnx",
        ".",
    ]);
    let mut entries = vec![("location", location.to_string())];
    if rng.chance(0.7) {
        entries.push(("offset", rng.interesting_i64().to_string()));
    }
    if rng.chance(0.7) {
        let length = *rng.pick(&["0", "4", "16", "40", "18446744073709551615", "-4", "x"]);
        entries.push(("length", length.to_string()));
    }
    if rng.chance(0.3) {
        entries.retain(|e| e.0 != "location");
    }
    if rng.chance(0.5) {
        t.raw_data = None;
    }
    t.external_data = entries
        .iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v.clone()),
        })
        .collect();
    Some(format!("'{}' external {entries:?}", t.name()))
}

// ---------------------------------------------------------------------------
// Ops

const OPS: &[&str] = &[
    "Relu",
    "Gemm",
    "Conv",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Softmax",
    "LogSoftmax",
    "BatchNormalization",
    "Reshape",
    "Flatten",
    "Concat",
    "Split",
    "Transpose",
    "Identity",
    "GlobalAveragePool",
    "MaxPool",
    "AveragePool",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "Constant",
    "Shape",
    "Gather",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "Pad",
    "Cast",
    "ConstantOfShape",
    "Expand",
    "Where",
    "Equal",
    "SoftmaxCrossEntropyLoss",
    "NegativeLogLikelihoodLoss",
    "OneHot",
    "Sqrt",
    "Pow",
    "Exp",
    "Log",
    "Max",
    "Min",
    "Clip",
    "Sum",
    "Einsum",
    "If",
    "Loop",
    "Scan",
    "Range",
    "TopK",
    "ArgMax",
    "ConvTranspose",
    "LayerNormalization",
    "LpNormalization",
    "Resize",
    "Tile",
    "ScatterND",
    "GatherElements",
    "CumSum",
    "Neg",
    "Abs",
    "Reciprocal",
    "Greater",
    "NonZero",
    "Erf",
    "Gelu",
    "PRelu",
    "Upsample",
    "BatchNorm",
    "FancyFuzzOp",
    "",
    "relu",
];

fn op_type(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let i = node_index(g, rng)?;
    let node = &mut g.node[i];
    let before = label(node);
    node.op_type = Some(rng.pick(OPS).to_string());
    Some(format!("{before} -> {}", node.op_type()))
}

const DOMAINS: &[&str] = &[
    "",
    "ai.onnx",
    "com.microsoft",
    "ai.onnx.ml",
    "ai.onnx.preview.training",
    "org.pytorch.aten",
    "custom.fuzz",
];

fn domain(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let domain = rng.pick(DOMAINS).to_string();
    if rng.chance(0.5) {
        model.opset_import.push(OperatorSetIdProto {
            domain: Some(domain.clone()),
            version: Some(rng.range(1, 3) as i64),
        });
    }
    let g = graph(model)?;
    let i = node_index(g, rng)?;
    let node = &mut g.node[i];
    node.domain = Some(domain.clone());
    Some(format!("{} domain '{domain}'", label(node)))
}

// ---------------------------------------------------------------------------
// Edges and names

fn edge(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let i = node_index(g, rng)?;
    let replacement = if rng.chance(0.2) {
        g.node[i].output.first().cloned().unwrap_or_default() // self loop
    } else {
        other_name(g, rng)
    };
    let node = &mut g.node[i];
    if rng.chance(0.75) || node.output.is_empty() {
        let before = node.input.len();
        let k = rng.below(before + 1);
        if k == before {
            node.input.push(replacement.clone());
            Some(format!("{} extra input '{replacement}'", label(node)))
        } else if rng.chance(0.15) {
            node.input.remove(k);
            Some(format!("{} lost input {k}", label(node)))
        } else {
            node.input[k] = replacement.clone();
            Some(format!("{} input {k} -> '{replacement}'", label(node)))
        }
    } else {
        let k = rng.below(node.output.len());
        node.output[k] = replacement.clone();
        Some(format!("{} output {k} -> '{replacement}'", label(node)))
    }
}

/// A parameter input (an initializer) fed by a computed value instead: a graph
/// input or an earlier node's output, so that the graph stays in order.
fn parameter_source(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let initializers: std::collections::HashSet<String> =
        g.initializer.iter().map(|t| t.name().to_string()).collect();
    let slots: Vec<(usize, usize)> = g
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.input
                .iter()
                .enumerate()
                .filter(|(_, x)| initializers.contains(*x))
                .map(move |(k, _)| (i, k))
        })
        .collect();
    if slots.is_empty() {
        return None;
    }
    let (i, k) = *rng.pick(&slots);
    let mut sources: Vec<String> = g
        .input
        .iter()
        .map(|v| v.name().to_string())
        .filter(|n| !initializers.contains(n))
        .collect();
    sources.extend(g.node[..i].iter().flat_map(|n| n.output.iter().cloned()));
    sources.retain(|n| !n.is_empty());
    if sources.is_empty() {
        return None;
    }
    let source = rng.pick(&sources).clone();
    let node = &mut g.node[i];
    let before = std::mem::replace(&mut node.input[k], source.clone());
    Some(format!(
        "{} input {k} '{before}' -> computed '{source}'",
        label(node)
    ))
}

/// A rewrite that keeps the model's meaning: an initializer read through an
/// Identity, a Constant node turned into an initializer or back, an Identity on
/// an edge. Valid models reach deeper code than broken ones.
fn equivalent_rewrite(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    match rng.below(4) {
        0 => {
            let t = g.initializer.get(rng.below(g.initializer.len().max(1)))?;
            let name = t.name().to_string();
            let via = format!("{name}/identity");
            let mut rewired = 0;
            for node in &mut g.node {
                for input in &mut node.input {
                    if *input == name {
                        *input = via.clone();
                        rewired += 1;
                    }
                }
            }
            g.node.insert(
                0,
                NodeProto {
                    op_type: Some("Identity".into()),
                    name: Some(format!("{name}/Identity")),
                    input: vec![name.clone()],
                    output: vec![via],
                    ..Default::default()
                },
            );
            Some(format!(
                "initializer '{name}' read through an Identity ({rewired} uses)"
            ))
        }
        1 => {
            let k = (0..g.node.len()).find(|&i| {
                g.node[i].op_type() == "Constant"
                    && g.node[i]
                        .attribute
                        .iter()
                        .any(|a| a.name() == "value" && a.t.is_some())
            })?;
            let node = g.node.remove(k);
            let mut t = node
                .attribute
                .iter()
                .find(|a| a.name() == "value")?
                .t
                .clone()?;
            t.name = node.output.first().cloned();
            let name = t.name().to_string();
            g.initializer.push(t);
            Some(format!("Constant '{name}' became an initializer"))
        }
        2 => {
            let t = g
                .initializer
                .get(rng.below(g.initializer.len().max(1)))?
                .clone();
            let name = t.name().to_string();
            g.initializer.retain(|x| x.name() != name);
            g.input.retain(|x| x.name() != name);
            g.node.insert(
                0,
                NodeProto {
                    op_type: Some("Constant".into()),
                    name: Some(format!("{name}/Constant")),
                    output: vec![name.clone()],
                    attribute: vec![AttributeProto {
                        name: Some("value".into()),
                        r#type: Some(AttributeType::Tensor as i32),
                        t: Some(TensorProto { name: None, ..t }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
            Some(format!("initializer '{name}' became a Constant node"))
        }
        _ => {
            let i = node_index(g, rng)?;
            let out = g.node[i].output.first()?.clone();
            let via = format!("{out}/identity");
            let mut rewired = 0;
            for node in &mut g.node[i + 1..] {
                for input in &mut node.input {
                    if *input == out {
                        *input = via.clone();
                        rewired += 1;
                    }
                }
            }
            if rewired == 0 {
                return None;
            }
            g.node.insert(
                i + 1,
                NodeProto {
                    op_type: Some("Identity".into()),
                    name: Some(format!("{out}/Identity")),
                    input: vec![out.clone()],
                    output: vec![via],
                    ..Default::default()
                },
            );
            Some(format!("Identity inserted after '{out}'"))
        }
    }
}

fn cycle(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    if g.node.len() < 2 {
        return None;
    }
    let a = rng.below(g.node.len() - 1);
    let b = rng.range(a + 1, g.node.len() - 1);
    let later = g.node[b].output.first()?.clone();
    let node = &mut g.node[a];
    if node.input.is_empty() {
        node.input.push(later.clone());
    } else {
        let k = rng.below(node.input.len());
        node.input[k] = later.clone();
    }
    Some(format!(
        "{} now reads '{later}' produced later",
        label(node)
    ))
}

fn duplicate_name(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    match rng.below(6) {
        0 if !g.initializer.is_empty() => {
            let mut copy = g.initializer[rng.below(g.initializer.len())].clone();
            if rng.chance(0.5) {
                mutate_dims(&mut copy.dims, rng);
            }
            let name = copy.name().to_string();
            g.initializer.push(copy);
            Some(format!("initializer '{name}' twice"))
        }
        1 if !g.input.is_empty() => {
            let copy = g.input[rng.below(g.input.len())].clone();
            let name = copy.name().to_string();
            g.input.push(copy);
            Some(format!("input '{name}' twice"))
        }
        2 if !g.output.is_empty() => {
            let copy = g.output[rng.below(g.output.len())].clone();
            let name = copy.name().to_string();
            g.output.push(copy);
            Some(format!("output '{name}' twice"))
        }
        3 if g.node.len() >= 2 => {
            let a = rng.below(g.node.len());
            let b = rng.below(g.node.len());
            let name = g.node[a].name().to_string();
            g.node[b].name = Some(name.clone());
            Some(format!("node name '{name}' twice"))
        }
        4 if !g.initializer.is_empty() && !g.node.is_empty() => {
            // An initializer named like a node's output: two producers.
            let i = rng.below(g.node.len());
            let out = g.node[i].output.first()?.clone();
            let t = tensor_mut(g, rng)?;
            let before = t.name().to_string();
            t.name = Some(out.clone());
            Some(format!(
                "initializer '{before}' renamed to node output '{out}'"
            ))
        }
        _ if !g.input.is_empty() => {
            let name = other_name(g, rng);
            let k = rng.below(g.input.len());
            let before = g.input[k].name().to_string();
            g.input[k].name = Some(name.clone());
            Some(format!("input '{before}' renamed to '{name}'"))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Versions

fn opset(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let default = model
        .opset_import
        .iter()
        .position(|o| matches!(o.domain(), "" | "ai.onnx"));
    match (rng.below(5), default) {
        (0, Some(k)) => {
            model.opset_import.remove(k);
            Some("default opset removed".to_string())
        }
        (1, _) => {
            model.opset_import.push(OperatorSetIdProto {
                domain: Some(rng.pick(&["", "ai.onnx"]).to_string()),
                version: Some(rng.interesting_i64()),
            });
            Some("second default opset entry".to_string())
        }
        (2, _) => {
            model.opset_import.clear();
            Some("opset_import cleared".to_string())
        }
        (_, Some(k)) => {
            let v = *rng.pick(&[
                0,
                1,
                6,
                7,
                9,
                11,
                12,
                13,
                14,
                17,
                18,
                20,
                21,
                22,
                23,
                24,
                25,
                99,
                -1,
                i64::MAX,
                i64::MIN,
            ]);
            model.opset_import[k].version = Some(v);
            Some(format!("default opset -> {v}"))
        }
        _ => None,
    }
}

fn ir_version(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let v = *rng.pick(&[0, -1, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 99, i64::MAX]);
    model.ir_version = Some(v);
    Some(format!("ir_version -> {v}"))
}

// ---------------------------------------------------------------------------
// Value types and shapes

fn value_info(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let pools = [g.input.len(), g.output.len(), g.value_info.len()];
    let which = rng.weighted(&pools.map(|n| (n > 0) as u32 * 10));
    let list = match which {
        0 => &mut g.input,
        1 => &mut g.output,
        _ => &mut g.value_info,
    };
    let k = rng.below(list.len());
    let info = &mut list[k];
    let name = info.name().to_string();
    let what = mutate_value_type(info, rng);
    Some(format!(
        "{} '{name}' {what}",
        ["input", "output", "value_info"][which]
    ))
}

fn mutate_value_type(info: &mut ValueInfoProto, rng: &mut Rng) -> String {
    let tensor = match info.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        Some(type_proto::Value::TensorType(t)) => Some(t),
        _ => None,
    };
    let Some(tensor) = tensor else {
        info.r#type = Some(tensor_type(1, Some(vec![Some(1)])));
        return "type set to float [1]".to_string();
    };
    match rng.below(8) {
        0 | 1 | 2 => {
            let shape = tensor.shape.get_or_insert_with(Default::default);
            if shape.dim.is_empty() || rng.chance(0.2) {
                shape.dim.push(dim_value(rng.interesting_dim()));
                return "dim added".to_string();
            }
            let d = rng.below(shape.dim.len());
            let value = match rng.below(5) {
                0 => tensor_shape_proto::dimension::Value::DimParam(interesting_string(rng)),
                1 => {
                    shape.dim[d].value = None;
                    return format!("dim {d} unknown");
                }
                _ => tensor_shape_proto::dimension::Value::DimValue(rng.interesting_dim()),
            };
            let shown = format!("{value:?}");
            shape.dim[d].value = Some(value);
            format!("dim {d} -> {shown}")
        }
        3 => {
            let shape = tensor.shape.get_or_insert_with(Default::default);
            if !shape.dim.is_empty() {
                shape.dim.remove(rng.below(shape.dim.len()));
            }
            "dim removed".to_string()
        }
        4 => {
            tensor.shape = None;
            "shape removed".to_string()
        }
        5 => {
            let elem = *rng.pick(DATA_TYPES);
            tensor.elem_type = Some(elem);
            format!("elem_type -> {elem}")
        }
        6 => {
            info.r#type = None;
            "type removed".to_string()
        }
        _ => {
            info.r#type = Some(TypeProto {
                value: Some(type_proto::Value::SequenceType(Box::new(
                    type_proto::Sequence {
                        elem_type: Some(Box::new(tensor_type(1, None))),
                    },
                ))),
                ..Default::default()
            });
            "type -> sequence of float".to_string()
        }
    }
}

fn dim_value(v: i64) -> tensor_shape_proto::Dimension {
    tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
        ..Default::default()
    }
}

fn tensor_type(elem: i32, dims: Option<Vec<Option<i64>>>) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(elem),
            shape: dims.map(|dims| TensorShapeProto {
                dim: dims
                    .into_iter()
                    .map(|d| tensor_shape_proto::Dimension {
                        value: d.map(tensor_shape_proto::dimension::Value::DimValue),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Nodes and graph inputs/outputs

fn node_removal(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let i = node_index(g, rng)?;
    let removed = g.node.remove(i);
    Some(format!("{} removed", label(&removed)))
}

fn node_duplication(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let i = node_index(g, rng)?;
    let copy = g.node[i].clone();
    let at = if rng.chance(0.5) { i + 1 } else { g.node.len() };
    let what = label(&copy);
    g.node.insert(at, copy);
    Some(format!("{what} duplicated"))
}

fn node_order(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    if g.node.len() < 2 {
        return None;
    }
    if rng.chance(0.3) {
        g.node.reverse();
        return Some("nodes reversed".to_string());
    }
    let from = rng.below(g.node.len());
    let node = g.node.remove(from);
    let to = rng.below(g.node.len() + 1);
    let what = label(&node);
    g.node.insert(to, node);
    Some(format!("{what} moved {from} -> {to}"))
}

fn graph_io(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    match rng.below(6) {
        0 if !g.output.is_empty() => {
            let removed = g.output.remove(rng.below(g.output.len()));
            Some(format!("output '{}' removed", removed.name()))
        }
        1 if !g.input.is_empty() => {
            let removed = g.input.remove(rng.below(g.input.len()));
            Some(format!("input '{}' removed", removed.name()))
        }
        2 => {
            let name = other_name(g, rng);
            g.output.push(ValueInfoProto {
                name: Some(name.clone()),
                r#type: Some(tensor_type(1, Some(vec![None, Some(10)]))),
                ..Default::default()
            });
            Some(format!("output '{name}' [?, 10] added"))
        }
        3 if !g.output.is_empty() => {
            let k = rng.below(g.output.len());
            let name = other_name(g, rng);
            g.output[k].name = Some(name.clone());
            Some(format!("output {k} renamed '{name}'"))
        }
        4 => {
            let name = rng
                .pick(&["labels", "epoch", "lr", "x", "input"])
                .to_string();
            g.input.push(ValueInfoProto {
                name: Some(name.clone()),
                r#type: Some(tensor_type(7, Some(vec![None]))),
                ..Default::default()
            });
            Some(format!("input '{name}' int64 [?] added"))
        }
        _ => {
            g.output.clear();
            Some("outputs cleared".to_string())
        }
    }
}

// ---------------------------------------------------------------------------
// Metadata written by patch and compile, and other model-level parts

fn metadata(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let props = &mut model.metadata_props;
    if props.is_empty() {
        let key = *rng.pick(&[
            "ldam_onnx.loss",
            "ldam_onnx.class_counts",
            "ldam_onnx.train.state",
        ]);
        props.push(StringStringEntryProto {
            key: Some(key.to_string()),
            value: Some("ldam".to_string()),
        });
        return Some(format!("metadata '{key}' added"));
    }
    let k = rng.below(props.len());
    let key = props[k].key().to_string();
    let value = props[k].value().to_string();
    let new = match rng.below(10) {
        0 => {
            props.remove(k);
            return Some(format!("metadata '{key}' removed"));
        }
        1 => {
            let mut copy = props[k].clone();
            copy.value = Some(format!("{value},1"));
            props.push(copy);
            return Some(format!("metadata '{key}' twice"));
        }
        2 => String::new(),
        3 => "garbage".to_string(),
        4 => format!("{value},0"),
        5 => value.split(',').skip(1).collect::<Vec<_>>().join(","),
        6 => rng
            .pick(&[
                "-1",
                "0",
                "1e400",
                "NaN",
                "99999999999999999999",
                "[",
                "[]",
                "{}",
            ])
            .to_string(),
        7 => value.replacen(|c: char| c.is_ascii_digit(), "9", 3),
        8 => format!("{value},does_not_exist"),
        _ => value.chars().rev().collect(),
    };
    props[k].value = Some(new.clone());
    let shown: String = new.chars().take(60).collect();
    Some(format!("metadata '{key}' = '{shown}'"))
}

fn constant_value(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let constants: Vec<usize> = (0..g.node.len())
        .filter(|&i| g.node[i].attribute.iter().any(|a| a.t.is_some()))
        .collect();
    if constants.is_empty() {
        return None;
    }
    let node = &mut g.node[*rng.pick(&constants)];
    let what = label(node);
    let t = node.attribute.iter_mut().find_map(|a| a.t.as_mut())?;
    let change = if rng.chance(0.5) {
        mutate_dims(&mut t.dims, rng)
    } else if rng.chance(0.5) {
        t.data_type = Some(*rng.pick(DATA_TYPES));
        format!("data_type {:?}", t.data_type)
    } else {
        mutate_payload(t, rng)
    };
    Some(format!("{what} value {change}"))
}

fn subgraph(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    let g = graph(model)?;
    let i = node_index(g, rng)?;
    // A chain of nested graphs (prost refuses nesting past 100 when decoding).
    let depth = *rng.pick(&[1, 2, 10, 40, 90, 120]);
    let mut inner = GraphProto {
        name: Some("inner".into()),
        node: vec![g.node[i].clone()],
        ..Default::default()
    };
    for _ in 1..depth {
        inner = GraphProto {
            name: Some("nest".into()),
            node: vec![NodeProto {
                op_type: Some("If".into()),
                attribute: vec![AttributeProto {
                    name: Some("then_branch".into()),
                    r#type: Some(AttributeType::Graph as i32),
                    g: Some(inner),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
    }
    let node = &mut g.node[i];
    node.attribute.push(AttributeProto {
        name: Some("body".into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(inner),
        ..Default::default()
    });
    Some(format!(
        "{} gained a subgraph nested {depth} deep",
        label(node)
    ))
}

fn extras(model: &mut ModelProto, rng: &mut Rng) -> Option<String> {
    match rng.below(3) {
        0 => {
            let g = graph(model)?;
            let t = g.initializer.first()?.clone();
            g.sparse_initializer.push(SparseTensorProto {
                values: Some(t.clone()),
                indices: Some(TensorProto {
                    name: Some("idx".into()),
                    dims: vec![rng.interesting_dim()],
                    data_type: Some(7),
                    ..Default::default()
                }),
                dims: vec![rng.interesting_dim(), 3],
            });
            Some(format!("sparse initializer '{}' added", t.name()))
        }
        1 => {
            model.functions.push(FunctionProto {
                name: Some("Relu".into()),
                domain: Some(String::new()),
                input: vec!["x".into()],
                output: vec!["x".into()],
                node: vec![NodeProto {
                    op_type: Some("Relu".into()),
                    input: vec!["x".into()],
                    output: vec!["x".into()],
                    ..Default::default()
                }],
                ..Default::default()
            });
            Some("function 'Relu' shadowing the op added".to_string())
        }
        _ => {
            model.graph = None;
            Some("graph removed".to_string())
        }
    }
}
