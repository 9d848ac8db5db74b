//! The vocabulary of gradient rules, after ONNX Runtime's gradient builder: a
//! rule sees its node's inputs `i(k)`, outputs `o(k)`, output gradients `go(k)`,
//! which inputs `needs(k)` a gradient, and emits standard ONNX nodes through
//! small builders that read like the calculus (`ctx.mul(g, y, x)`).

use crate::error::{Error, Result};
use crate::onnx::builder::{attr_int, Emitter};
use crate::onnx::tensor::FLOAT;
use crate::onnx::types::Dim;
use crate::onnx::{AttributeProto, NodeAttributes, NodeProto, TensorProto};
use crate::ops::shapes::values::ValueShapes;
use std::collections::HashMap;

/// A gradient rule: one entry per node input, the gradient for the inputs that
/// `ctx.needs(k)`, `None` otherwise.
pub type GradRule = fn(&mut GradCtx) -> Result<Vec<Option<String>>>;

pub(crate) fn sanitize(name: &str) -> String {
    name.trim_start_matches('/').replace('/', "_")
}

/// A scalar constant of the given float type.
pub fn scalar(elem_type: i32, value: f64) -> TensorProto {
    if elem_type == crate::onnx::proto::tensor_proto::DataType::Double as i32 {
        TensorProto {
            dims: vec![],
            data_type: Some(elem_type),
            raw_data: Some(value.to_le_bytes().to_vec().into()),
            ..Default::default()
        }
    } else {
        crate::onnx::tensor::f32_tensor("", &[], &[value as f32])
    }
}

/// What a gradient rule sees: the node (`i(k)` inputs, `o(k)` outputs), the
/// gradients of its outputs (`go(k)`), which inputs need gradients, a builder, and
/// the static shapes.
pub struct GradCtx<'a> {
    pub node: &'a NodeProto,
    pub(crate) node_index: usize,
    pub(crate) forward: &'a [NodeProto],
    pub(crate) producers: &'a HashMap<&'a str, usize>,
    pub b: &'a mut Emitter,
    pub shapes: &'a mut ValueShapes,
    pub(crate) output_grads: Vec<Option<String>>,
    pub(crate) needs: Vec<bool>,
    pub(crate) extra_outputs: &'a mut Vec<(usize, usize, String)>,
}

impl<'a> GradCtx<'a> {
    /// Name of input `k` ("" when absent).
    pub fn i(&self, k: usize) -> &'a str {
        self.node.input.get(k).map_or("", String::as_str)
    }
    pub fn has_input(&self, k: usize) -> bool {
        !self.i(k).is_empty()
    }
    /// Name of output `k`.
    pub fn o(&self, k: usize) -> &'a str {
        self.node.output.get(k).map_or("", String::as_str)
    }
    /// The forward node that computes `value` (none for graph inputs and
    /// initializers), for rules that reuse what the forward pass already computed.
    pub fn producer(&self, value: &str) -> Option<&'a NodeProto> {
        self.producers.get(value).map(|&index| &self.forward[index])
    }
    /// Gradient of output `k`, if the loss depends on it.
    pub fn go(&self, k: usize) -> Option<String> {
        self.output_grads.get(k).cloned().flatten()
    }
    /// Gradient of output 0, which every rule's caller guarantees for single-output ops.
    pub fn g(&self) -> Result<String> {
        self.go(0)
            .ok_or_else(|| Error::invalid("the first output has no gradient".to_string()))
    }
    /// Whether input `k` needs a gradient.
    pub fn needs(&self, k: usize) -> bool {
        self.needs.get(k).copied().unwrap_or(false)
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
    pub fn attr_string(&self, name: &str) -> Option<String> {
        self.node.string_attr(name).map(str::to_string)
    }
    pub fn opset(&self) -> i64 {
        self.b.opset
    }
    /// Element type of a value (float when unknown).
    pub fn elem(&self, name: &str) -> i32 {
        self.shapes.elem_type(name).unwrap_or(FLOAT)
    }
    pub fn shape(&self, name: &str) -> Option<Vec<Dim>> {
        self.shapes.shape(name).map(<[Dim]>::to_vec)
    }
    /// Output `k` of the forward node, added to the node if the export left it out
    /// (MaxPool indices, Dropout mask, LayerNormalization statistics).
    pub fn forward_output(&mut self, k: usize) -> String {
        if let Some(name) = self.node.output.get(k).filter(|o| !o.is_empty()) {
            return name.clone();
        }
        if let Some((_, _, name)) = self
            .extra_outputs
            .iter()
            .find(|(n, o, _)| *n == self.node_index && *o == k)
        {
            return name.clone();
        }
        let name = self
            .b
            .names
            .fresh(&format!("{}_out{k}", self.node.output[0]));
        self.extra_outputs.push((self.node_index, k, name.clone()));
        name
    }

    /// Emits one node; the output's type is recorded as `like`'s when given.
    pub fn op(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        like: Option<&str>,
    ) -> String {
        let hint = format!(
            "grad/{}_{}",
            sanitize(self.node.output.first().map_or("x", String::as_str)),
            op
        );
        let out = self.b.op(op, inputs, attrs, &hint);
        if let Some(ty) = like.and_then(|l| self.shapes.get(l).cloned()) {
            self.shapes.insert(&out, ty);
        }
        out
    }
    /// A scalar constant with the element type of `like`.
    pub fn constant(&mut self, value: f64, like: &str) -> String {
        let elem = self.elem(like);
        self.b.constant("grad/const", scalar(elem, value))
    }
    pub fn int_constant(&mut self, values: &[i64]) -> String {
        self.b.constant(
            "grad/ints",
            crate::onnx::tensor::i64_tensor("", &[values.len() as i64], values),
        )
    }

    pub fn add(&mut self, a: &str, b: &str, like: &str) -> String {
        self.op("Add", &[a, b], vec![], Some(like))
    }
    pub fn sub(&mut self, a: &str, b: &str, like: &str) -> String {
        self.op("Sub", &[a, b], vec![], Some(like))
    }
    pub fn mul(&mut self, a: &str, b: &str, like: &str) -> String {
        self.op("Mul", &[a, b], vec![], Some(like))
    }
    pub fn div(&mut self, a: &str, b: &str, like: &str) -> String {
        self.op("Div", &[a, b], vec![], Some(like))
    }
    pub fn neg(&mut self, a: &str) -> String {
        self.op("Neg", &[a], vec![], Some(a))
    }
    /// `Where(cond, a, b)`.
    pub fn select(&mut self, cond: &str, a: &str, b: &str, like: &str) -> String {
        self.op("Where", &[cond, a, b], vec![], Some(like))
    }
    pub fn shape_of(&mut self, x: &str) -> String {
        self.op("Shape", &[x], vec![], None)
    }
    /// `ReduceSum` over constant axes (axes are an input since opset 13).
    pub fn reduce_sum(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        let axes = self.int_constant(axes);
        self.op(
            "ReduceSum",
            &[x, &axes],
            vec![attr_int("keepdims", i64::from(keepdims))],
            None,
        )
    }

    /// Sums `grad` (shaped like this node's output) down to the shape of input
    /// `operand` after numpy broadcasting: statically when both shapes are known,
    /// otherwise with shape arithmetic evaluated at run time.
    pub fn unbroadcast(&mut self, grad: &str, operand: &str) -> String {
        let out_shape = self.shape(self.o(0)).or_else(|| self.shape(grad));
        match (out_shape, self.shape(operand)) {
            (Some(out), Some(target)) if out == target && !out.contains(&Dim::Unknown) => {
                grad.to_string()
            }
            (Some(out), Some(target)) => match static_reduction(&out, &target) {
                Some((leading, kept)) => {
                    let mut g = grad.to_string();
                    if !kept.is_empty() {
                        g = self.reduce_sum(&g, &kept, true);
                    }
                    if leading > 0 {
                        let axes: Vec<i64> = (0..leading as i64).collect();
                        g = self.reduce_sum(&g, &axes, false);
                    }
                    if let Some(ty) = self.shapes.get(operand).cloned() {
                        self.shapes.insert(&g, ty);
                    }
                    g
                }
                None => self.dynamic_unbroadcast(grad, operand),
            },
            _ => self.dynamic_unbroadcast(grad, operand),
        }
    }

    /// Runtime version of `unbroadcast`: sum away the leading axes the operand
    /// lacks, then the axes where the operand has size 1 and the gradient does not
    /// (found from the runtime shapes, so symbolic dimensions work).
    fn dynamic_unbroadcast(&mut self, grad: &str, operand: &str) -> String {
        let out_rank = self
            .shapes
            .rank(self.o(0))
            .or_else(|| self.shapes.rank(grad));
        let (Some(out_rank), Some(rank)) = (out_rank, self.shapes.rank(operand)) else {
            return self.rankless_unbroadcast(grad, operand);
        };
        let mut g = grad.to_string();
        if out_rank > rank {
            let leading: Vec<i64> = (0..(out_rank - rank) as i64).collect();
            g = self.reduce_sum(&g, &leading, false);
        }
        if rank == 0 {
            return g;
        }
        let one = self.b.constant(
            "grad/one_i64",
            crate::onnx::tensor::i64_tensor("", &[1], &[1]),
        );
        let operand_shape = self.shape_of(operand);
        let grad_shape = self.shape_of(&g);
        let operand_is_one = self.op("Equal", &[&operand_shape, &one], vec![], None);
        let grad_is_one = self.op("Equal", &[&grad_shape, &one], vec![], None);
        let grad_not_one = self.op("Not", &[&grad_is_one], vec![], None);
        let reduce = self.op("And", &[&operand_is_one, &grad_not_one], vec![], None);
        let axes = self.op("NonZero", &[&reduce], vec![], None);
        let flat = self.int_constant(&[-1]);
        let axes = self.op("Reshape", &[&axes, &flat], vec![], None);
        self.op(
            "ReduceSum",
            &[&g, &axes],
            vec![attr_int("keepdims", 1), attr_int("noop_with_empty_axes", 1)],
            Some(operand),
        )
    }

    /// Fallback when even the ranks are unknown: left-pad the operand's shape with
    /// ones at run time, reduce, and reshape to the operand.
    fn rankless_unbroadcast(&mut self, grad: &str, operand: &str) -> String {
        let grad_shape = self.shape_of(grad);
        let operand_shape = self.shape_of(operand);
        let grad_rank = self.op("Size", &[&grad_shape], vec![], None);
        let operand_rank = self.op("Size", &[&operand_shape], vec![], None);
        let missing = self.op("Sub", &[&grad_rank, &operand_rank], vec![], None);
        let first_axis = self.int_constant(&[0]);
        let missing = self.op("Unsqueeze", &[&missing, &first_axis], vec![], None);
        let one = self.b.constant(
            "grad/one_i64",
            crate::onnx::tensor::i64_tensor("", &[1], &[1]),
        );
        let ones = self.op(
            "ConstantOfShape",
            &[&missing],
            vec![tensor_attr(
                "value",
                crate::onnx::tensor::i64_tensor("", &[1], &[1]),
            )],
            None,
        );
        let padded = self.op(
            "Concat",
            &[&ones, &operand_shape],
            vec![attr_int("axis", 0)],
            None,
        );
        let operand_is_one = self.op("Equal", &[&padded, &one], vec![], None);
        let grad_is_one = self.op("Equal", &[&grad_shape, &one], vec![], None);
        let grad_not_one = self.op("Not", &[&grad_is_one], vec![], None);
        let reduce = self.op("And", &[&operand_is_one, &grad_not_one], vec![], None);
        let axes = self.op("NonZero", &[&reduce], vec![], None);
        let flat = self.int_constant(&[-1]);
        let axes = self.op("Reshape", &[&axes, &flat], vec![], None);
        let reduced = self.op(
            "ReduceSum",
            &[grad, &axes],
            vec![attr_int("keepdims", 1), attr_int("noop_with_empty_axes", 1)],
            None,
        );
        self.op(
            "Reshape",
            &[&reduced, &operand_shape],
            vec![],
            Some(operand),
        )
    }
}

/// Axes to sum when broadcasting `target` up to `out`: the number of leading axes
/// `target` lacks, and the kept axes (in `out`'s numbering) where `target` is 1.
/// `None` when a dimension is not known well enough to decide.
fn static_reduction(out: &[Dim], target: &[Dim]) -> Option<(usize, Vec<i64>)> {
    let leading = out.len().checked_sub(target.len())?;
    let mut kept = Vec::new();
    for (axis, (o, t)) in out[leading..].iter().zip(target).enumerate() {
        match (o, t) {
            (Dim::Fixed(1), Dim::Fixed(1)) => {}
            (_, Dim::Fixed(1)) => kept.push((axis + leading) as i64),
            (a, b) if a == b && *a != Dim::Unknown => {}
            (Dim::Fixed(_), Dim::Symbolic(_)) | (Dim::Symbolic(_), Dim::Fixed(_)) => {}
            _ => return None,
        }
    }
    Some((leading, kept))
}

pub fn tensor_attr(name: &str, tensor: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::Tensor as i32),
        t: Some(tensor),
        ..Default::default()
    }
}
