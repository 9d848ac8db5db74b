//! Constants, shape arithmetic and data movement: Constant, Shape, Reshape,
//! Slice, Pad, Gather and friends.

use crate::onnx::tensor::{f32_tensor, i64_tensor};
use crate::ops::kernel::{normalize_axis, one, OpCtx, OpError, OpResult};
use crate::ops::torch_tensor as convert;
use tch::{Kind, Tensor};

pub fn constant(ctx: &OpCtx) -> OpResult {
    let proto = if let Some(t) = ctx.attr_tensor("value") {
        t.clone()
    } else if let Some(v) = ctx.attr("value_float").and_then(|a| a.f) {
        f32_tensor("", &[], &[v])
    } else if let Some(a) = ctx.attr("value_floats") {
        f32_tensor("", &[a.floats.len() as i64], &a.floats)
    } else if let Some(v) = ctx.attr("value_int").and_then(|a| a.i) {
        i64_tensor("", &[], &[v])
    } else if let Some(a) = ctx.attr("value_ints") {
        i64_tensor("", &[a.ints.len() as i64], &a.ints)
    } else {
        return Err(ctx.error(
            "needs one of the attributes value, value_float(s), value_int(s) (sparse and string constants are not supported)",
        ));
    };
    one(convert::from_proto(&proto, ctx.device)?)
}

/// A tensor of the given shape filled with `value`'s single element (float32 0 by default).
pub fn constant_of_shape(ctx: &OpCtx) -> OpResult {
    let shape = ctx.ints_input(0)?;
    let value = match ctx.attr_tensor("value") {
        Some(t) => convert::from_proto(t, ctx.device)?,
        None => Tensor::f_zeros([1], (Kind::Float, ctx.device))?,
    };
    if value.numel() != 1 {
        return Err(ctx.error("value must hold exactly one element"));
    }
    one(value
        .f_reshape([0i64; 0])?
        .f_expand(shape.as_slice(), false)?
        .f_contiguous()?)
}

fn i64_on_device(ctx: &OpCtx, values: &[i64]) -> Result<Tensor, OpError> {
    Ok(Tensor::from_slice(values).f_to_device(ctx.device)?)
}

/// The dims from `start` (default 0) to `end` (default rank), negative values
/// counting from the end, both clamped to [0, rank] (opset 15).
pub fn shape(ctx: &OpCtx) -> OpResult {
    let dims = ctx.input(0)?.size();
    let rank = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clamp(ctx.attr_int("start", 0));
    let end = clamp(ctx.attr_int("end", rank));
    let kept = if start < end { &dims[start..end] } else { &[] };
    one(i64_on_device(ctx, kept)?)
}

pub fn size(ctx: &OpCtx) -> OpResult {
    let count = ctx.input(0)?.numel() as i64;
    one(i64_on_device(ctx, &[count])?.f_reshape([0i64; 0])?)
}

/// [prod(dims before axis), prod(dims from axis)], axis default 1.
pub fn flatten(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let dims = x.size();
    let axis = ctx.attr_int("axis", 1);
    let axis = if axis == dims.len() as i64 {
        axis as usize
    } else {
        normalize_axis(axis, dims.len())? as usize
    };
    let outer: i64 = dims[..axis].iter().product();
    let inner: i64 = dims[axis..].iter().product();
    one(x.f_reshape([outer, inner])?)
}

/// 0 copies the input's dim at that position unless `allowzero` is set; -1 is inferred.
pub fn reshape(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let mut target = ctx.ints_input(1)?;
    if ctx.attr_int("allowzero", 0) == 0 {
        let dims = x.size();
        if target.len() > dims.len() && target[dims.len()..].contains(&0) {
            return Err(ctx.error(format!(
                "shape {target:?} copies a dim beyond the input's rank {}",
                dims.len()
            )));
        }
        for (d, &input_dim) in target.iter_mut().zip(&dims) {
            if *d == 0 {
                *d = input_dim;
            }
        }
    }
    one(x.f_reshape(target.as_slice())?)
}

pub fn squeeze(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let dims = x.size();
    let axes = match ctx.axes(13, 1)? {
        Some(axes) => axes
            .iter()
            .map(|&a| normalize_axis(a, dims.len()))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..dims.len() as i64)
            .filter(|&a| dims[a as usize] == 1)
            .collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| dims[a as usize] != 1) {
        return Err(ctx.error(format!("cannot squeeze axis {a} of shape {dims:?}")));
    }
    one(x.f_squeeze_dims(axes.as_slice())?)
}

pub fn unsqueeze(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let axes = ctx
        .axes(13, 1)?
        .ok_or_else(|| ctx.error("axes are required"))?;
    let rank = x.dim() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    let mut y = x.shallow_clone();
    for a in axes {
        y = y.f_unsqueeze(a)?;
    }
    one(y)
}

/// `perm` defaults to reversing the axes.
pub fn transpose(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let perm = ctx
        .attr_ints("perm")
        .unwrap_or_else(|| (0..x.dim() as i64).rev().collect());
    one(x.f_permute(perm.as_slice())?)
}

pub fn concat(ctx: &OpCtx) -> OpResult {
    let inputs = ctx.present_inputs();
    let first = inputs
        .first()
        .ok_or_else(|| ctx.error("needs at least one input"))?;
    let axis = ctx
        .attr("axis")
        .and_then(|a| a.i)
        .ok_or_else(|| ctx.error("axis is required"))?;
    let axis = normalize_axis(axis, first.dim())?;
    one(Tensor::f_cat(&inputs, axis)?)
}

/// Sizes from the `split` input (opset 13) or attribute; else equal parts, one per
/// output (`num_outputs` from opset 18: the last part may be smaller).
pub fn split(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let axis = normalize_axis(ctx.attr_int("axis", 0), x.dim())?;
    let dim = x.size()[axis as usize];
    let given = if ctx.opset >= 13 {
        ctx.opt_ints_input(1)?
    } else {
        ctx.attr_ints("split")
    };
    let sizes = match given {
        Some(sizes) => sizes,
        None => {
            let parts = ctx.attr_int("num_outputs", ctx.node.output.len() as i64);
            if parts <= 0 {
                return Err(ctx.error("needs at least one output"));
            }
            let chunk = (dim + parts - 1) / parts;
            (0..parts)
                .map(|i| (dim - i * chunk).clamp(0, chunk))
                .collect()
        }
    };
    if sizes.iter().sum::<i64>() != dim {
        return Err(ctx.error(format!(
            "split sizes {sizes:?} do not add up to the axis length {dim}"
        )));
    }
    Ok(x.f_split_with_sizes(sizes.as_slice(), axis)?)
}

/// Bounds are inputs from opset 10 (attributes before). Per axis: negative bounds
/// count from the end; start is clamped to [0, dim] (to [0, dim - 1] for a negative
/// step), end to [0, dim] (to [-1, dim - 1]).
pub fn slice(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let (starts, ends, axes, steps) = if ctx.opset >= 10 {
        (
            ctx.ints_input(1)?,
            ctx.ints_input(2)?,
            ctx.opt_ints_input(3)?,
            ctx.opt_ints_input(4)?,
        )
    } else {
        (
            ctx.attr_ints("starts").unwrap_or_default(),
            ctx.attr_ints("ends").unwrap_or_default(),
            ctx.attr_ints("axes"),
            None,
        )
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(ctx.error("starts, ends, axes and steps must have the same length"));
    }
    let mut y = x.shallow_clone();
    for i in 0..n {
        let axis = normalize_axis(axes[i], x.dim())?;
        let dim = y.size()[axis as usize];
        let step = steps[i];
        if step == 0 {
            return Err(ctx.error("a step of 0 is not allowed"));
        }
        let wrap = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        if step > 0 {
            let start = wrap(starts[i]).clamp(0, dim);
            let end = wrap(ends[i]).clamp(0, dim).max(start);
            y = y.f_slice(axis, start, end, step)?;
        } else {
            // libtorch slices only forwards: gather the positions instead.
            let start = wrap(starts[i]).clamp(0, dim - 1);
            let end = wrap(ends[i]).clamp(-1, dim - 1);
            let positions: Vec<i64> = (end + 1..=start).rev().step_by((-step) as usize).collect();
            y = y.f_index_select(axis, &i64_on_device(ctx, &positions)?)?;
        }
    }
    one(y)
}

/// `pads` [x1_begin, x2_begin, ..., x1_end, x2_end, ...] (an input from opset 11,
/// optionally for the listed `axes` from opset 18); modes constant (value default
/// 0), reflect, edge and wrap.
pub fn pad(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let rank = x.dim();
    let (pads, value) = if ctx.opset >= 11 {
        (ctx.ints_input(1)?, ctx.scalar_input(2)?.unwrap_or(0.0))
    } else {
        (
            ctx.attr_ints("pads").unwrap_or_default(),
            f64::from(ctx.attr_float("value", 0.0)),
        )
    };
    let axes = match ctx.opt_ints_input(3)? {
        Some(axes) => axes
            .iter()
            .map(|&a| normalize_axis(a, rank).map(|a| a as usize))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(ctx.error(format!(
            "pads has {} values, expected {}",
            pads.len(),
            2 * axes.len()
        )));
    }
    let (mut begin, mut end) = (vec![0; rank], vec![0; rank]);
    for (i, &axis) in axes.iter().enumerate() {
        begin[axis] = pads[i];
        end[axis] = pads[i + axes.len()];
    }
    // libtorch lists (begin, end) from the last axis backwards; leading unpadded
    // axes are left out, which the reflect and edge modes need.
    let first = (0..rank).find(|&a| begin[a] != 0 || end[a] != 0);
    let Some(first) = first else {
        return one(x.shallow_clone());
    };
    let list: Vec<i64> = (first..rank)
        .rev()
        .flat_map(|a| [begin[a], end[a]])
        .collect();
    let mode = ctx.attr_string("mode", "constant");
    one(match mode.as_str() {
        "constant" if value == 0.0 => x.f_constant_pad_nd(list.as_slice())?,
        "constant" => x.f_pad(list.as_slice(), "constant", value)?,
        "reflect" => x.f_pad(list.as_slice(), "reflect", None)?,
        "edge" => x.f_pad(list.as_slice(), "replicate", None)?,
        "wrap" => x.f_pad(list.as_slice(), "circular", None)?,
        other => return Err(ctx.error(format!("unknown mode '{other}'"))),
    })
}

/// Output shape: data dims before `axis` (default 0), the indices' shape, data
/// dims after; negative indices count from the end.
pub fn gather(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let dims = x.size();
    let axis = normalize_axis(ctx.attr_int("axis", 0), dims.len())?;
    let indices = ctx.input(1)?.f_to_kind(Kind::Int64)?;
    let dim = dims[axis as usize];
    let wrapped = indices.f_where_self(&indices.f_ge(0)?, &indices.f_add_scalar(dim)?)?;
    let picked = x.f_index_select(axis, &wrapped.f_reshape([-1])?)?;
    let mut shape = dims[..axis as usize].to_vec();
    shape.extend(indices.size());
    shape.extend(&dims[axis as usize + 1..]);
    one(picked.f_reshape(shape.as_slice())?)
}

/// Broadcasts the input against `shape` (bidirectionally, numpy rules).
pub fn expand(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let target = ctx.ints_input(1)?;
    let dims = x.size();
    let rank = dims.len().max(target.len());
    let at = |v: &[i64], i: usize| -> i64 {
        let offset = rank - v.len();
        if i < offset {
            1
        } else {
            v[i - offset]
        }
    };
    let mut shape = Vec::with_capacity(rank);
    for i in 0..rank {
        let (a, b) = (at(&dims, i), at(&target, i));
        shape.push(match (a, b) {
            (1, b) => b,
            (a, 1) => a,
            (a, b) if a == b => a,
            _ => return Err(ctx.error(format!("shape {dims:?} does not broadcast to {target:?}"))),
        });
    }
    one(x.f_expand(shape.as_slice(), false)?)
}
