//! Softmax, the cross-entropy loss and OneHot: the ops of the loss subgraph.

use crate::ops::kernel::{normalize_axis, one, OpCtx, OpResult};
use tch::{Kind, Reduction, Tensor};

/// Opset 13 on: along `axis` (default -1). Before: the input is coerced to 2-D at
/// `axis` (default 1) and normalised over the trailing block.
fn softmax_like(
    ctx: &OpCtx,
    f: fn(&Tensor, i64, Option<Kind>) -> Result<Tensor, tch::TchError>,
) -> OpResult {
    let x = ctx.input(0)?;
    if ctx.opset >= 13 {
        let axis = normalize_axis(ctx.attr_int("axis", -1), x.dim())?;
        return one(f(x, axis, None)?);
    }
    let axis = normalize_axis(ctx.attr_int("axis", 1), x.dim())? as usize;
    let shape = x.size();
    let rows: i64 = shape[..axis].iter().product();
    let flat = x.f_reshape([rows, -1])?;
    one(f(&flat, 1, None)?.f_reshape(&shape)?)
}

pub fn softmax(ctx: &OpCtx) -> OpResult {
    softmax_like(ctx, |x, axis, kind| x.f_softmax(axis, kind))
}

pub fn log_softmax(ctx: &OpCtx) -> OpResult {
    softmax_like(ctx, |x, axis, kind| x.f_log_softmax(axis, kind))
}

/// Scores [N, C, d...], labels [N, d...], optional class weights [C]; the mean
/// reduction divides by the summed weights of the counted labels, exactly as
/// PyTorch's `cross_entropy`. `ignore_index` has no default in ONNX: without it
/// no label is ignored (an out-of-range label is an error).
pub fn softmax_cross_entropy(ctx: &OpCtx) -> OpResult {
    let scores = ctx.input(0)?;
    let labels = ctx.input(1)?.f_to_kind(Kind::Int64)?;
    let weights = ctx.opt_input(2);
    let reduction = match ctx.attr_string("reduction", "mean").as_str() {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        other => return Err(ctx.error(format!("unknown reduction '{other}'"))),
    };
    let ignore_index = ctx
        .attr("ignore_index")
        .and_then(|a| a.i)
        .unwrap_or(i64::MIN);
    if scores.dim() < 2 {
        return Err(ctx.error(format!(
            "scores must be [N, C, ...], got shape {:?}",
            scores.size()
        )));
    }
    let log_prob = scores.f_log_softmax(1, None)?;
    let loss = log_prob.f_nll_loss_nd(&labels, weights, reduction, ignore_index)?;
    Ok(if ctx.wants_output(1) {
        vec![loss, log_prob]
    } else {
        vec![loss]
    })
}

/// `values[1]` where the (wrapped) index equals the position along the new axis,
/// `values[0]` elsewhere; indices outside [-depth, depth) give an all-off row.
pub fn one_hot(ctx: &OpCtx) -> OpResult {
    let indices = ctx.input(0)?.f_to_kind(Kind::Int64)?;
    let depth = ctx
        .scalar_input(1)?
        .ok_or_else(|| ctx.error("depth is missing"))? as i64;
    let values = ctx.input(2)?;
    if values.numel() != 2 {
        return Err(ctx.error("values must hold [off_value, on_value]"));
    }
    let rank = indices.dim() + 1;
    let axis = normalize_axis(ctx.attr_int("axis", -1), rank)?;
    let wrapped = indices.f_where_self(&indices.f_ge(0)?, &indices.f_add_scalar(depth)?)?;
    let positions = Tensor::f_arange(depth, (Kind::Int64, indices.device()))?;
    let hot = wrapped.f_unsqueeze(-1)?.f_eq_tensor(&positions)?;
    let (off, on) = (values.f_get(0)?, values.f_get(1)?);
    let encoded = on.f_where_self(&hot, &off)?;
    one(encoded.f_movedim([rank as i64 - 1], [axis])?)
}
