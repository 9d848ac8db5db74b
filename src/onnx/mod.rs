//! ONNX model handling: the prost message types generated from the vendored
//! `onnx.proto`, loading and saving, tensors and types, a small graph builder, and
//! a structural validator.

pub mod builder;
pub mod integrity;
pub mod io;
pub mod tensor;
pub mod types;

/// Message types generated at build time from `src/onnx/onnx.proto` (ONNX 1.23.2).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TypeProto, ValueInfoProto,
};

/// The default-domain opset version the model imports, if any.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
}

/// Reads a model's `metadata_props` entry.
pub fn metadata<'m>(model: &'m ModelProto, key: &str) -> Option<&'m str> {
    model
        .metadata_props
        .iter()
        .find(|p| p.key() == key)
        .map(|p| p.value())
}

/// Finds a node attribute by name.
pub fn attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

/// An integer attribute, or `default` when absent (the ONNX default at the call).
pub fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.int_attr(name, default)
}

/// Typed readers of a node's attributes, the ONNX default given at the call
/// (`node.int_attr("axis", 1)`); every pass reads attributes through these.
pub trait NodeAttributes {
    fn int_attr(&self, name: &str, default: i64) -> i64;
    fn float_attr(&self, name: &str, default: f32) -> f32;
    /// A list of integers; `None` when absent.
    fn ints_attr(&self, name: &str) -> Option<&[i64]>;
    /// A string attribute; `None` when absent (or not UTF-8, which no ONNX
    /// enumeration is).
    fn string_attr(&self, name: &str) -> Option<&str>;
    fn tensor_attr(&self, name: &str) -> Option<&TensorProto>;
}

impl NodeAttributes for NodeProto {
    fn int_attr(&self, name: &str, default: i64) -> i64 {
        attribute(self, name).and_then(|a| a.i).unwrap_or(default)
    }
    fn float_attr(&self, name: &str, default: f32) -> f32 {
        attribute(self, name).and_then(|a| a.f).unwrap_or(default)
    }
    fn ints_attr(&self, name: &str) -> Option<&[i64]> {
        attribute(self, name).map(|a| a.ints.as_slice())
    }
    fn string_attr(&self, name: &str) -> Option<&str> {
        attribute(self, name)
            .and_then(|a| a.s.as_deref())
            .and_then(|s| std::str::from_utf8(s).ok())
    }
    fn tensor_attr(&self, name: &str) -> Option<&TensorProto> {
        attribute(self, name).and_then(|a| a.t.as_ref())
    }
}

/// A human-readable node label for error messages: its name, or its first output.
pub fn node_label(node: &NodeProto) -> String {
    match node.name() {
        "" => format!(
            "{} node producing '{}'",
            node.op_type(),
            node.output.first().map(String::as_str).unwrap_or("?")
        ),
        name => format!("{} node '{}'", node.op_type(), name),
    }
}

/// Drops the nodes no graph output depends on (subgraph reads count as reads).
pub fn retain_nodes_reaching_outputs(graph: &mut GraphProto) {
    let mut needed: std::collections::HashSet<String> =
        graph.output.iter().map(|o| o.name().to_string()).collect();
    let mut keep = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(node.input.iter().filter(|s| !s.is_empty()).cloned());
            for attr in &node.attribute {
                for sub in attr.g.iter().chain(&attr.graphs) {
                    needed.extend(sub.node.iter().flat_map(|n| n.input.iter().cloned()));
                }
            }
        }
    }
    let mut index = 0;
    graph.node.retain(|_| {
        let kept = keep[index];
        index += 1;
        kept
    });
}
