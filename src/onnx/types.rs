//! Value types and shapes: reading them from `ValueInfoProto` and writing new ones.

use super::proto::{tensor_shape_proto, type_proto, TensorShapeProto};
use super::{TypeProto, ValueInfoProto};
use std::fmt;

/// One dimension of a tensor shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The element type and (if known) shape of a tensor value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorType {
    pub elem_type: i32,
    pub shape: Option<Vec<Dim>>,
}

impl TensorType {
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    /// `float32 [N, 10]`, `int64 []`, `float32 (shape unknown)`.
    pub fn describe(&self) -> String {
        let elem = super::tensor::elem_type_name(self.elem_type);
        match &self.shape {
            Some(dims) => format!(
                "{elem} [{}]",
                dims.iter()
                    .map(Dim::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("{elem} (shape unknown)"),
        }
    }
}

/// The tensor type recorded in a `ValueInfoProto`, if it is a tensor.
pub fn tensor_type(info: &ValueInfoProto) -> Option<TensorType> {
    let tensor = match info.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t,
        _ => return None,
    };
    let shape = tensor.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(tensor_shape_proto::dimension::Value::DimValue(v)) => Dim::Fixed(*v),
                Some(tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                    Dim::Symbolic(p.clone())
                }
                _ => Dim::Unknown,
            })
            .collect()
    });
    Some(TensorType {
        elem_type: tensor.elem_type(),
        shape,
    })
}

/// A `ValueInfoProto` for a tensor of the given element type and shape.
pub fn value_info(name: &str, elem_type: i32, shape: &[Dim]) -> ValueInfoProto {
    let dim = shape
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: match d {
                Dim::Fixed(v) => Some(tensor_shape_proto::dimension::Value::DimValue(*v)),
                Dim::Symbolic(s) => Some(tensor_shape_proto::dimension::Value::DimParam(s.clone())),
                Dim::Unknown => None,
            },
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A `ValueInfoProto` for a tensor whose shape is not stated.
pub fn value_info_any_shape(name: &str, elem_type: i32) -> ValueInfoProto {
    let mut info = value_info(name, elem_type, &[]);
    if let Some(type_proto::Value::TensorType(t)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape = None;
    }
    info
}
