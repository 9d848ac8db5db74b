//! Reductions. Axes are an attribute up to opset 17 (12 for ReduceSum) and an
//! input from opset 18 (13); `keepdims` defaults to 1; with no axes every axis is
//! reduced, unless `noop_with_empty_axes` is set.

use crate::ops::kernel::{normalize_axis, one, OpCtx, OpError, OpResult};
use tch::Tensor;

/// The axes to reduce over, or `None` for the identity (`noop_with_empty_axes`).
fn reduced_axes(ctx: &OpCtx, input_from_opset: i64) -> Result<Option<Vec<i64>>, OpError> {
    let rank = ctx.input(0)?.dim();
    let axes = ctx.axes(input_from_opset, 1)?.unwrap_or_default();
    if axes.is_empty() {
        if ctx.attr_int("noop_with_empty_axes", 0) != 0 {
            return Ok(None);
        }
        return Ok(Some((0..rank as i64).collect()));
    }
    axes.iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn reduce(
    ctx: &OpCtx,
    input_from_opset: i64,
    f: impl Fn(&Tensor, &[i64], bool) -> Result<Tensor, tch::TchError>,
) -> OpResult {
    let x = ctx.input(0)?;
    let keep = ctx.attr_int("keepdims", 1) != 0;
    match reduced_axes(ctx, input_from_opset)? {
        None => one(x.shallow_clone()),
        Some(axes) => one(f(x, &axes, keep)?),
    }
}

pub fn reduce_sum(ctx: &OpCtx) -> OpResult {
    reduce(ctx, 13, |x, axes, keep| {
        x.f_sum_dim_intlist(axes, keep, None)
    })
}

pub fn reduce_mean(ctx: &OpCtx) -> OpResult {
    reduce(ctx, 18, |x, axes, keep| x.f_mean_dim(axes, keep, None))
}

pub fn reduce_max(ctx: &OpCtx) -> OpResult {
    reduce(ctx, 18, |x, axes, keep| x.f_amax(axes, keep))
}

pub fn reduce_min(ctx: &OpCtx) -> OpResult {
    reduce(ctx, 18, |x, axes, keep| x.f_amin(axes, keep))
}

pub fn reduce_l2(ctx: &OpCtx) -> OpResult {
    reduce(ctx, 18, |x, axes, keep| {
        x.f_norm_scalaropt_dim(2.0, axes, keep)
    })
}

/// `x / ||x||_p` along `axis` (default -1), p in {1, 2} (default 2), no epsilon.
pub fn lp_normalization(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let axis = normalize_axis(ctx.attr_int("axis", -1), x.dim())?;
    let p = ctx.attr_int("p", 2);
    if p != 1 && p != 2 {
        return Err(ctx.error(format!("p must be 1 or 2, got {p}")));
    }
    let norm = x.f_norm_scalaropt_dim(p as f64, [axis], true)?;
    one(x.f_div(&norm)?)
}
