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
    attribute(node, name).and_then(|a| a.i).unwrap_or(default)
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
