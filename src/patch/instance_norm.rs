//! InstanceNormalization written out in ops that have gradient rules and
//! libtorch kernels: timm's GroupNorm with one group and PyTorch's
//! `InstanceNorm2d(affine=True)` export as this op.
//!
//! `y = (x - mean) / sqrt(var + eps) * scale + bias`, with the biased mean and
//! variance of each example and channel over the spatial axes, as the op (and
//! PyTorch) define them. The scale and bias stay the same initializers, so
//! they train under their own names.

use crate::error::{Error, Result};
use crate::ldam::contract::PATCH_PREFIX;
use crate::onnx::builder::{attr_int, Emitter, NameSet};
use crate::onnx::tensor::{f32_tensor, i64_tensor};
use crate::onnx::{node_label, GraphProto, NodeAttributes};
use crate::ops::shapes::ValueShapes;

/// Rewrites every InstanceNormalization of `graph` and returns their labels.
pub fn lower(graph: &mut GraphProto, opset: i64, names: &mut NameSet) -> Result<Vec<String>> {
    if !graph
        .node
        .iter()
        .any(|n| n.op_type() == "InstanceNormalization")
    {
        return Ok(Vec::new());
    }
    let shapes = ValueShapes::infer(graph, opset);
    let mut b = Emitter::new(std::mem::take(names), PATCH_PREFIX, opset);
    let mut lowered = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        if node.op_type() != "InstanceNormalization" {
            nodes.push(node);
            continue;
        }
        let label = node_label(&node);
        let (x, scale, bias) = match node.input.as_slice() {
            [x, scale, bias] => (x.as_str(), scale.as_str(), bias.as_str()),
            _ => {
                *names = std::mem::take(&mut b.names);
                return Err(Error::patch(format!(
                    "{label}: InstanceNormalization needs its input, scale and bias"
                )));
            }
        };
        let Some(rank) = shapes.rank(x).filter(|&r| r >= 3) else {
            *names = std::mem::take(&mut b.names);
            return Err(Error::patch(format!(
                "{label}: the rank of its input '{x}' is not known statically (InstanceNormalization \
                 needs [N, C, spatial...])"
            )));
        };
        let spatial: Vec<i64> = (2..rank as i64).collect();
        let eps = node.float_attr("epsilon", 1e-5);
        let mean = b.reduce("ReduceMean", x, &spatial, true, "in_mean");
        let centred = b.sub(x, &mean, "in_centred");
        let squared = b.mul(&centred, &centred, "in_squared");
        let var = b.reduce("ReduceMean", &squared, &spatial, true, "in_var");
        let eps = b.constant("in_eps", f32_tensor("", &[], &[eps]));
        let var_eps = b.add(&var, &eps, "in_var_eps");
        let std = b.op("Sqrt", &[&var_eps], vec![], "in_std");
        let normed = b.div(&centred, &std, "in_normed");
        // [C] -> [C, 1, ..., 1] to broadcast over the spatial axes.
        let mut per_channel = vec![-1i64];
        per_channel.extend(std::iter::repeat_n(1, rank - 2));
        let shape = b.constant(
            "in_channel_shape",
            i64_tensor("", &[per_channel.len() as i64], &per_channel),
        );
        let scale = b.op(
            "Reshape",
            &[scale, &shape],
            vec![attr_int("allowzero", 0)],
            "in_scale",
        );
        let bias = b.op(
            "Reshape",
            &[bias, &shape],
            vec![attr_int("allowzero", 0)],
            "in_bias",
        );
        let scaled = b.mul(&normed, &scale, "in_scaled");
        let output = node.output.first().cloned().unwrap_or_default();
        b.op_into("Add", &[&scaled, &bias], vec![], &output);
        nodes.append(&mut b.nodes);
        lowered.push(label);
    }
    graph.node = nodes;
    graph.initializer.append(&mut b.initializers);
    *names = std::mem::take(&mut b.names);
    Ok(lowered)
}
