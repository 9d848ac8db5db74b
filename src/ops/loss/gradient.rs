//! Softmax family and the softmax cross-entropy loss.

use crate::error::{Error, Result};
use crate::onnx::builder::attr_int;
use crate::ops::grad::GradCtx;

type Grads = Result<Vec<Option<String>>>;

/// The softmax axis: -1 since opset 13; before, 1 (and the op flattens to 2-D,
/// which matches only when the axis is the last one).
fn softmax_axis(ctx: &GradCtx) -> Result<i64> {
    let default = if ctx.opset() >= 13 { -1 } else { 1 };
    let axis = ctx.attr_int("axis", default);
    if ctx.opset() < 13 {
        let rank = ctx.shapes.rank(ctx.i(0)).unwrap_or(0) as i64;
        if !(axis == -1 || axis == rank - 1) {
            return Err(Error::invalid(
                "softmax before opset 13 over a non-final axis is not supported".to_string(),
            ));
        }
    }
    Ok(axis)
}

/// dx = y * (g - sum(g * y, axis)).
pub fn softmax(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let y = ctx.o(0);
    let axis = softmax_axis(ctx)?;
    let gy = ctx.mul(&g, y, y);
    let total = ctx.reduce_sum(&gy, &[axis], true);
    let centred = ctx.sub(&g, &total, y);
    Ok(vec![Some(ctx.mul(y, &centred, y))])
}

/// dx = g - exp(y) * sum(g, axis).
pub fn log_softmax(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let y = ctx.o(0);
    let axis = softmax_axis(ctx)?;
    let total = ctx.reduce_sum(&g, &[axis], true);
    let p = ctx.op("Exp", &[y], vec![], Some(y));
    let spread = ctx.mul(&p, &total, y);
    Ok(vec![Some(ctx.sub(&g, &spread, y))])
}

/// d scores = coeff_i * (softmax(scores) - onehot(y)), where coeff_i is g times the
/// example's weight (and divided by the total weight for the mean).
pub fn softmax_cross_entropy(ctx: &mut GradCtx) -> Grads {
    if ctx.go(1).is_some() {
        return Err(Error::invalid(
            "gradient through the log_prob output is not supported".to_string(),
        ));
    }
    let g = ctx.g()?;
    let (scores, labels, weights) = (ctx.i(0), ctx.i(1), ctx.i(2));
    if ctx.shapes.rank(scores).is_some_and(|r| r != 2) {
        return Err(Error::invalid(
            "SoftmaxCrossEntropyLoss gradient supports scores of rank 2 [N, C]".to_string(),
        ));
    }
    if ctx.needs(2) {
        return Err(Error::invalid(
            "gradient with respect to the class weights is not supported".to_string(),
        ));
    }
    let reduction = ctx
        .attr_string("reduction")
        .unwrap_or_else(|| "mean".into());
    let ignore_index = crate::onnx::attribute(ctx.node, "ignore_index").and_then(|a| a.i);

    // softmax(scores) from the forward's own log-probabilities.
    let log_prob = ctx.forward_output(1);
    if let Some(ty) = ctx.shapes.get(scores).cloned() {
        ctx.shapes.insert(&log_prob, ty);
    }
    let p = ctx.op("Exp", &[&log_prob], vec![], Some(scores));
    let scores_shape = ctx.shape_of(scores);
    let class_axis = ctx.int_constant(&[1]);
    let depth = ctx.op(
        "Gather",
        &[&scores_shape, &class_axis],
        vec![attr_int("axis", 0)],
        None,
    );
    // onehot(y) as (y[:, None] == range(C)): works for every float type, where
    // runtimes implement OneHot for few value types.
    let zero = ctx.b.constant(
        "grad/zero_i64",
        crate::onnx::tensor::i64_tensor("", &[], &[0]),
    );
    let step = ctx.b.constant(
        "grad/one_i64",
        crate::onnx::tensor::i64_tensor("", &[], &[1]),
    );
    let depth = ctx.op("Squeeze", &[&depth], vec![], None);
    let classes = ctx.op("Range", &[&zero, &depth, &step], vec![], None);
    let label_axis = ctx.int_constant(&[1]);
    let labels_column = ctx.op("Unsqueeze", &[labels, &label_axis], vec![], None);
    let labels_column = ctx.op("CastLike", &[&labels_column, &classes], vec![], None);
    let is_label = ctx.op("Equal", &[&labels_column, &classes], vec![], None);
    let onehot = ctx.op("CastLike", &[&is_label, scores], vec![], Some(scores));
    let residual = ctx.sub(&p, &onehot, scores);

    // Per-example weight w_{y_i} (times the ignore mask), or none.
    let mut example_weight = (!weights.is_empty()).then(|| {
        ctx.op(
            "Gather",
            &[weights, labels],
            vec![attr_int("axis", 0)],
            None,
        )
    });
    if let Some(ignored) = ignore_index {
        let ii = ctx.b.constant(
            "grad/ignore_index",
            crate::onnx::tensor::i64_tensor("", &[], &[ignored]),
        );
        let ii = ctx.op("CastLike", &[&ii, labels], vec![], None);
        let is_ignored = ctx.op("Equal", &[labels, &ii], vec![], None);
        let kept = ctx.op("Not", &[&is_ignored], vec![], None);
        let kept = ctx.op("CastLike", &[&kept, scores], vec![], None);
        example_weight = Some(match example_weight {
            Some(w) => ctx.mul(&w, &kept, &kept),
            None => kept,
        });
    }
    let coeff = match (reduction.as_str(), &example_weight) {
        ("none", Some(w)) => ctx.mul(&g, w, w),
        ("none", None) => g.clone(),
        ("sum", Some(w)) => ctx.mul(&g, w, w),
        ("sum", None) => g.clone(),
        ("mean", Some(w)) => {
            let total = ctx.op("ReduceSum", &[w], vec![attr_int("keepdims", 0)], None);
            let per = ctx.div(w, &total, w);
            ctx.mul(&g, &per, w)
        }
        ("mean", None) => {
            let count = ctx.op("Size", &[labels], vec![], None);
            let count = ctx.op("CastLike", &[&count, scores], vec![], None);
            ctx.div(&g, &count, &count)
        }
        (other, _) => return Err(Error::invalid(format!("unknown reduction '{other}'"))),
    };
    // A per-example coefficient [N] scales rows; a scalar scales everything.
    let per_row = reduction == "none" || example_weight.is_some();
    let coeff = if per_row {
        let axis = ctx.int_constant(&[1]);
        ctx.op("Unsqueeze", &[&coeff, &axis], vec![], None)
    } else {
        coeff
    };
    Ok(vec![Some(ctx.mul(&residual, &coeff, scores)), None, None])
}
