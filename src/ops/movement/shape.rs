//! Shape and type inference of data-movement and shape ops, and the integer contents
//! (shape arithmetic) they fold, for the inference engine (`ValueShapes::infer`).

#![allow(unused_imports)]
use crate::ops::shapes::prelude::*;

pub(crate) fn constant(n: &Ctx) -> Option<TensorType> {
    constant_type(n.node)
}

pub(crate) fn gather_elements(n: &Ctx) -> Option<TensorType> {
    n.like(1, n.elem(0))
}

pub(crate) fn size(_: &Ctx) -> Option<TensorType> {
    typed(INT64, Some(vec![]))
}

pub(crate) fn constant_values(n: &Ctx) -> Option<Vec<Dim>> {
    constant_ints(n.node).map(|v| v.into_iter().map(Dim::Fixed).collect())
}

/// Same elements, new shape (Identity, Reshape, Flatten, Squeeze, Unsqueeze).
pub(crate) fn same_values(n: &Ctx) -> Option<Vec<Dim>> {
    n.values(0).map(<[Dim]>::to_vec)
}

pub(crate) fn size_values(n: &Ctx) -> Option<Vec<Dim>> {
    n.shape(0).map(|x| vec![dim_product(x)])
}

pub(crate) fn constant_type(node: &NodeProto) -> Option<TensorType> {
    let (elem, dims): (i32, Vec<i64>) =
        if let Some(t) = attribute(node, "value").and_then(|a| a.t.as_ref()) {
            (t.data_type(), t.dims.clone())
        } else if attribute(node, "value_float").is_some() {
            (FLOAT, vec![])
        } else if let Some(a) = attribute(node, "value_floats") {
            (FLOAT, vec![a.floats.len() as i64])
        } else if attribute(node, "value_int").is_some() {
            (INT64, vec![])
        } else if let Some(a) = attribute(node, "value_ints") {
            (INT64, vec![a.ints.len() as i64])
        } else {
            return None;
        };
    typed(elem, Some(dims.into_iter().map(Dim::Fixed).collect()))
}

pub(crate) fn flatten(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|x| {
        // axis may equal the rank (everything in the first factor).
        let axis = norm_axis_inclusive(n.int("axis", 1), x.len())?;
        Some(vec![dim_product(&x[..axis]), dim_product(&x[axis..])])
    });
    typed(n.elem(0), shape)
}

pub(crate) fn reshape(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let Some(target) = n.shape_operand(1) else {
        return typed(elem, None);
    };
    let allowzero = n.int("allowzero", 0) != 0;
    typed(elem, Some(reshape_dims(n.shape(0), &target, allowzero)))
}

/// Reshape's target: 0 copies the input dimension (unless `allowzero`), -1 is
/// whatever makes the element counts agree.
pub(crate) fn reshape_dims(input: Option<&[Dim]>, target: &[Dim], allowzero: bool) -> Vec<Dim> {
    let mut out: Vec<Dim> = target
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Dim::Fixed(0) if !allowzero => input
                .and_then(|x| x.get(i))
                .cloned()
                .unwrap_or(Dim::Unknown),
            Dim::Fixed(v) if *v >= 0 => Dim::Fixed(*v),
            Dim::Fixed(_) => Dim::Unknown,
            other => other.clone(),
        })
        .collect();
    if let Some(pos) = target.iter().position(|t| *t == Dim::Fixed(-1)) {
        let others: Vec<Dim> = out
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != pos)
            .map(|(_, d)| d.clone())
            .collect();
        out[pos] = input.map_or(Dim::Unknown, |x| missing_factor(x, &others));
    }
    out
}

pub(crate) fn transpose(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|x| {
        let perm = permutation(n, x.len())?;
        Some(perm.iter().map(|&p| x[p].clone()).collect())
    });
    typed(n.elem(0), shape)
}

/// Transpose's `perm`, reversing the axes by default.
pub(crate) fn permutation(n: &Ctx, rank: usize) -> Option<Vec<usize>> {
    let perm: Vec<usize> = match n.ints_attr("perm") {
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Option<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let distinct: HashSet<usize> = perm.iter().copied().collect();
    (perm.len() == rank && distinct.len() == rank).then_some(perm)
}

pub(crate) fn squeeze(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|x| match n.operand("axes", 1, 13) {
        Operand::Known(axes) => {
            let axes: HashSet<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, x.len()))
                .collect::<Option<_>>()?;
            Some(without_axes(x, &axes))
        }
        // Without axes every 1 goes; a symbolic size might be 1 at run time.
        Operand::Absent if x.iter().all(|d| matches!(d, Dim::Fixed(_))) => {
            Some(x.iter().filter(|d| **d != Dim::Fixed(1)).cloned().collect())
        }
        _ => None,
    });
    typed(n.elem(0), shape)
}

pub(crate) fn unsqueeze(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|x| {
        let Operand::Known(axes) = n.operand("axes", 1, 13) else {
            return None;
        };
        let rank = x.len() + axes.len();
        let axes: HashSet<usize> = axes
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Option<_>>()?;
        let mut rest = x.iter();
        (0..rank)
            .map(|i| match axes.contains(&i) {
                true => Some(Dim::Fixed(1)),
                false => rest.next().cloned(),
            })
            .collect()
    });
    typed(n.elem(0), shape)
}

pub(crate) fn concat(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let shapes: Vec<Option<&[Dim]>> = n.inputs().map(|name| n.shapes.shape(name)).collect();
    let Some(first) = shapes.iter().flatten().next() else {
        return typed(elem, None);
    };
    let rank = first.len();
    let Some(axis) = norm_axis(n.int("axis", 0), rank) else {
        return typed(elem, None);
    };
    let known: Vec<&[Dim]> = shapes
        .iter()
        .flatten()
        .copied()
        .filter(|s| s.len() == rank)
        .collect();
    let mut out: Vec<Dim> = (0..rank)
        .map(|i| {
            known
                .iter()
                .fold(Dim::Unknown, |acc, s| refine_dim(&acc, &s[i]))
        })
        .collect();
    let parts: Option<Vec<Dim>> = shapes
        .iter()
        .map(|s| s.and_then(|s| s.get(axis).cloned()))
        .collect();
    out[axis] = match parts {
        Some(parts) => dim_sum(&parts),
        None => Dim::Unknown,
    };
    typed(elem, Some(out))
}

pub(crate) fn split(n: &Ctx) -> Vec<Option<TensorType>> {
    let elem = n.elem(0);
    let count = n.node.output.len();
    let axis_of = |x: &[Dim]| norm_axis(n.int("axis", 0), x.len());
    let Some((x, axis)) = n.shape(0).and_then(|x| Some((x, axis_of(x)?))) else {
        return vec![typed(elem, None); count];
    };
    split_sizes(n, &x[axis], count)
        .into_iter()
        .map(|size| {
            let mut dims = x.to_vec();
            dims[axis] = size;
            typed(elem, Some(dims))
        })
        .collect()
}

/// Split sizes: the `split` operand (input from opset 13), else `num_outputs`
/// (opset 18; the last chunk is smaller when uneven) or the output count.
pub(crate) fn split_sizes(n: &Ctx, dim: &Dim, count: usize) -> Vec<Dim> {
    match n.operand("split", 1, 13) {
        Operand::Known(sizes) => sizes.into_iter().map(Dim::Fixed).collect(),
        Operand::Unknown => vec![Dim::Unknown; count],
        Operand::Absent => {
            let parts = n.int("num_outputs", count as i64).max(1);
            // Sizes past the node's outputs would name nothing.
            (0..parts.min(count as i64))
                .map(|i| match dim {
                    Dim::Fixed(d) => {
                        let (d, i, parts) = (i128::from(*d), i128::from(i), i128::from(parts));
                        let chunk = ceil_div(d, parts);
                        narrow(chunk.min((d - i * chunk).max(0))).map_or(Dim::Unknown, Dim::Fixed)
                    }
                    whole if parts == 1 => whole.clone(),
                    _ => Dim::Unknown,
                })
                .collect()
        }
    }
}

/// One sliced axis with its raw (unnormalized) bounds.
pub(crate) struct SliceAxis {
    pub(crate) axis: usize,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
}

pub(crate) fn slice(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).map(|x| match slice_axes(n, x.len()) {
        Some(axes) => {
            let mut out = x.to_vec();
            for a in axes {
                out[a.axis] = slice_dim(&x[a.axis], &a);
            }
            out
        }
        // Bounds computed at run time: only the rank survives.
        None => vec![Dim::Unknown; x.len()],
    });
    typed(n.elem(0), shape)
}

/// Slice's starts/ends/axes/steps (inputs from opset 10, attributes before).
pub(crate) fn slice_axes(n: &Ctx, rank: usize) -> Option<Vec<SliceAxis>> {
    let known = |op: Operand| match op {
        Operand::Known(v) => Some(Some(v)),
        Operand::Absent => Some(None),
        Operand::Unknown => None,
    };
    let starts = known(n.operand("starts", 1, 10))??;
    let ends = known(n.operand("ends", 2, 10))??;
    let axes =
        known(n.operand("axes", 3, 10))?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = known(n.operand("steps", 4, 10))?.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return None;
    }
    (0..starts.len())
        .map(|i| {
            Some(SliceAxis {
                axis: norm_axis(axes[i], rank)?,
                start: starts[i],
                end: ends[i],
                step: steps[i],
            })
            .filter(|a| a.step != 0)
        })
        .collect()
}

pub(crate) fn slice_dim(dim: &Dim, a: &SliceAxis) -> Dim {
    match dim {
        Dim::Fixed(size) => Dim::Fixed(slice_range(*size, a).1),
        // A symbolic axis keeps its symbol only when taken whole (either direction).
        Dim::Symbolic(_) if a.step == 1 && a.start == 0 && a.end >= OPEN_BOUND => dim.clone(),
        Dim::Symbolic(_)
            if a.step == -1 && (a.start == -1 || a.start >= OPEN_BOUND) && a.end <= -OPEN_BOUND =>
        {
            dim.clone()
        }
        _ => Dim::Unknown,
    }
}

/// ONNX Slice on one axis of length `size`: (first index, element count).
pub(crate) fn slice_range(size: i64, a: &SliceAxis) -> (i64, i64) {
    // i128: bounds are often ±INT64_MAX, and adding the size must not overflow.
    if size <= 0 {
        return (0, 0);
    }
    let (size, step) = (i128::from(size), i128::from(a.step));
    let resolve = |v: i64| {
        let v = i128::from(v);
        if v < 0 {
            v + size
        } else {
            v
        }
    };
    let (start, end) = (resolve(a.start), resolve(a.end));
    let (start, end) = if step > 0 {
        (start.clamp(0, size), end.clamp(0, size))
    } else {
        (start.clamp(0, size - 1), end.clamp(-1, size - 1))
    };
    let span = end - start;
    let count = if step > 0 {
        (span + step - 1).div_euclid(step)
    } else {
        (span + step + 1).div_euclid(step)
    };
    (start as i64, count.max(0) as i64)
}

pub(crate) fn pad(n: &Ctx) -> Option<TensorType> {
    let shape = n
        .shape(0)
        .map(|x| pad_dims(n, x).unwrap_or_else(|| vec![Dim::Unknown; x.len()]));
    typed(n.elem(0), shape)
}

/// Pad amounts `[begin..., end...]` over `axes` (input 3 from opset 18, else all).
pub(crate) fn pad_dims(n: &Ctx, x: &[Dim]) -> Option<Vec<Dim>> {
    let Operand::Known(pads) = n.operand("pads", 1, 11) else {
        return None;
    };
    let axes: Vec<usize> = match n.input(3) {
        Some(_) => n
            .ints(3)?
            .iter()
            .map(|&a| norm_axis(a, x.len()))
            .collect::<Option<_>>()?,
        None => (0..x.len()).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return None;
    }
    let mut out = x.to_vec();
    for (i, &axis) in axes.iter().enumerate() {
        out[axis] = match pads[i].checked_add(pads[i + axes.len()]) {
            Some(amount) => dim_offset(&x[axis], amount),
            None => Dim::Unknown,
        };
    }
    Some(out)
}

pub(crate) fn gather(n: &Ctx) -> Option<TensorType> {
    let shape = match (n.shape(0), n.shape(1)) {
        (Some(data), Some(indices)) => norm_axis(n.int("axis", 0), data.len()).map(|axis| {
            let mut out = data[..axis].to_vec();
            out.extend_from_slice(indices);
            out.extend_from_slice(&data[axis + 1..]);
            out
        }),
        _ => None,
    };
    typed(n.elem(0), shape)
}

/// GatherND: indices.shape[:-1] + data.shape[batch_dims + k:], k the static
/// last dimension of the indices.
pub(crate) fn gather_nd(n: &Ctx) -> Option<TensorType> {
    let batch_dims = usize::try_from(n.int("batch_dims", 0)).ok();
    let shape = match (n.shape(0), n.shape(1), batch_dims) {
        (Some(data), Some(indices), Some(b)) => match indices.last() {
            Some(Dim::Fixed(k)) if b + (*k as usize) <= data.len() => {
                let mut out = indices[..indices.len() - 1].to_vec();
                out.extend_from_slice(&data[b + *k as usize..]);
                Some(out)
            }
            _ => None,
        },
        _ => None,
    };
    typed(n.elem(0), shape)
}

pub(crate) fn expand(n: &Ctx) -> Option<TensorType> {
    let target: Option<Vec<Dim>> = n.shape_operand(1).map(|t| t.iter().map(as_size).collect());
    let shape = n
        .shape(0)
        .zip(target)
        .map(|(x, target)| broadcast_shapes(&[x, &target]));
    typed(n.elem(0), shape)
}

pub(crate) fn tile(n: &Ctx) -> Option<TensorType> {
    let shape = n
        .shape(0)
        .map(|x| match n.ints(1).filter(|r| r.len() == x.len()) {
            Some(repeats) => x
                .iter()
                .zip(repeats)
                .map(|(d, &r)| dim_arith("Mul", d, &Dim::Fixed(r)))
                .collect(),
            None => vec![Dim::Unknown; x.len()],
        });
    typed(n.elem(0), shape)
}

/// Shape's `[start, end)` window over the input's axes (opset 15), clamped.
pub(crate) fn shape_window(n: &Ctx, rank: usize) -> (usize, usize) {
    let clamp = |v: i64| {
        let v = if v < 0 { v + rank as i64 } else { v };
        v.clamp(0, rank as i64) as usize
    };
    let start = clamp(n.int("start", 0));
    let end = clamp(n.int("end", rank as i64));
    (start, end.max(start))
}

pub(crate) fn shape_of(n: &Ctx) -> Option<TensorType> {
    let len = match n.shape(0) {
        Some(x) => {
            let (start, end) = shape_window(n, x.len());
            Dim::Fixed((end - start) as i64)
        }
        None => Dim::Unknown,
    };
    typed(INT64, Some(vec![len]))
}

pub(crate) fn constant_of_shape(n: &Ctx) -> Option<TensorType> {
    let elem = attribute(n.node, "value")
        .and_then(|a| a.t.as_ref())
        .map_or(FLOAT, |t| t.data_type());
    let shape = n.shape_operand(0).map(|t| t.iter().map(as_size).collect());
    typed(elem, shape)
}

pub(crate) fn range(n: &Ctx) -> Option<TensorType> {
    typed(n.elem(0), Some(vec![range_len(n)]))
}

/// `max(ceil((limit - start) / delta), 0)`; `Range(0, N, 1)` has length N.
pub(crate) fn range_len(n: &Ctx) -> Dim {
    if let (Some(start), Some(limit), Some(delta)) = (n.ints(0), n.ints(1), n.ints(2)) {
        if let ([s], [l], [d]) = (start, limit, delta) {
            return range_count(*s, *l, *d).map_or(Dim::Unknown, Dim::Fixed);
        }
    }
    if let (Some(s), Some(l), Some(d)) = (n.scalar(0), n.scalar(1), n.scalar(2)) {
        let count = ((l - s) / d).ceil().max(0.0);
        if count.is_finite() && count < OPEN_BOUND as f64 {
            return Dim::Fixed(count as i64);
        }
    }
    let scalar_dim = |i: usize| n.values(i).and_then(single).cloned();
    match (scalar_dim(0), scalar_dim(1), scalar_dim(2)) {
        (Some(Dim::Fixed(0)), Some(limit @ Dim::Symbolic(_)), Some(Dim::Fixed(1))) => limit,
        _ => Dim::Unknown,
    }
}

pub(crate) fn range_count(start: i64, limit: i64, delta: i64) -> Option<i64> {
    if delta == 0 {
        return None;
    }
    let (span, delta) = (i128::from(limit) - i128::from(start), i128::from(delta));
    let quotient = span / delta;
    let ceil = if span % delta != 0 && ((span < 0) == (delta < 0)) {
        quotient + 1
    } else {
        quotient
    };
    i64::try_from(ceil.max(0)).ok()
}

/// `[rank, count]`: the count depends on the data.
pub(crate) fn non_zero(n: &Ctx) -> Option<TensorType> {
    let rank = n
        .shape(0)
        .map_or(Dim::Unknown, |x| Dim::Fixed(x.len() as i64));
    typed(INT64, Some(vec![rank, Dim::Unknown]))
}

pub(crate) fn shape_values(n: &Ctx) -> Option<Vec<Dim>> {
    let x = n.shape(0)?;
    let (start, end) = shape_window(n, x.len());
    Some(x[start..end].to_vec())
}

pub(crate) fn gather_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (data, dims) = (n.values(0)?, n.static_dims(0)?);
    let indices = n.ints(1)?;
    let axis = norm_axis(n.int("axis", 0), dims.len())?;
    let size = dims[axis];
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for &index in indices {
            let index = usize::try_from(if index < 0 {
                index + size as i64
            } else {
                index
            })
            .ok()?;
            if index >= size {
                return None;
            }
            let base = (o * size + index) * inner;
            out.extend_from_slice(data.get(base..base + inner)?);
        }
    }
    Some(out)
}

pub(crate) fn concat_values(n: &Ctx) -> Option<Vec<Dim>> {
    let parts: Vec<(&[Dim], Vec<usize>)> = (0..n.node.input.len())
        .filter(|&i| n.input(i).is_some())
        .map(|i| Some((n.values(i)?, n.static_dims(i)?)))
        .collect::<Option<_>>()?;
    let rank = parts.first()?.1.len();
    if parts.iter().any(|(_, dims)| dims.len() != rank) {
        return None;
    }
    let axis = norm_axis(n.int("axis", 0), rank)?;
    let outer: usize = parts[0].1[..axis].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for (values, dims) in &parts {
            let chunk: usize = dims[axis..].iter().product();
            out.extend_from_slice(values.get(o * chunk..(o + 1) * chunk)?);
        }
    }
    Some(out)
}

pub(crate) fn slice_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (values, dims) = (n.values(0)?, n.static_dims(0)?);
    // Per axis, the source indices it keeps.
    let mut picks: Vec<Vec<usize>> = dims.iter().map(|&d| (0..d).collect()).collect();
    for a in slice_axes(n, dims.len())? {
        let (first, count) = slice_range(dims[a.axis] as i64, &a);
        picks[a.axis] = (0..count).map(|k| (first + k * a.step) as usize).collect();
    }
    let out_dims: Vec<usize> = picks.iter().map(Vec::len).collect();
    let strides = strides(&dims);
    gather_flat(values, &out_dims, |index| {
        index
            .iter()
            .enumerate()
            .map(|(axis, &i)| picks[axis][i] * strides[axis])
            .sum()
    })
}

pub(crate) fn transpose_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (values, dims) = (n.values(0)?, n.static_dims(0)?);
    let perm = permutation(n, dims.len())?;
    let strides = strides(&dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    gather_flat(values, &out_dims, |index| {
        index.iter().zip(&perm).map(|(&i, &p)| i * strides[p]).sum()
    })
}

pub(crate) fn fill_values(n: &Ctx) -> Option<Vec<Dim>> {
    let count = n
        .ints(0)?
        .iter()
        .try_fold(1i64, |acc, &d| acc.checked_mul(d))?;
    let fill = match attribute(n.node, "value").and_then(|a| a.t.as_ref()) {
        Some(t) => *single(&int_values(t)?)?,
        None => return None, // the default fill is float 0.0
    };
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= MAX_TRACKED_ELEMENTS)?;
    Some(vec![Dim::Fixed(fill); count])
}

pub(crate) fn range_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (&start, &limit, &delta) = (
        single(n.ints(0)?)?,
        single(n.ints(1)?)?,
        single(n.ints(2)?)?,
    );
    let count = usize::try_from(range_count(start, limit, delta)?).ok()?;
    if count > MAX_TRACKED_ELEMENTS {
        return None;
    }
    (0..count as i64)
        .map(|k| start.checked_add(k.checked_mul(delta)?).map(Dim::Fixed))
        .collect()
}
