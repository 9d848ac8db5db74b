//! Tensor element types and the few tensor constructors/readers the tool needs.

use super::proto::tensor_proto::{DataLocation, DataType};
use super::TensorProto;
use prost::bytes::Bytes;
use std::borrow::Cow;

/// ONNX element type code for float32 (`TensorProto.FLOAT`).
pub const FLOAT: i32 = DataType::Float as i32;
/// ONNX element type code for int64 (`TensorProto.INT64`).
pub const INT64: i32 = DataType::Int64 as i32;
/// ONNX element type code for bool (`TensorProto.BOOL`).
pub const BOOL: i32 = DataType::Bool as i32;

/// The short, lower-case name of an element type (`float32`, `int64`, ...).
pub fn elem_type_name(code: i32) -> &'static str {
    match DataType::try_from(code) {
        Ok(DataType::Float) => "float32",
        Ok(DataType::Double) => "float64",
        Ok(DataType::Float16) => "float16",
        Ok(DataType::Bfloat16) => "bfloat16",
        Ok(DataType::Int8) => "int8",
        Ok(DataType::Int16) => "int16",
        Ok(DataType::Int32) => "int32",
        Ok(DataType::Int64) => "int64",
        Ok(DataType::Uint8) => "uint8",
        Ok(DataType::Uint16) => "uint16",
        Ok(DataType::Uint32) => "uint32",
        Ok(DataType::Uint64) => "uint64",
        Ok(DataType::Bool) => "bool",
        Ok(DataType::String) => "string",
        Ok(DataType::Complex64) => "complex64",
        Ok(DataType::Complex128) => "complex128",
        Ok(DataType::Undefined) => "undefined",
        _ => "other",
    }
}

/// Whether an element type is a floating-point type (a trainable parameter's kind).
pub fn is_float_type(code: i32) -> bool {
    matches!(
        DataType::try_from(code),
        Ok(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16)
    )
}

/// Size in bytes of one element, for types with a fixed size.
pub fn elem_size(code: i32) -> Option<usize> {
    Some(match DataType::try_from(code).ok()? {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 | DataType::Complex64 => 8,
        DataType::Complex128 => 16,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => return None,
    })
}

/// Number of elements of a tensor (1 for a scalar).
pub fn element_count(tensor: &TensorProto) -> u64 {
    tensor.dims.iter().map(|&d| d.max(0) as u64).product()
}

/// Whether the tensor's bytes live in an external file.
pub fn is_external(tensor: &TensorProto) -> bool {
    tensor.data_location == Some(DataLocation::External as i32)
}

/// A float32 tensor stored as little-endian `raw_data`.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    debug_assert_eq!(
        dims.iter().product::<i64>().max(1) as usize,
        values.len().max(1)
    );
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        raw_data: Some(Bytes::from(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
}

/// An int64 tensor stored as little-endian `raw_data`.
pub fn i64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(INT64),
        raw_data: Some(Bytes::from(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
}

/// A tensor's elements as little-endian bytes of its element type, wherever they
/// are stored: `raw_data`, or the typed field onnx.proto assigns the type
/// (`int32_data` carries the narrower integers, bool and the 16- and 8-bit
/// floats as bit patterns; `uint64_data` carries uint32 and uint64). `None` for
/// external tensors, strings and the sub-byte types. The length is what the
/// tensor holds; `load` has checked it against the dims of every tensor it read.
pub fn le_bytes(tensor: &TensorProto) -> Option<Cow<'_, [u8]>> {
    if is_external(tensor) {
        return None;
    }
    if let Some(raw) = &tensor.raw_data {
        return Some(Cow::Borrowed(raw.as_ref()));
    }
    fn bytes<T, const N: usize>(values: &[T], f: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(f).collect()
    }
    let data = match DataType::try_from(tensor.data_type()).ok()? {
        DataType::Float | DataType::Complex64 => bytes(&tensor.float_data, |v| v.to_le_bytes()),
        DataType::Double | DataType::Complex128 => bytes(&tensor.double_data, |v| v.to_le_bytes()),
        DataType::Int64 => bytes(&tensor.int64_data, |v| v.to_le_bytes()),
        DataType::Uint64 => bytes(&tensor.uint64_data, |v| v.to_le_bytes()),
        DataType::Uint32 => bytes(&tensor.uint64_data, |&v| (v as u32).to_le_bytes()),
        DataType::Int32 => bytes(&tensor.int32_data, |v| v.to_le_bytes()),
        DataType::Int16 | DataType::Uint16 | DataType::Float16 | DataType::Bfloat16 => {
            bytes(&tensor.int32_data, |&v| (v as u16).to_le_bytes())
        }
        DataType::Int8
        | DataType::Uint8
        | DataType::Bool
        | DataType::Float8e4m3fn
        | DataType::Float8e4m3fnuz
        | DataType::Float8e5m2
        | DataType::Float8e5m2fnuz
        | DataType::Float8e8m0 => bytes(&tensor.int32_data, |&v| [v as u8]),
        _ => return None,
    };
    Some(Cow::Owned(data))
}

/// The values of an inline float32 tensor.
pub fn f32_values(tensor: &TensorProto) -> Option<Vec<f32>> {
    if tensor.data_type != Some(FLOAT) {
        return None;
    }
    let bytes = le_bytes(tensor)?;
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// The values of an inline int64 tensor.
pub fn i64_values(tensor: &TensorProto) -> Option<Vec<i64>> {
    if tensor.data_type != Some(INT64) {
        return None;
    }
    let bytes = le_bytes(tensor)?;
    Some(
        bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("chunks_exact(8) yields 8 bytes")))
            .collect(),
    )
}
