//! Tensors between ONNX (`TensorProto`, element type codes) and libtorch.

use crate::error::{Error, Result};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor::{f32_tensor, is_external};
use crate::onnx::TensorProto;
use tch::{Device, Kind, Tensor};

/// The libtorch kind of an ONNX element type, for the types the interpreter computes with.
pub fn kind_of(elem_type: i32) -> Option<Kind> {
    Some(match DataType::try_from(elem_type).ok()? {
        DataType::Float => Kind::Float,
        DataType::Double => Kind::Double,
        DataType::Float16 => Kind::Half,
        DataType::Bfloat16 => Kind::BFloat16,
        DataType::Int64 => Kind::Int64,
        DataType::Int32 => Kind::Int,
        DataType::Int16 => Kind::Int16,
        DataType::Int8 => Kind::Int8,
        DataType::Uint8 => Kind::Uint8,
        DataType::Bool => Kind::Bool,
        _ => return None,
    })
}

/// An inline ONNX tensor as a libtorch tensor on `device`.
pub fn from_proto(tensor: &TensorProto, device: Device) -> Result<Tensor> {
    let name = tensor.name();
    if is_external(tensor) {
        return Err(Error::invalid(format!(
            "tensor '{name}' keeps its data in an external file; load the model with its data first"
        )));
    }
    let kind = kind_of(tensor.data_type()).ok_or_else(|| {
        Error::config(format!(
            "tensor '{name}' has element type {}, which the torch backend does not support",
            crate::onnx::tensor::elem_type_name(tensor.data_type())
        ))
    })?;
    let dims = &tensor.dims;
    let count: i64 = dims.iter().product();
    let bytes = crate::onnx::tensor::le_bytes(tensor).ok_or_else(|| {
        Error::invalid(format!(
            "tensor '{name}' has no data the torch backend can read"
        ))
    })?;
    let expected = count as usize * kind.elt_size_in_bytes();
    if bytes.len() != expected {
        return Err(Error::invalid(format!(
            "tensor '{name}' holds {} bytes of data, its shape {dims:?} needs {expected}",
            bytes.len()
        )));
    }
    let value = Tensor::f_from_data_size(&bytes, dims, kind)
        .map_err(|e| Error::invalid(format!("tensor '{name}': {e}")))?;
    if device == Device::Cpu {
        Ok(value)
    } else {
        value
            .f_to_device(device)
            .map_err(|e| Error::torch(format!("moving '{name}' to {device:?}: {e}")))
    }
}

/// The values of a tensor as float32, row-major.
pub fn f32_vec(value: &Tensor) -> std::result::Result<Vec<f32>, tch::TchError> {
    let flat = value
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_reshape([-1])?;
    Vec::<f32>::try_from(&flat)
}

/// The values of an integer tensor as int64, row-major.
pub fn i64_vec(value: &Tensor) -> std::result::Result<Vec<i64>, tch::TchError> {
    let flat = value
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Int64)?
        .f_reshape([-1])?;
    Vec::<i64>::try_from(&flat)
}

/// A float32 tensor as an ONNX initializer named `name`.
pub fn to_proto(name: &str, value: &Tensor) -> Result<TensorProto> {
    let values = f32_vec(value).map_err(|e| Error::torch(format!("reading '{name}': {e}")))?;
    Ok(f32_tensor(name, &value.size(), &values))
}
