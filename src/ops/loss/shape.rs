//! Shape and type inference of the loss ops and one-hot, and the integer contents
//! (shape arithmetic) they fold, for the inference engine (`ValueShapes::infer`).

#![allow(unused_imports)]
use crate::ops::shapes::prelude::*;

/// Indices' shape with `depth` inserted at `axis` (default -1: last).
pub(crate) fn one_hot(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|indices| {
        let rank = indices.len() + 1;
        let axis = norm_axis(n.int("axis", -1), rank)?;
        let depth = match n.scalar(1) {
            Some(d) if d.is_finite() && d >= 0.0 && d < OPEN_BOUND as f64 => Dim::Fixed(d as i64),
            _ => Dim::Unknown,
        };
        let mut out = indices.to_vec();
        out.insert(axis, depth);
        Some(out)
    });
    typed(n.elem(2), shape)
}

/// Scores `[N, C, d1, ...]`: mean/sum give a scalar, none gives `[N, d1, ...]`;
/// SoftmaxCrossEntropyLoss's optional log_prob is shaped like the scores.
pub(crate) fn loss(n: &Ctx) -> Vec<Option<TensorType>> {
    let elem = n.elem(0);
    let shape = match n.string("reduction", "mean") {
        "none" => n.shape(0).filter(|s| s.len() >= 2).map(|s| {
            let mut out = vec![s[0].clone()];
            out.extend_from_slice(&s[2..]);
            out
        }),
        _ => Some(vec![]),
    };
    vec![typed(elem, shape), n.like(0, elem)]
}
