//! What the ops' shape and folding rules import: the per-node view and the helpers.
#![allow(unused_imports)]

pub(crate) use crate::onnx::proto::tensor_proto::DataType;
pub(crate) use crate::onnx::tensor::{f32_values, i64_values, is_external, BOOL, FLOAT, INT64};
pub(crate) use crate::onnx::types::{tensor_type, Dim, TensorType};
pub(crate) use crate::onnx::{attribute, GraphProto, NodeAttributes, NodeProto, TensorProto};
pub(crate) use crate::ops::shapes::dims::*;
pub(crate) use crate::ops::shapes::values::{
    refine, refine_dim, single, typed, Ctx, Operand, MAX_TRACKED_ELEMENTS, OPEN_BOUND,
};
pub(crate) use std::collections::{HashMap, HashSet};
