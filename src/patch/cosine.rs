//! The cosine classifier of the paper ("NormedLinear"): the final linear layer
//! becomes `normalize(features, rows) @ normalize(W, per class)`, bias dropped.

use super::head::LinearLayer;
use crate::onnx::builder::{attr_int, Emitter};
use crate::onnx::tensor::f32_tensor;
use crate::onnx::NodeProto;

/// `F.normalize`'s epsilon: `x / max(||x||_2, eps)`.
const NORMALIZE_EPS: f32 = 1e-12;

/// Emits the cosine head writing to `logits`; returns the nodes that replace the
/// linear layer's node(s).
pub fn emit(b: &mut Emitter, layer: &LinearLayer, logits: &str) -> Vec<NodeProto> {
    let eps = b.constant("cosine/eps", f32_tensor("", &[], &[NORMALIZE_EPS]));
    let features = normalize(b, &layer.features, 1, &eps, "cosine/features");
    let weight = normalize(
        b,
        &layer.weight,
        layer.feature_axis as i64,
        &eps,
        "cosine/weight",
    );
    let trans_b = attr_int("transB", i64::from(layer.transposed()));
    b.op_into("Gemm", &[&features, &weight], vec![trans_b], logits);
    std::mem::take(&mut b.nodes)
}

/// `x / max(||x||_2 over axis, eps)`, exactly as PyTorch's `F.normalize`.
fn normalize(b: &mut Emitter, x: &str, axis: i64, eps: &str, hint: &str) -> String {
    let norm = b.reduce_l2_keepdims(x, &[axis], &format!("{hint}_norm"));
    let denominator = b.max(&norm, eps, &format!("{hint}_norm_clamped"));
    b.div(x, &denominator, &format!("{hint}_normalized"))
}
