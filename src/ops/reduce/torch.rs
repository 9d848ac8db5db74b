//! Reductions. Axes are an attribute up to opset 17 (12 for ReduceSum) and an
//! input from opset 18 (13); `keepdims` defaults to 1; with no axes every axis is
//! reduced, unless `noop_with_empty_axes` is set.

use crate::ops::kernel::{normalize_axes, normalize_axis, one, step, NodeCtx, Prepare};
use std::borrow::Cow;
use tch::Tensor;

type Reduce = fn(&Tensor, &[i64], bool) -> Result<Tensor, tch::TchError>;

fn reduce(node: &NodeCtx, input_from_opset: i64, f: Reduce) -> Prepare {
    let axes = node.axes(input_from_opset, 1)?;
    let keep = node.attr_int("keepdims", 1) != 0;
    let noop_without_axes = node.attr_int("noop_with_empty_axes", 0) != 0;
    step(move |ctx| {
        let x = ctx.input(0)?;
        let rank = x.dim();
        let axes = match axes.get(ctx)? {
            Some(axes) if !axes.is_empty() => axes,
            _ if noop_without_axes => return one(x.shallow_clone()),
            _ => Cow::Owned((0..rank as i64).collect()),
        };
        one(f(x, &normalize_axes(&axes, rank)?, keep)?)
    })
}

pub fn reduce_sum(node: &NodeCtx) -> Prepare {
    reduce(node, 13, |x, axes, keep| {
        x.f_sum_dim_intlist(axes, keep, None)
    })
}

pub fn reduce_mean(node: &NodeCtx) -> Prepare {
    reduce(node, 18, |x, axes, keep| x.f_mean_dim(axes, keep, None))
}

pub fn reduce_max(node: &NodeCtx) -> Prepare {
    reduce(node, 18, |x, axes, keep| x.f_amax(axes, keep))
}

pub fn reduce_min(node: &NodeCtx) -> Prepare {
    reduce(node, 18, |x, axes, keep| x.f_amin(axes, keep))
}

pub fn reduce_l2(node: &NodeCtx) -> Prepare {
    reduce(node, 18, |x, axes, keep| {
        x.f_norm_scalaropt_dim(2.0, axes, keep)
    })
}

/// `x / ||x||_p` along `axis` (default -1), p in {1, 2} (default 2), no epsilon.
pub fn lp_normalization(node: &NodeCtx) -> Prepare {
    let axis = node.attr_int("axis", -1);
    let p = node.attr_int("p", 2);
    if p != 1 && p != 2 {
        return Err(node.error(format!("p must be 1 or 2, got {p}")));
    }
    step(move |ctx| {
        let x = ctx.input(0)?;
        let axis = normalize_axis(axis, x.dim())?;
        let norm = x.f_norm_scalaropt_dim(p as f64, [axis], true)?;
        one(x.f_div(&norm)?)
    })
}
