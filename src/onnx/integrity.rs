//! Declared sizes checked against the bytes a model actually holds.
//!
//! A model file declares tensor dims and value shapes; everything downstream
//! (shape inference, compile's state buffers, the runtimes) sizes memory from them.
//! A file that claims a 2^40-element initializer while holding 64 bytes must be
//! refused here, when it is read, before any code trusts the claim. So every tensor
//! (initializers, `Constant` values, sparse tensors, subgraphs included) must have
//! non-negative dims, an element count that fits in 64 bits, and a payload whose
//! length is exactly what its dims and element type require; declared value shapes
//! must have non-negative dims.

use super::proto::tensor_proto::DataType;
use super::proto::tensor_shape_proto::dimension;
use super::proto::type_proto;
use super::{GraphProto, TensorProto, TypeProto, ValueInfoProto};

/// Bits one element occupies in `raw_data` and how many elements one entry of its
/// typed field (`float_data`, `int32_data`, ...) holds, per the field comments of
/// `onnx.proto`. `None` for types the tool cannot size.
fn layout(data_type: i32) -> Option<(u64, TypedField, u64)> {
    use DataType::*;
    use TypedField::*;
    Some(match DataType::try_from(data_type).ok()? {
        Float => (32, Floats, 1),
        Complex64 => (64, Floats, 1), // two floats per element, see below
        Double => (64, Doubles, 1),
        Complex128 => (128, Doubles, 1),
        Int64 => (64, Int64s, 1),
        Uint32 => (32, Uint64s, 1),
        Uint64 => (64, Uint64s, 1),
        Int32 => (32, Int32s, 1),
        Int16 | Uint16 | Float16 | Bfloat16 => (16, Int32s, 1),
        Int8 | Uint8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
        | Float8e8m0 => (8, Int32s, 1),
        Float6e2m3 | Float6e3m2 => (6, Int32s, 1),
        Uint4 | Int4 | Float4e2m1 => (4, Int32s, 2),
        Uint2 | Int2 => (2, Int32s, 4),
        String => (0, Strings, 1),
        Undefined => return None,
    })
}

#[derive(Clone, Copy)]
enum TypedField {
    Floats,
    Doubles,
    Int32s,
    Int64s,
    Uint64s,
    Strings,
}

impl TypedField {
    fn len(self, t: &TensorProto) -> usize {
        match self {
            TypedField::Floats => t.float_data.len(),
            TypedField::Doubles => t.double_data.len(),
            TypedField::Int32s => t.int32_data.len(),
            TypedField::Int64s => t.int64_data.len(),
            TypedField::Uint64s => t.uint64_data.len(),
            TypedField::Strings => t.string_data.len(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            TypedField::Floats => "float_data",
            TypedField::Doubles => "double_data",
            TypedField::Int32s => "int32_data",
            TypedField::Int64s => "int64_data",
            TypedField::Uint64s => "uint64_data",
            TypedField::Strings => "string_data",
        }
    }
}

/// The number of elements the dims declare, refusing negative dims and overflow.
pub fn checked_element_count(dims: &[i64]) -> Result<u64, String> {
    dims.iter().try_fold(1u64, |count, &d| {
        let d = u64::try_from(d).map_err(|_| format!("dims {dims:?} include a negative size"))?;
        count
            .checked_mul(d)
            .ok_or_else(|| format!("dims {dims:?} overflow a 64-bit element count"))
    })
}

/// The payload length in bytes a tensor of these dims and type needs, or why it
/// cannot be sized (negative dims, overflow, a type without a fixed size).
pub fn payload_bytes(data_type: i32, dims: &[i64]) -> Result<u64, String> {
    let count = checked_element_count(dims)?;
    let (bits, _, _) = layout(data_type)
        .filter(|(bits, _, _)| *bits > 0)
        .ok_or_else(|| format!("element type {data_type} has no fixed size"))?;
    count
        .checked_mul(bits)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| format!("dims {dims:?} overflow a 64-bit byte count"))
}

/// Checks one tensor's dims against its payload; `external_len` is the byte length
/// of the span of a tensor stored outside the model file.
pub fn check_tensor(tensor: &TensorProto, external_len: Option<u64>) -> Result<(), String> {
    let data_type = tensor.data_type.unwrap_or(0);
    let count = checked_element_count(&tensor.dims)?;
    let (bits, field, per_entry) =
        layout(data_type).ok_or_else(|| format!("unknown element type {data_type}"))?;
    let needed_bytes = || {
        count
            .checked_mul(bits)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| format!("dims {:?} overflow a 64-bit byte count", tensor.dims))
    };
    if let Some(length) = external_len {
        if bits == 0 {
            return Err("string tensors cannot be stored externally".into());
        }
        let needed = needed_bytes()?;
        if length != needed {
            return Err(format!(
                "dims {:?} of {} need {needed} bytes, the external data holds {length}",
                tensor.dims,
                super::tensor::elem_type_name(data_type)
            ));
        }
        return Ok(());
    }
    if let Some(raw) = &tensor.raw_data {
        if bits == 0 {
            return Err("a string tensor cannot use raw_data".into());
        }
        let needed = needed_bytes()?;
        if raw.len() as u64 != needed {
            return Err(format!(
                "dims {:?} of {} need {needed} bytes, raw_data holds {}",
                tensor.dims,
                super::tensor::elem_type_name(data_type),
                raw.len()
            ));
        }
        return Ok(());
    }
    // Complex numbers take two typed entries each; packed sub-byte types share one.
    let entries_per_element = match DataType::try_from(data_type) {
        Ok(DataType::Complex64 | DataType::Complex128) => 2,
        _ => 1,
    };
    let needed = count
        .div_ceil(per_entry)
        .checked_mul(entries_per_element)
        .ok_or_else(|| format!("dims {:?} overflow a 64-bit count", tensor.dims))?;
    let held = field.len(tensor) as u64;
    if held != needed {
        return Err(format!(
            "dims {:?} of {} need {needed} entries of {}, it holds {held}",
            tensor.dims,
            super::tensor::elem_type_name(data_type),
            field.name()
        ));
    }
    Ok(())
}

/// Checks a declared value type: tensor shapes must not have negative dims.
fn check_type(ty: &TypeProto) -> Result<(), String> {
    match &ty.value {
        Some(type_proto::Value::TensorType(t)) => {
            let dims = t.shape.iter().flat_map(|s| &s.dim);
            for d in dims {
                if let Some(dimension::Value::DimValue(v)) = d.value {
                    if v < 0 {
                        return Err(format!("its declared shape has a negative dim {v}"));
                    }
                }
            }
            Ok(())
        }
        Some(type_proto::Value::SequenceType(s)) => {
            s.elem_type.as_deref().map_or(Ok(()), check_type)
        }
        Some(type_proto::Value::OptionalType(o)) => {
            o.elem_type.as_deref().map_or(Ok(()), check_type)
        }
        Some(type_proto::Value::MapType(m)) => m.value_type.as_deref().map_or(Ok(()), check_type),
        _ => Ok(()),
    }
}

fn check_value(value: &ValueInfoProto) -> Result<(), String> {
    value
        .r#type
        .as_ref()
        .map_or(Ok(()), check_type)
        .map_err(|e| format!("value '{}': {e}", value.name()))
}

/// Every problem with the graph's declared sizes (subgraphs included), each naming
/// its tensor or value. `external_len` gives the span length of an external tensor
/// (the caller has resolved and bounds-checked it); one without a span is skipped.
pub fn graph_problems(
    graph: &GraphProto,
    external_len: &mut dyn FnMut(&TensorProto) -> Option<u64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    collect(graph, external_len, &mut problems);
    problems
}

fn collect(
    graph: &GraphProto,
    external_len: &mut dyn FnMut(&TensorProto) -> Option<u64>,
    problems: &mut Vec<String>,
) {
    let mut tensor = |t: &TensorProto, what: &str, problems: &mut Vec<String>| {
        let span = if super::tensor::is_external(t) {
            match external_len(t) {
                Some(span) => Some(span),
                None => return,
            }
        } else {
            None
        };
        if let Err(e) = check_tensor(t, span) {
            problems.push(format!("{what} '{}': {e}", t.name()));
        }
    };
    for t in &graph.initializer {
        tensor(t, "initializer", problems);
    }
    for sparse in &graph.sparse_initializer {
        for t in sparse.values.iter().chain(&sparse.indices) {
            tensor(t, "sparse initializer", problems);
        }
        if let Err(e) = checked_element_count(&sparse.dims) {
            problems.push(format!("sparse initializer: {e}"));
        }
    }
    let mut subgraphs = Vec::new();
    for node in &graph.node {
        for attr in &node.attribute {
            let what = format!("attribute '{}' of {}", attr.name(), super::node_label(node));
            for t in attr.t.iter().chain(&attr.tensors) {
                tensor(t, &what, problems);
            }
            subgraphs.extend(attr.g.iter().chain(&attr.graphs));
        }
    }
    for value in graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info)
    {
        if let Err(e) = check_value(value) {
            problems.push(e);
        }
    }
    for sub in subgraphs {
        collect(sub, external_len, problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::bytes::Bytes;

    fn tensor(data_type: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some("t".into()),
            dims: dims.to_vec(),
            data_type: Some(data_type as i32),
            ..Default::default()
        }
    }

    fn raw(data_type: DataType, dims: &[i64], bytes: usize) -> Result<(), String> {
        let mut t = tensor(data_type, dims);
        t.raw_data = Some(Bytes::from(vec![0u8; bytes]));
        check_tensor(&t, None)
    }

    #[test]
    fn raw_lengths_follow_the_element_width() {
        assert!(raw(DataType::Float, &[2, 3], 24).is_ok());
        assert!(raw(DataType::Float, &[2, 3], 23).is_err());
        assert!(raw(DataType::Double, &[5], 40).is_ok());
        assert!(raw(DataType::Complex64, &[3], 24).is_ok());
        assert!(raw(DataType::Bfloat16, &[7], 14).is_ok());
        assert!(raw(DataType::Bool, &[7], 7).is_ok());
        // Sub-byte types pack, rounding the last byte up.
        assert!(raw(DataType::Int4, &[5], 3).is_ok());
        assert!(raw(DataType::Int4, &[5], 2).is_err());
        assert!(raw(DataType::Uint2, &[9], 3).is_ok());
        assert!(
            raw(DataType::Float, &[], 4).is_ok(),
            "a scalar has one element"
        );
        assert!(raw(DataType::Float, &[0, 1 << 40], 0).is_ok());
        assert!(raw(DataType::String, &[1], 1).is_err());
        assert!(raw(DataType::Undefined, &[1], 1).is_err());
    }

    #[test]
    fn typed_fields_count_entries_per_the_proto() {
        let mut t = tensor(DataType::Complex64, &[2]);
        t.float_data = vec![0.0; 4];
        assert!(check_tensor(&t, None).is_ok(), "two floats per complex");
        let mut t = tensor(DataType::Int4, &[5]);
        t.int32_data = vec![0; 3];
        assert!(check_tensor(&t, None).is_ok(), "two int4 per int32 entry");
        let mut t = tensor(DataType::Uint32, &[2]);
        t.uint64_data = vec![0; 2];
        assert!(check_tensor(&t, None).is_ok());
        let mut t = tensor(DataType::String, &[2]);
        t.string_data = vec![Bytes::from_static(b"a")];
        assert!(check_tensor(&t, None).is_err());
        let t = tensor(DataType::Float, &[3]);
        let err = check_tensor(&t, None).unwrap_err();
        assert!(
            err.contains("need 3 entries of float_data, it holds 0"),
            "{err}"
        );
    }

    #[test]
    fn external_spans_must_match_exactly() {
        let t = tensor(DataType::Float, &[4]);
        assert!(check_tensor(&t, Some(16)).is_ok());
        assert!(check_tensor(&t, Some(15)).is_err());
        assert!(check_tensor(&t, Some(17)).is_err());
    }

    #[test]
    fn counts_refuse_negative_dims_and_overflow() {
        assert_eq!(checked_element_count(&[3, 4]), Ok(12));
        assert!(checked_element_count(&[3, -1]).is_err());
        assert!(checked_element_count(&[1 << 32, 1 << 32]).is_err());
        assert!(payload_bytes(DataType::Double as i32, &[1 << 61]).is_err());
    }
}
