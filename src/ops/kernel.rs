//! What a libtorch kernel sees: each op's kernel (in its family's `torch.rs`,
//! registered in the op registry) reads its inputs and attributes through
//! [`OpCtx`], with the ONNX default written at the point of use, and returns the
//! node's outputs in order (an optional output nobody reads may be left out).

use crate::onnx::{NodeAttributes, NodeProto, TensorProto};
use crate::ops::torch_tensor as convert;
use tch::{Kind, Tensor};

/// Why an op failed; the interpreter adds the node's label.
#[derive(Debug)]
pub struct OpError(pub String);

impl From<tch::TchError> for OpError {
    fn from(e: tch::TchError) -> Self {
        OpError(e.to_string())
    }
}

impl From<crate::Error> for OpError {
    fn from(e: crate::Error) -> Self {
        OpError(e.to_string())
    }
}

pub type OpResult = std::result::Result<Vec<Tensor>, OpError>;
pub type Op = fn(&OpCtx) -> OpResult;

/// What an op sees of one node execution.
pub struct OpCtx<'a> {
    pub node: &'a NodeProto,
    pub opset: i64,
    /// Training step (BatchNorm in training mode uses batch statistics, Dropout
    /// follows its `training_mode` input) rather than evaluation.
    pub training: bool,
    pub device: tch::Device,
    /// One entry per node input; `None` for an omitted optional input.
    pub inputs: Vec<Option<&'a Tensor>>,
}

impl<'a> OpCtx<'a> {
    pub fn input(&self, index: usize) -> Result<&'a Tensor, OpError> {
        self.opt_input(index)
            .ok_or_else(|| OpError(format!("input {index} is missing")))
    }

    pub fn opt_input(&self, index: usize) -> Option<&'a Tensor> {
        self.inputs.get(index).copied().flatten()
    }

    /// The present inputs, in order (variadic ops).
    pub fn present_inputs(&self) -> Vec<&'a Tensor> {
        self.inputs.iter().flatten().copied().collect()
    }

    /// Whether output `index` is read by anything (named in the node).
    pub fn wants_output(&self, index: usize) -> bool {
        self.node.output.get(index).is_some_and(|o| !o.is_empty())
    }

    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        self.node.int_attr(name, default)
    }

    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        self.node.float_attr(name, default)
    }

    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.node.ints_attr(name).map(<[i64]>::to_vec)
    }

    pub fn attr_string(&self, name: &str, default: &str) -> String {
        self.node.string_attr(name).unwrap_or(default).to_string()
    }

    /// The raw attribute, for ops whose attributes come in alternative forms.
    pub fn attr(&self, name: &str) -> Option<&'a crate::onnx::AttributeProto> {
        crate::onnx::attribute(self.node, name)
    }

    pub fn attr_tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.node.tensor_attr(name)
    }

    /// An integer input read to the host (shapes, axes, pads, slice bounds).
    pub fn ints_input(&self, index: usize) -> Result<Vec<i64>, OpError> {
        Ok(convert::i64_vec(self.input(index)?)?)
    }

    pub fn opt_ints_input(&self, index: usize) -> Result<Option<Vec<i64>>, OpError> {
        self.opt_input(index)
            .map(|t| convert::i64_vec(t).map_err(OpError::from))
            .transpose()
    }

    /// A scalar input read to the host as f64.
    pub fn scalar_input(&self, index: usize) -> Result<Option<f64>, OpError> {
        match self.opt_input(index) {
            None => Ok(None),
            Some(t) => Ok(Some(t.f_to_kind(Kind::Double)?.f_double_value(&[])?)),
        }
    }

    /// Axes the op lists: an attribute before `input_from_opset`, input `index` from it.
    pub fn axes(&self, input_from_opset: i64, index: usize) -> Result<Option<Vec<i64>>, OpError> {
        if self.opset >= input_from_opset {
            self.opt_ints_input(index)
        } else {
            Ok(self.attr_ints("axes"))
        }
    }

    pub fn error(&self, reason: impl Into<String>) -> OpError {
        OpError(reason.into())
    }
}

/// `axis` (possibly negative) as an index into `rank` dimensions.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<i64, OpError> {
    let rank = rank as i64;
    let resolved = if axis < 0 { axis + rank } else { axis };
    if (0..rank.max(1)).contains(&resolved) {
        Ok(resolved)
    } else {
        Err(OpError(format!(
            "axis {axis} is out of range for rank {rank}"
        )))
    }
}

pub fn one(t: Tensor) -> OpResult {
    Ok(vec![t])
}
