//! Constants, shape arithmetic and data movement: Constant, Shape, Reshape,
//! Slice, Pad, Gather and friends.

use crate::onnx::tensor::{f32_tensor, i64_tensor};
use crate::onnx::NodeAttributes;
use crate::ops::kernel::{
    normalize_axes, normalize_axis, one, step, Host, NodeCtx, OpError, Prepare, Prepared,
};
use crate::ops::torch_tensor as convert;
use std::borrow::Cow;
use tch::{Device, Kind, Tensor};

/// Made once, on the program's device.
pub fn constant(node: &NodeCtx) -> Prepare {
    let proto = if let Some(t) = node.attr_tensor("value") {
        Cow::Borrowed(t)
    } else if let Some(v) = node.attr("value_float").and_then(|a| a.f) {
        Cow::Owned(f32_tensor("", &[], &[v]))
    } else if let Some(a) = node.attr("value_floats") {
        Cow::Owned(f32_tensor("", &[a.floats.len() as i64], &a.floats))
    } else if let Some(v) = node.attr("value_int").and_then(|a| a.i) {
        Cow::Owned(i64_tensor("", &[], &[v]))
    } else if let Some(a) = node.attr("value_ints") {
        Cow::Owned(i64_tensor("", &[a.ints.len() as i64], &a.ints))
    } else {
        return Err(node.error(
            "needs one of the attributes value, value_float(s), value_int(s) (sparse and string constants are not supported)",
        ));
    };
    Ok(Prepared::Fixed(vec![convert::from_proto(
        &proto,
        node.device,
    )?]))
}

/// A tensor of the given shape filled with `value`'s single element (float32 0
/// by default); made once when the shape is a constant of the graph.
pub fn constant_of_shape(node: &NodeCtx) -> Prepare {
    let value = match node.attr_tensor("value") {
        Some(t) => convert::from_proto(t, node.device)?,
        None => Tensor::f_zeros([1], (Kind::Float, node.device))?,
    };
    if value.numel() != 1 {
        return Err(node.error("value must hold exactly one element"));
    }
    let value = value.f_reshape([0i64; 0])?;
    let fill = move |shape: &[i64]| -> Result<Tensor, OpError> {
        Ok(value.f_expand(shape, false)?.f_contiguous()?)
    };
    let shape = node.ints_input(0)?;
    if let Host::Fixed(Some(shape)) = &shape {
        return Ok(Prepared::Fixed(vec![fill(shape)?]));
    }
    step(move |ctx| one(fill(&shape.required(ctx, "shape")?)?))
}

fn i64_on(device: Device, values: &[i64]) -> Result<Tensor, OpError> {
    Ok(Tensor::from_slice(values).f_to_device(device)?)
}

/// The dims from `start` (default 0) to `end` (default rank), negative values
/// counting from the end, both clamped to [0, rank] (opset 15).
pub fn shape(node: &NodeCtx) -> Prepare {
    let start = node.attr_int("start", 0);
    let end = node.attr("end").and_then(|a| a.i);
    step(move |ctx| {
        let x = ctx.input(0)?;
        let dims = x.size();
        let rank = dims.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
        let (start, end) = (clamp(start), clamp(end.unwrap_or(rank)));
        let kept = if start < end { &dims[start..end] } else { &[] };
        one(i64_on(x.device(), kept)?)
    })
}

pub fn size(_: &NodeCtx) -> Prepare {
    step(|ctx| {
        let x = ctx.input(0)?;
        one(i64_on(x.device(), &[x.numel() as i64])?.f_reshape([0i64; 0])?)
    })
}

/// [prod(dims before axis), prod(dims from axis)], axis default 1.
pub fn flatten(node: &NodeCtx) -> Prepare {
    let axis = node.attr_int("axis", 1);
    step(move |ctx| {
        let x = ctx.input(0)?;
        let dims = x.size();
        let axis = if axis == dims.len() as i64 {
            axis as usize
        } else {
            normalize_axis(axis, dims.len())? as usize
        };
        let outer: i64 = dims[..axis].iter().product();
        let inner: i64 = dims[axis..].iter().product();
        one(x.f_reshape([outer, inner])?)
    })
}

/// 0 copies the input's dim at that position unless `allowzero` is set; -1 is inferred.
pub fn reshape(node: &NodeCtx) -> Prepare {
    let shape = node.ints_input(1)?;
    let copies_zeros = node.attr_int("allowzero", 0) == 0;
    step(move |ctx| {
        let x = ctx.input(0)?;
        let target = shape.required(ctx, "shape")?;
        if !copies_zeros || !target.contains(&0) {
            return one(x.f_reshape(&*target)?);
        }
        let dims = x.size();
        if target.len() > dims.len() && target[dims.len()..].contains(&0) {
            return Err(ctx.error(format!(
                "shape {target:?} copies a dim beyond the input's rank {}",
                dims.len()
            )));
        }
        let target: Vec<i64> = target
            .iter()
            .zip(dims.iter().chain(std::iter::repeat(&0)))
            .map(|(&d, &input_dim)| if d == 0 { input_dim } else { d })
            .collect();
        one(x.f_reshape(target.as_slice())?)
    })
}

pub fn squeeze(node: &NodeCtx) -> Prepare {
    let axes = node.axes(13, 1)?;
    step(move |ctx| {
        let x = ctx.input(0)?;
        let dims = x.size();
        let axes = match axes.get(ctx)? {
            Some(axes) => normalize_axes(&axes, dims.len())?.into_owned(),
            None => (0..dims.len() as i64)
                .filter(|&a| dims[a as usize] == 1)
                .collect(),
        };
        if let Some(&a) = axes.iter().find(|&&a| dims[a as usize] != 1) {
            return Err(ctx.error(format!("cannot squeeze axis {a} of shape {dims:?}")));
        }
        one(x.f_squeeze_dims(axes.as_slice())?)
    })
}

pub fn unsqueeze(node: &NodeCtx) -> Prepare {
    let axes = node.axes(13, 1)?;
    if let Host::Fixed(None) = axes {
        return Err(node.error("axes are required"));
    }
    step(move |ctx| {
        let x = ctx.input(0)?;
        let axes = axes.required(ctx, "axes")?;
        let rank = x.dim() + axes.len();
        let mut axes = normalize_axes(&axes, rank)?.into_owned();
        axes.sort_unstable();
        let mut y = x.shallow_clone();
        for a in axes {
            y = y.f_unsqueeze(a)?;
        }
        one(y)
    })
}

/// `perm` defaults to reversing the axes.
pub fn transpose(node: &NodeCtx) -> Prepare {
    let perm = node.attr_ints("perm");
    step(move |ctx| {
        let x = ctx.input(0)?;
        match &perm {
            Some(perm) => one(x.f_permute(perm.as_slice())?),
            None => {
                let reversed: Vec<i64> = (0..x.dim() as i64).rev().collect();
                one(x.f_permute(reversed.as_slice())?)
            }
        }
    })
}

pub fn concat(node: &NodeCtx) -> Prepare {
    let axis = node
        .attr("axis")
        .and_then(|a| a.i)
        .ok_or_else(|| node.error("axis is required"))?;
    step(move |ctx| {
        let inputs: Vec<&Tensor> = ctx.present_inputs().collect();
        let first = inputs
            .first()
            .ok_or_else(|| ctx.error("needs at least one input"))?;
        let axis = normalize_axis(axis, first.dim())?;
        one(Tensor::f_cat(&inputs, axis)?)
    })
}

/// Sizes from the `split` input (opset 13) or attribute; else equal parts, one per
/// output (`num_outputs` from opset 18: the last part may be smaller).
pub fn split(node: &NodeCtx) -> Prepare {
    let axis = node.attr_int("axis", 0);
    let given = if node.opset >= 13 {
        node.ints_input(1)?
    } else {
        Host::Fixed(node.attr_ints("split"))
    };
    let parts = node.attr_int("num_outputs", node.node.output.len() as i64);
    step(move |ctx| {
        let x = ctx.input(0)?;
        let axis = normalize_axis(axis, x.dim())?;
        let dim = x.size()[axis as usize];
        let sizes = match given.get(ctx)? {
            Some(sizes) => sizes,
            None => {
                if parts <= 0 {
                    return Err(ctx.error("needs at least one output"));
                }
                let chunk = (dim + parts - 1) / parts;
                Cow::Owned(
                    (0..parts)
                        .map(|i| (dim - i * chunk).clamp(0, chunk))
                        .collect(),
                )
            }
        };
        if sizes.iter().sum::<i64>() != dim {
            return Err(ctx.error(format!(
                "split sizes {sizes:?} do not add up to the axis length {dim}"
            )));
        }
        Ok(x.f_split_with_sizes(&*sizes, axis)?)
    })
}

/// Bounds are inputs from opset 10 (attributes before). Per axis: negative bounds
/// count from the end; start is clamped to [0, dim] (to [0, dim - 1] for a negative
/// step), end to [0, dim] (to [-1, dim - 1]).
pub fn slice(node: &NodeCtx) -> Prepare {
    let (starts, ends, axes, steps) = if node.opset >= 10 {
        (
            node.ints_input(1)?,
            node.ints_input(2)?,
            node.ints_input(3)?,
            node.ints_input(4)?,
        )
    } else {
        (
            Host::Fixed(Some(node.attr_ints("starts").unwrap_or_default())),
            Host::Fixed(Some(node.attr_ints("ends").unwrap_or_default())),
            Host::Fixed(node.attr_ints("axes")),
            Host::Fixed(None),
        )
    };
    step(move |ctx| {
        let x = ctx.input(0)?;
        let starts = starts.required(ctx, "starts")?;
        let ends = ends.required(ctx, "ends")?;
        let n = starts.len();
        let axes = axes
            .get(ctx)?
            .unwrap_or_else(|| Cow::Owned((0..n as i64).collect()));
        let steps = steps.get(ctx)?.unwrap_or_else(|| Cow::Owned(vec![1; n]));
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
                let positions: Vec<i64> =
                    (end + 1..=start).rev().step_by((-step) as usize).collect();
                y = y.f_index_select(axis, &i64_on(x.device(), &positions)?)?;
            }
        }
        one(y)
    })
}

/// Pad's `mode`, as libtorch names it.
#[derive(Clone, Copy)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// `pads` [x1_begin, x2_begin, ..., x1_end, x2_end, ...] (an input from opset 11,
/// optionally for the listed `axes` from opset 18); modes constant (value default
/// 0), reflect, edge and wrap.
pub fn pad(node: &NodeCtx) -> Prepare {
    let (pads, value) = if node.opset >= 11 {
        (node.ints_input(1)?, node.scalar_input(2)?)
    } else {
        (
            Host::Fixed(Some(node.attr_ints("pads").unwrap_or_default())),
            Host::Fixed(Some(f64::from(node.attr_float("value", 0.0)))),
        )
    };
    let axes = node.ints_input(3)?;
    let mode = match node.attr_string("mode", "constant").as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => return Err(node.error(format!("unknown mode '{other}'"))),
    };
    step(move |ctx| {
        let x = ctx.input(0)?;
        let rank = x.dim();
        let pads = pads.required(ctx, "pads")?;
        let value = value.get(ctx)?.unwrap_or(0.0);
        let axes: Vec<usize> = match axes.get(ctx)? {
            Some(axes) => normalize_axes(&axes, rank)?
                .iter()
                .map(|&a| a as usize)
                .collect(),
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
        let list = list.as_slice();
        one(match mode {
            PadMode::Constant if value == 0.0 => x.f_constant_pad_nd(list)?,
            PadMode::Constant => x.f_pad(list, "constant", value)?,
            PadMode::Reflect => x.f_pad(list, "reflect", None)?,
            PadMode::Edge => x.f_pad(list, "replicate", None)?,
            PadMode::Wrap => x.f_pad(list, "circular", None)?,
        })
    })
}

/// Output shape: data dims before `axis` (default 0), the indices' shape, data
/// dims after; negative indices count from the end.
pub fn gather(node: &NodeCtx) -> Prepare {
    let axis = node.attr_int("axis", 0);
    step(move |ctx| {
        let x = ctx.input(0)?;
        let dims = x.size();
        let axis = normalize_axis(axis, dims.len())?;
        let indices = ctx.input(1)?.f_to_kind(Kind::Int64)?;
        let dim = dims[axis as usize];
        let wrapped = indices.f_where_self(&indices.f_ge(0)?, &indices.f_add_scalar(dim)?)?;
        let picked = x.f_index_select(axis, &wrapped.f_reshape([-1])?)?;
        let mut shape = dims[..axis as usize].to_vec();
        shape.extend(indices.size());
        shape.extend(&dims[axis as usize + 1..]);
        one(picked.f_reshape(shape.as_slice())?)
    })
}

/// Indices along `axis` of a tensor of `len` there, negative ones counted from the end.
fn wrapped_indices(indices: &Tensor, len: i64) -> Result<Tensor, tch::TchError> {
    let indices = indices.f_to_kind(Kind::Int64)?;
    indices.f_where_self(&indices.f_ge(0)?, &indices.f_add_scalar(len)?)
}

/// ScatterElements with reduction none (`scatter`) or add (`scatter_add`).
pub fn scatter_elements(node: &NodeCtx) -> Prepare {
    let axis = node.attr_int("axis", 0);
    let add = match node.node.string_attr("reduction").unwrap_or("none") {
        "none" => false,
        "add" => true,
        other => {
            return Err(node.error(format!(
                "reduction '{other}' is not supported (none and add are)"
            )))
        }
    };
    step(move |ctx| {
        let data = ctx.input(0)?;
        let axis = normalize_axis(axis, data.dim())?;
        let indices = wrapped_indices(ctx.input(1)?, data.size()[axis as usize])?;
        let updates = ctx.input(2)?;
        one(if add {
            data.f_scatter_add(axis, &indices, updates)?
        } else {
            data.f_scatter(axis, &indices, updates)?
        })
    })
}

/// GatherElements (`gather` along the axis).
pub fn gather_elements(node: &NodeCtx) -> Prepare {
    let axis = node.attr_int("axis", 0);
    step(move |ctx| {
        let data = ctx.input(0)?;
        let axis = normalize_axis(axis, data.dim())?;
        let indices = wrapped_indices(ctx.input(1)?, data.size()[axis as usize])?;
        one(data.f_gather(axis, &indices, false)?)
    })
}

/// GatherND with batch_dims 0: each index tuple over data's first k axes
/// becomes one flat position, whose slices `index_select` reads.
pub fn gather_nd(node: &NodeCtx) -> Prepare {
    if node.attr_int("batch_dims", 0) != 0 {
        return Err(node.error("batch_dims other than 0 is not supported"));
    }
    step(move |ctx| {
        let data = ctx.input(0)?;
        let indices = ctx.input(1)?.f_to_kind(Kind::Int64)?;
        let dims = data.size();
        let index_dims = indices.size();
        let k = *index_dims
            .last()
            .ok_or_else(|| ctx.error("indices of rank 0"))? as usize;
        if k == 0 || k > dims.len() {
            return Err(ctx.error(format!(
                "index tuples of length {k} for data of rank {}",
                dims.len()
            )));
        }
        let mut flat = Tensor::f_zeros(
            &index_dims[..index_dims.len() - 1],
            (Kind::Int64, data.device()),
        )?;
        for (axis, &len) in dims[..k].iter().enumerate() {
            let column = wrapped_indices(&indices.f_select(-1, axis as i64)?, len)?;
            flat = flat.f_mul_scalar(len)?.f_add(&column)?;
        }
        let rows: i64 = dims[..k].iter().product();
        let mut table_shape = vec![rows];
        table_shape.extend(&dims[k..]);
        let picked = data
            .f_reshape(table_shape.as_slice())?
            .f_index_select(0, &flat.f_reshape([-1])?)?;
        let mut shape = index_dims[..index_dims.len() - 1].to_vec();
        shape.extend(&dims[k..]);
        one(picked.f_reshape(shape.as_slice())?)
    })
}

/// Repeats the input along each axis (`Tensor::repeat`, one count per axis).
pub fn tile(node: &NodeCtx) -> Prepare {
    let repeats = node.ints_input(1)?;
    step(move |ctx| {
        let x = ctx.input(0)?;
        let repeats = repeats.required(ctx, "repeats")?;
        if repeats.len() != x.dim() || repeats.iter().any(|&r| r < 0) {
            return Err(ctx.error(format!(
                "repeats {repeats:?} do not fit an input of rank {}",
                x.dim()
            )));
        }
        one(x.f_repeat(&repeats[..])?)
    })
}

/// Broadcasts the input against `shape` (bidirectionally, numpy rules).
pub fn expand(node: &NodeCtx) -> Prepare {
    let target = node.ints_input(1)?;
    step(move |ctx| {
        let x = ctx.input(0)?;
        let target = target.required(ctx, "shape")?;
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
                _ => {
                    return Err(
                        ctx.error(format!("shape {dims:?} does not broadcast to {target:?}"))
                    )
                }
            });
        }
        one(x.f_expand(shape.as_slice(), false)?)
    })
}
