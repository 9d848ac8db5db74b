//! Data-movement ops: reshapes, transposes, concatenation, slicing, padding, gathering.
//!
//! Every op here moves elements without changing them, so each gradient moves
//! `g` back: reshape to the input's shape, transpose by the inverse permutation,
//! slice a concatenation apart, concatenate a split, scatter a slice or a gather
//! into zeros, crop a padding. Shapes come from `Shape` at run time wherever a
//! dimension may be symbolic (the batch), so one graph serves every batch size.

use crate::error::{Error, Result};
use crate::onnx::builder::{attr_int, attr_ints, attr_string};
use crate::onnx::tensor::{elem_size, i64_tensor};
use crate::onnx::types::Dim;
use crate::onnx::TensorProto;
use crate::ops::grad::{tensor_attr, GradCtx};

type Grads = Result<Vec<Option<String>>>;

fn unsupported(ctx: &GradCtx, what: String) -> Error {
    Error::invalid(format!("{} gradient: {what}", ctx.node.op_type()))
}

/// `[Some(dx), None, ...]`: only the data input (input 0) is differentiable.
fn data_only(ctx: &GradCtx, dx: Option<String>) -> Vec<Option<String>> {
    let mut grads = vec![None; ctx.node.input.len().max(1)];
    grads[0] = dx;
    grads
}

/// An axis in `0..rank`, from ONNX's `-rank..rank`.
fn normalize_axis(ctx: &GradCtx, axis: i64, rank: usize, attribute: &str) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(unsupported(
            ctx,
            format!("{attribute} = {axis} is out of range for rank {rank}"),
        ))
    }
}

/// `ConstantOfShape(shape)` filled with zeros of element type `elem`.
fn zeros_of_shape(ctx: &mut GradCtx, shape: &str, elem: i32) -> String {
    let width = elem_size(elem).unwrap_or(4);
    let zero = TensorProto {
        dims: vec![1],
        data_type: Some(elem),
        raw_data: Some(vec![0u8; width].into()),
        ..Default::default()
    };
    ctx.op(
        "ConstantOfShape",
        &[shape],
        vec![tensor_attr("value", zero)],
        None,
    )
}

fn scalar_i64(ctx: &mut GradCtx, value: i64) -> String {
    ctx.b
        .constant("grad/scalar_i64", i64_tensor("", &[], &[value]))
}

// ---------------------------------------------------------------------------
// Reshapes and transposes.

/// Flatten, Reshape, Squeeze, Unsqueeze keep the elements in order:
/// dX = Reshape(g, Shape(X)). The target shape or axes input gets no gradient.
pub fn reshape_like(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let x = ctx.i(0);
    let dx = ctx.needs(0).then(|| {
        let shape = ctx.shape_of(x);
        // allowzero=1 (opset 14): a zero-sized dimension of X stays zero instead
        // of copying g's dimension at that position.
        let attrs = if ctx.opset() >= 14 {
            vec![attr_int("allowzero", 1)]
        } else {
            vec![]
        };
        ctx.op("Reshape", &[&g, &shape], attrs, Some(x))
    });
    Ok(data_only(ctx, dx))
}

/// Y = Transpose(X, perm): dX = Transpose(g, perm⁻¹). Without `perm` the axes are
/// reversed, which is its own inverse.
pub fn transpose(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let x = ctx.i(0);
    let attrs = match ctx.attr_ints("perm").filter(|p| !p.is_empty()) {
        None => vec![],
        Some(perm) => vec![attr_ints("perm", &inverse_permutation(ctx, &perm)?)],
    };
    let dx = ctx
        .needs(0)
        .then(|| ctx.op("Transpose", &[&g], attrs, Some(x)));
    Ok(data_only(ctx, dx))
}

/// inverse[perm[i]] = i: output axis i came from input axis perm[i].
fn inverse_permutation(ctx: &GradCtx, perm: &[i64]) -> Result<Vec<i64>> {
    let mut inverse = vec![-1; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        match inverse.get_mut(p as usize) {
            Some(slot) if p >= 0 && *slot < 0 => *slot = i as i64,
            _ => {
                return Err(unsupported(
                    ctx,
                    format!("perm {perm:?} is not a permutation"),
                ))
            }
        }
    }
    Ok(inverse)
}

/// Y = Expand(X, shape) broadcasts X: dX sums g over the broadcast axes.
pub fn expand(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let x = ctx.i(0);
    let dx = ctx.needs(0).then(|| ctx.unbroadcast(&g, x));
    Ok(data_only(ctx, dx))
}

/// Y = Tile(X, repeats): along each axis, Y holds r copies of X one after the
/// other, so g reshaped to [r_0, d_0, r_1, d_1, ...] (an axis repeated once
/// keeps just d) and summed over the r axes is dX. Repeats and dimensions not
/// known when compiling are read at run time.
pub fn tile(ctx: &mut GradCtx) -> Grads {
    if !ctx.needs(0) {
        return Ok(data_only(ctx, None));
    }
    let g = ctx.g()?;
    let x = ctx.i(0);
    let repeats_input = ctx.i(1);
    if ctx.shapes.elem_type(repeats_input) != Some(crate::onnx::tensor::INT64) {
        return Err(unsupported(
            ctx,
            format!("its repeats '{repeats_input}' are not int64, as ONNX requires"),
        ));
    }
    let repeats: Vec<Extent> = match ctx.shapes.const_ints(repeats_input) {
        Some(known) => known.iter().map(|&r| Extent::Known(r)).collect(),
        // Computed at run time (XCiT repeats its positional encoding over the
        // batch): each count read from the repeats tensor.
        None => {
            let rank = ctx.shapes.rank(x).ok_or_else(|| {
                unsupported(
                    ctx,
                    format!(
                        "the repeats are computed at run time and the rank of '{x}' is unknown"
                    ),
                )
            })?;
            (0..rank as i64)
                .map(|axis| {
                    let index = ctx.int_constant(&[axis]);
                    Extent::Runtime(ctx.op(
                        "Gather",
                        &[repeats_input, &index],
                        vec![attr_int("axis", 0)],
                        None,
                    ))
                })
                .collect()
        }
    };
    let mut pieces = Vec::new();
    let mut copies = Vec::new();
    for (axis, r) in repeats.into_iter().enumerate() {
        if !matches!(r, Extent::Known(1)) {
            copies.push(pieces.len() as i64);
            pieces.push(r);
        }
        pieces.push(Extent::along(ctx, x, axis as i64));
    }
    if copies.is_empty() {
        return Ok(data_only(ctx, Some(g)));
    }
    let parts: Vec<String> = pieces.iter().map(|p| p.value(ctx)).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let split_shape = ctx.op("Concat", &parts, vec![attr_int("axis", 0)], None);
    let split = ctx.op("Reshape", &[&g, &split_shape], vec![], None);
    let dx = ctx.reduce_sum(&split, &copies, false);
    if let Some(ty) = ctx.shapes.get(x).cloned() {
        ctx.shapes.insert(&dx, ty);
    }
    Ok(data_only(ctx, Some(dx)))
}

// ---------------------------------------------------------------------------
// Concat and Split, each the other's gradient.

/// A length along one axis: known when compiling, or a run-time 1-D int64 of one element.
enum Extent {
    Known(i64),
    Runtime(String),
}

impl Extent {
    /// The size of `x` along `axis`: static when the shape says so, else
    /// `Gather(Shape(x), [axis])` (Gather accepts a negative axis).
    fn along(ctx: &mut GradCtx, x: &str, axis: i64) -> Extent {
        let known = ctx.shape(x).and_then(|dims| {
            let a = if axis < 0 {
                axis + dims.len() as i64
            } else {
                axis
            };
            match dims.get(usize::try_from(a).ok()?)? {
                Dim::Fixed(d) => Some(*d),
                _ => None,
            }
        });
        match known {
            Some(d) => Extent::Known(d),
            None => {
                let shape = ctx.shape_of(x);
                let index = ctx.int_constant(&[axis]);
                Extent::Runtime(ctx.op(
                    "Gather",
                    &[&shape, &index],
                    vec![attr_int("axis", 0)],
                    None,
                ))
            }
        }
    }

    fn plus(&self, ctx: &mut GradCtx, other: &Extent) -> Extent {
        match (self, other) {
            (Extent::Known(a), Extent::Known(b)) => Extent::Known(a + b),
            _ => {
                let (a, b) = (self.value(ctx), other.value(ctx));
                Extent::Runtime(ctx.op("Add", &[&a, &b], vec![], None))
            }
        }
    }

    fn value(&self, ctx: &mut GradCtx) -> String {
        match self {
            Extent::Known(v) => ctx.int_constant(&[*v]),
            Extent::Runtime(name) => name.clone(),
        }
    }
}

/// Y = Concat(X_0, ..., X_n; axis): dX_k is g's slice [offset_k, offset_k + len_k)
/// along the axis, where offset_k sums the lengths of the inputs before it.
pub fn concat(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let axis = crate::onnx::attribute(ctx.node, "axis")
        .and_then(|a| a.i)
        .ok_or_else(|| unsupported(ctx, "the required attribute 'axis' is missing".to_string()))?;
    let inputs = ctx.node.input.len();
    let mut grads = vec![None; inputs];
    // Offsets are only needed up to the last input that wants a gradient.
    let last = (0..inputs)
        .rev()
        .find(|&k| ctx.needs(k))
        .map_or(0, |k| k + 1);
    let mut start = Extent::Known(0);
    for (k, grad) in grads.iter_mut().enumerate().take(last) {
        let x = ctx.i(k);
        let length = Extent::along(ctx, x, axis);
        let end = start.plus(ctx, &length);
        if ctx.needs(k) {
            let (starts, ends, axes) =
                (start.value(ctx), end.value(ctx), ctx.int_constant(&[axis]));
            *grad = Some(ctx.op("Slice", &[&g, &starts, &ends, &axes], vec![], Some(x)));
        }
        start = end;
    }
    Ok(grads)
}

/// (Y_0, ..., Y_n) = Split(X; axis): dX = Concat(dY_0, ..., dY_n). An output the
/// loss does not use contributes zeros shaped like it.
pub fn split(ctx: &mut GradCtx) -> Grads {
    let x = ctx.i(0);
    if !ctx.needs(0) {
        return Ok(data_only(ctx, None));
    }
    let axis = ctx.attr_int("axis", 0);
    let elem = ctx.elem(x);
    let mut pieces = Vec::with_capacity(ctx.node.output.len());
    for k in 0..ctx.node.output.len() {
        let piece = match ctx.go(k) {
            Some(g) => g,
            None => {
                let y = ctx.forward_output(k);
                let shape = ctx.shape_of(&y);
                zeros_of_shape(ctx, &shape, elem)
            }
        };
        pieces.push(piece);
    }
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let dx = ctx.op("Concat", &refs, vec![attr_int("axis", axis)], Some(x));
    Ok(data_only(ctx, Some(dx)))
}

// ---------------------------------------------------------------------------
// Slice and Pad.

/// Y = Slice(X, starts, ends, axes, steps) copies the selected elements of X, so
/// dX holds g at those positions and zero elsewhere. With constant arguments and
/// static sliced dimensions, g is put back by padding (`place_selections`);
/// everything else (run-time arguments, symbolic sliced dimensions) scatters g
/// to the positions the same Slice selects from a tensor of indices.
pub fn slice(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let x = ctx.i(0);
    if !ctx.needs(0) {
        return Ok(data_only(ctx, None));
    }
    let placed = match constant_selections(ctx)? {
        Some(selections) => place_selections(ctx, &g, x, &selections),
        None => None,
    };
    let dx = match placed {
        Some(dx) => dx,
        None => scatter_to_sliced_positions(ctx, &g, x),
    };
    Ok(data_only(ctx, Some(dx)))
}

/// What a Slice with constant arguments selects along one axis of X (static
/// size `dim`): `count` elements `stride` apart from the lowest, `begin`, in
/// descending order when `reversed` (a negative step).
struct Selection {
    axis: usize,
    dim: i64,
    begin: i64,
    count: i64,
    stride: i64,
    reversed: bool,
}

/// The selection along every sliced axis, when the arguments are constants and
/// each sliced dimension of X is static or taken whole. ONNX's rules: negative
/// starts and ends count from the end; then, for a positive step, both clamp to
/// [0, dim]; for a negative one, the start to [0, dim - 1] and the end to
/// [-1, dim - 1].
fn constant_selections(ctx: &GradCtx) -> Result<Option<Vec<Selection>>> {
    let constant = |k: usize| -> Option<Option<Vec<i64>>> {
        if ctx.has_input(k) {
            ctx.shapes.const_ints(ctx.i(k)).map(|v| Some(v.to_vec()))
        } else {
            Some(None)
        }
    };
    let (Some(Some(starts)), Some(Some(ends)), Some(axes), Some(steps), Some(dims)) = (
        constant(1),
        constant(2),
        constant(3),
        constant(4),
        ctx.shape(ctx.i(0)),
    ) else {
        return Ok(None);
    };
    let rank = dims.len();
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if [ends.len(), axes.len(), steps.len()]
        .iter()
        .any(|&n| n != starts.len())
    {
        return Err(unsupported(
            ctx,
            "starts, ends, axes and steps differ in length".to_string(),
        ));
    }
    let mut selections = Vec::with_capacity(starts.len());
    for (((&start, &end), &axis), &step) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
        let axis = normalize_axis(ctx, axis, rank, "axes")?;
        if step == 0 {
            return Err(unsupported(ctx, "a step is 0".to_string()));
        }
        let Dim::Fixed(dim) = dims[axis] else {
            // x[0:] keeps a symbolic axis whole; exporters write the open end as
            // i64::MAX, and no real dimension comes near half of it.
            if start == 0 && end >= i64::MAX / 2 && step == 1 {
                continue;
            }
            return Ok(None);
        };
        let from_end = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (begin, count) = if dim == 0 {
            (0, 0)
        } else if step > 0 {
            let (start, end) = (from_end(start).clamp(0, dim), from_end(end).clamp(0, dim));
            (start, ((end - start).max(0) + step - 1) / step)
        } else {
            let stride = step.saturating_neg();
            let start = from_end(start).clamp(0, dim - 1);
            let end = from_end(end).clamp(-1, dim - 1);
            let count = ((start - end).max(0) + stride - 1) / stride;
            // The lowest selected index, where the reversed g begins.
            (start - (count - 1).max(0) * stride, count)
        };
        selections.push(Selection {
            axis,
            dim,
            begin: if count == 0 { 0 } else { begin },
            count,
            stride: step.saturating_abs(),
            reversed: step < 0,
        });
    }
    selections.sort_by_key(|s| s.axis);
    Ok(Some(selections))
}

/// dX from g without a scatter: reverse the axes sliced with a negative step;
/// give every axis with stride s a new axis of length s after it (Unsqueeze);
/// one Pad puts each element at its index — the begin's multiple of s and its
/// remainder, zeros up to whole blocks of s — and a Reshape merges each pair
/// back (the blocks may overrun the dimension by less than s, which a Slice
/// crops). Unit steps need the Pad alone. `None` when the merged shape cannot
/// be written statically (a symbolic axis after a strided one, twice).
fn place_selections(
    ctx: &mut GradCtx,
    g: &str,
    x: &str,
    selections: &[Selection],
) -> Option<String> {
    let dims = ctx.shape(x)?;
    let strided: Vec<usize> = selections
        .iter()
        .filter(|s| s.stride > 1)
        .map(|s| s.axis)
        .collect();
    // Merged shape: 0 copies a leading axis's size, -1 stands for one symbolic axis.
    let mut merged = Vec::with_capacity(dims.len());
    let mut inferred = false;
    for (axis, dim) in dims.iter().enumerate() {
        let blocks = selections.iter().find(|s| s.axis == axis);
        merged.push(match (blocks, dim) {
            (Some(s), _) if s.stride > 1 => (s.dim + s.stride - 1) / s.stride * s.stride,
            (_, Dim::Fixed(d)) => *d,
            _ if strided.first().is_none_or(|&first| axis < first) => 0,
            _ if !inferred => {
                inferred = true;
                -1
            }
            _ => return None,
        });
    }

    let original = g;
    let mut g = g.to_string();
    let reversed: Vec<i64> = selections
        .iter()
        .filter(|s| s.reversed)
        .map(|s| s.axis as i64)
        .collect();
    if !reversed.is_empty() {
        let n = reversed.len();
        let (starts, ends) = (
            ctx.int_constant(&vec![-1; n]),
            ctx.int_constant(&vec![i64::MIN; n]),
        );
        let (axes, steps) = (ctx.int_constant(&reversed), ctx.int_constant(&vec![-1; n]));
        g = ctx.op("Slice", &[&g, &starts, &ends, &axes, &steps], vec![], None);
    }
    if !strided.is_empty() {
        let inserted: Vec<i64> = strided
            .iter()
            .enumerate()
            .map(|(k, &axis)| (axis + k + 1) as i64)
            .collect();
        let inserted = ctx.int_constant(&inserted);
        g = ctx.op("Unsqueeze", &[&g, &inserted], vec![], None);
    }
    let expanded_rank = dims.len() + strided.len();
    let mut pads = vec![0; 2 * expanded_rank];
    for s in selections {
        let at = s.axis + strided.iter().filter(|&&a| a < s.axis).count();
        if s.stride == 1 {
            pads[at] = s.begin;
            pads[at + expanded_rank] = s.dim - s.begin - s.count;
        } else {
            let blocks = (s.dim + s.stride - 1) / s.stride;
            let (skipped, offset) = (s.begin / s.stride, s.begin % s.stride);
            pads[at] = skipped;
            pads[at + expanded_rank] = blocks - skipped - s.count;
            pads[at + 1] = offset;
            pads[at + 1 + expanded_rank] = s.stride - 1 - offset;
        }
    }
    if pads.iter().any(|&p| p != 0) {
        let pads = ctx.int_constant(&pads);
        g = ctx.op("Pad", &[&g, &pads], vec![], None);
    }
    if !strided.is_empty() {
        let shape = ctx.int_constant(&merged);
        g = ctx.op("Reshape", &[&g, &shape], vec![], None);
        let overrun: Vec<&Selection> = selections
            .iter()
            .filter(|s| s.stride > 1 && s.dim % s.stride != 0)
            .collect();
        if !overrun.is_empty() {
            let starts = ctx.int_constant(&vec![0; overrun.len()]);
            let ends: Vec<i64> = overrun.iter().map(|s| s.dim).collect();
            let ends = ctx.int_constant(&ends);
            let axes: Vec<i64> = overrun.iter().map(|s| s.axis as i64).collect();
            let axes = ctx.int_constant(&axes);
            g = ctx.op("Slice", &[&g, &starts, &ends, &axes], vec![], None);
        }
    }
    // Unchanged when the Slice selected everything in order: dX = g.
    if let (true, Some(ty)) = (g != original, ctx.shapes.get(x).cloned()) {
        ctx.shapes.insert(&g, ty);
    }
    Some(g)
}

/// dX = Reshape(ScatterElements(zeros[|X|], P, g), Shape(X)) with P = the flat
/// positions of X that the forward Slice selects, found by running that Slice
/// on Range(|X|) reshaped like X. Slice never selects a position twice, so a
/// plain scatter is exact.
fn scatter_to_sliced_positions(ctx: &mut GradCtx, g: &str, x: &str) -> String {
    let shape = ctx.shape_of(x);
    let count = ctx.op("Size", &[x], vec![], None);
    let (zero, one) = (scalar_i64(ctx, 0), scalar_i64(ctx, 1));
    let flat_positions = ctx.op("Range", &[&zero, &count, &one], vec![], None);
    let positions = ctx.op("Reshape", &[&flat_positions, &shape], vec![], None);
    let node = ctx.node;
    let mut slice_inputs: Vec<&str> = node.input.iter().map(String::as_str).collect();
    slice_inputs[0] = &positions;
    let selected = ctx.op("Slice", &slice_inputs, vec![], None);
    let flat = ctx.int_constant(&[-1]);
    let selected = ctx.op("Reshape", &[&selected, &flat], vec![], None);
    let g_flat = ctx.op("Reshape", &[g, &flat], vec![], None);
    let flat_shape = ctx.shape_of(&flat_positions);
    let elem = ctx.elem(x);
    let zeros = zeros_of_shape(ctx, &flat_shape, elem);
    let scattered = ctx.op(
        "ScatterElements",
        &[&zeros, &selected, &g_flat],
        vec![attr_int("axis", 0)],
        None,
    );
    ctx.op("Reshape", &[&scattered, &shape], vec![], Some(x))
}

/// Y = Pad(X, pads, value, axes) in constant mode: X sits in Y at offset
/// pads_begin (negative pads crop), so dX crops g by the positive pads and
/// restores zeros where X was cropped. It is emitted as `Slice` by max(pads, 0)
/// then `Pad` by max(-pads, 0), never as a `Pad` with negative amounts, which
/// some runtimes (the ONNX reference implementation) refuse. Pads known when
/// the step is compiled (ResNet's zero-padded shortcut) make those amounts
/// constants and leave out the `Pad` when nothing was cropped. The fill value
/// receives every gradient element not routed to X: sum(g) - sum(dX).
pub fn pad(ctx: &mut GradCtx) -> Grads {
    let mode = ctx
        .attr_string("mode")
        .unwrap_or_else(|| "constant".to_string());
    if mode != "constant" {
        return Err(unsupported(
            ctx,
            format!("mode '{mode}' is not supported, only mode 'constant'"),
        ));
    }
    if !ctx.has_input(1) {
        return Err(unsupported(ctx, "the 'pads' input is missing".to_string()));
    }
    let g = ctx.g()?;
    let (x, pads) = (ctx.i(0), ctx.i(1));
    let padded_axes = if ctx.has_input(3) {
        ctx.shapes.shape(ctx.i(3)).and_then(|s| match s {
            [Dim::Fixed(n)] => Some(*n as usize),
            _ => None,
        })
    } else {
        ctx.shapes.rank(x)
    }
    .ok_or_else(|| {
        unsupported(
            ctx,
            "the number of padded axes is not known statically".to_string(),
        )
    })?;
    let axes = if ctx.has_input(3) {
        ctx.i(3).to_string()
    } else {
        ctx.int_constant(&(0..padded_axes as i64).collect::<Vec<_>>())
    };
    let known: Option<Vec<i64>> = ctx
        .shapes
        .const_ints(pads)
        .filter(|p| p.len() == 2 * padded_axes)
        .map(<[i64]>::to_vec);
    let (starts, ends, restore) = match known {
        Some(pads) => {
            let (begins, ends) = pads.split_at(padded_axes);
            let starts = ctx.int_constant(&begins.iter().map(|&p| p.max(0)).collect::<Vec<_>>());
            // Ends count from the back; "to the end" is i64::MAX, since 0 counts from the front.
            let ends: Vec<i64> = ends
                .iter()
                .map(|&p| if p > 0 { -p } else { i64::MAX })
                .collect();
            let ends = ctx.int_constant(&ends);
            let restore: Vec<i64> = pads.iter().map(|&p| (-p).max(0)).collect();
            let restore = restore
                .iter()
                .any(|&p| p > 0)
                .then(|| ctx.int_constant(&restore));
            (starts, ends, restore)
        }
        None => {
            let zero = ctx.int_constant(&[0]);
            let added = ctx.op("Max", &[pads, &zero], vec![], None);
            let half = |ctx: &mut GradCtx, from: usize| {
                let start = ctx.int_constant(&[(from * padded_axes) as i64]);
                let end = ctx.int_constant(&[((from + 1) * padded_axes) as i64]);
                ctx.op("Slice", &[&added, &start, &end], vec![], None)
            };
            let (starts, end_amounts) = (half(ctx, 0), half(ctx, 1));
            let extent = ctx.shape_of(&g);
            let extent = ctx.op("Gather", &[&extent, &axes], vec![], None);
            let ends = ctx.op("Sub", &[&extent, &end_amounts], vec![], None);
            let negated = ctx.op("Neg", &[pads], vec![], None);
            let restore = ctx.op("Max", &[&negated, &zero], vec![], None);
            (starts, ends, Some(restore))
        }
    };
    let cropped = ctx.op("Slice", &[&g, &starts, &ends, &axes], vec![], None);
    let dx = match restore {
        Some(restore) => {
            let mut inputs = vec![cropped.as_str(), restore.as_str()];
            if ctx.has_input(3) {
                // Opset 18 `axes`: the pads apply to these axes only.
                inputs.extend(["", axes.as_str()]);
            }
            ctx.op("Pad", &inputs, vec![], Some(x))
        }
        None => {
            if let Some(ty) = ctx.shapes.get(x).cloned() {
                ctx.shapes.insert(&cropped, ty);
            }
            cropped
        }
    };
    let mut grads = data_only(ctx, None);
    if ctx.needs(2) {
        let value = ctx.i(2);
        let all = ctx.op("ReduceSum", &[&g], vec![attr_int("keepdims", 0)], None);
        let kept = ctx.op("ReduceSum", &[&dx], vec![attr_int("keepdims", 0)], None);
        let filled = ctx.sub(&all, &kept, value);
        let value_shape = ctx.shape_of(value);
        grads[2] = Some(ctx.op("Reshape", &[&filled, &value_shape], vec![], Some(value)));
    }
    if ctx.needs(0) {
        grads[0] = Some(dx);
    }
    Ok(grads)
}

// ---------------------------------------------------------------------------
// Gather.

/// Y = Gather(data, indices; axis) reads the slices data[..., indices[j], ...]:
/// dData adds each g slice back at its index. With q = indices' rank, g's
/// indexed axes are flattened to one axis of length |indices| so that g and the
/// (broadcast) indices both have data's rank, as ScatterElements needs; repeated
/// indices accumulate through reduction="add" (opset 16).
pub fn gather(ctx: &mut GradCtx) -> Grads {
    if !ctx.needs(0) {
        return Ok(data_only(ctx, None));
    }
    let g = ctx.g()?;
    let (data, indices) = (ctx.i(0), ctx.i(1));
    let rank = ctx.shapes.rank(data).ok_or_else(|| {
        unsupported(
            ctx,
            format!("the rank of data '{data}' is not known statically"),
        )
    })?;
    let axis = normalize_axis(ctx, ctx.attr_int("axis", 0), rank, "axis")?;
    let scatter_attrs = scatter_add_attrs(ctx, axis)?;

    // updates: g reshaped to data.shape[:axis] + [|indices|] + data.shape[axis+1:].
    let data_shape = ctx.shape_of(data);
    let (head_start, head_end) = (ctx.int_constant(&[0]), ctx.int_constant(&[axis as i64]));
    let head = ctx.op(
        "Slice",
        &[&data_shape, &head_start, &head_end],
        vec![],
        None,
    );
    let (tail_start, tail_end) = (
        ctx.int_constant(&[axis as i64 + 1]),
        ctx.int_constant(&[i64::MAX]),
    );
    let tail = ctx.op(
        "Slice",
        &[&data_shape, &tail_start, &tail_end],
        vec![],
        None,
    );
    let index_count = ctx.op("Size", &[indices], vec![], None);
    let first = ctx.int_constant(&[0]);
    let index_count = ctx.op("Unsqueeze", &[&index_count, &first], vec![], None);
    let updates_shape = ctx.op(
        "Concat",
        &[&head, &index_count, &tail],
        vec![attr_int("axis", 0)],
        None,
    );
    let updates = ctx.op("Reshape", &[&g, &updates_shape], vec![], None);

    // The index of every update: indices along `axis`, broadcast over the rest.
    let mut along_axis = vec![1; rank];
    along_axis[axis] = -1;
    let along_axis = ctx.int_constant(&along_axis);
    let column = ctx.op("Reshape", &[indices, &along_axis], vec![], None);
    let update_indices = ctx.op("Expand", &[&column, &updates_shape], vec![], None);

    let elem = ctx.elem(data);
    let zeros = zeros_of_shape(ctx, &data_shape, elem);
    let d_data = ctx.op(
        "ScatterElements",
        &[&zeros, &update_indices, &updates],
        scatter_attrs,
        Some(data),
    );
    Ok(data_only(ctx, Some(d_data)))
}

/// Y = ScatterElements(data, indices, updates; axis, reduction): Y is data with
/// the elements at `indices` replaced by (reduction none) or increased by
/// (reduction add) `updates`. dUpdates = GatherElements(g, indices); dData is g,
/// with the replaced elements zeroed when they were replaced (those indices
/// must be distinct, as ONNX requires for reduction none).
pub fn scatter_elements(ctx: &mut GradCtx) -> Grads {
    let reduction = ctx
        .attr_string("reduction")
        .unwrap_or_else(|| "none".to_string());
    if !matches!(reduction.as_str(), "none" | "add") {
        return Err(unsupported(
            ctx,
            format!("reduction '{reduction}' is not supported (none and add are)"),
        ));
    }
    let g = ctx.g()?;
    let (data, indices, updates) = (ctx.i(0), ctx.i(1), ctx.i(2));
    let axis = vec![attr_int("axis", ctx.attr_int("axis", 0))];
    let mut grads = vec![None; 3];
    if ctx.needs(0) {
        grads[0] = Some(if reduction == "add" {
            g.clone()
        } else {
            let shape = ctx.shape_of(updates);
            let zeros = zeros_of_shape(ctx, &shape, ctx.elem(updates));
            ctx.op(
                "ScatterElements",
                &[&g, indices, &zeros],
                axis.clone(),
                Some(data),
            )
        });
    }
    if ctx.needs(2) {
        grads[2] = Some(ctx.op("GatherElements", &[&g, indices], axis, Some(updates)));
    }
    Ok(grads)
}

/// Y = GatherElements(data, indices; axis): dData adds each g element back at
/// its index (ScatterElements with reduction add, opset 16).
pub fn gather_elements(ctx: &mut GradCtx) -> Grads {
    if !ctx.needs(0) {
        return Ok(data_only(ctx, None));
    }
    let g = ctx.g()?;
    let (data, indices) = (ctx.i(0), ctx.i(1));
    if ctx.opset() < 16 {
        return Err(unsupported(
            ctx,
            format!(
                "its gradient adds colliding indices with ScatterElements' reduction 'add', \
                 available from opset 16; the model imports opset {}",
                ctx.opset()
            ),
        ));
    }
    let shape = ctx.shape_of(data);
    let zeros = zeros_of_shape(ctx, &shape, ctx.elem(data));
    let attrs = vec![
        attr_int("axis", ctx.attr_int("axis", 0)),
        attr_string("reduction", "add"),
    ];
    let d_data = ctx.op("ScatterElements", &[&zeros, indices, &g], attrs, Some(data));
    Ok(data_only(ctx, Some(d_data)))
}

/// Y = GatherND(data, indices) (batch_dims 0) reads data's slices at the index
/// tuples: dData adds each g slice back at its tuple, ScatterND with reduction
/// add into zeros (opset 16).
pub fn gather_nd(ctx: &mut GradCtx) -> Grads {
    if !ctx.needs(0) {
        return Ok(data_only(ctx, None));
    }
    if ctx.attr_int("batch_dims", 0) != 0 {
        return Err(unsupported(
            ctx,
            "batch_dims other than 0 is not supported".to_string(),
        ));
    }
    if ctx.opset() < 16 {
        return Err(unsupported(
            ctx,
            format!(
                "its gradient adds repeated index tuples with ScatterND's reduction 'add', \
                 available from opset 16; the model imports opset {}",
                ctx.opset()
            ),
        ));
    }
    let g = ctx.g()?;
    let (data, indices) = (ctx.i(0), ctx.i(1));
    let shape = ctx.shape_of(data);
    let zeros = zeros_of_shape(ctx, &shape, ctx.elem(data));
    let d_data = ctx.op(
        "ScatterND",
        &[&zeros, indices, &g],
        vec![attr_string("reduction", "add")],
        Some(data),
    );
    Ok(data_only(ctx, Some(d_data)))
}

/// ScatterElements attributes that add colliding updates. Before opset 16 there
/// is no reduction, which is still exact when the indices are distinct constants.
fn scatter_add_attrs(ctx: &GradCtx, axis: usize) -> Result<Vec<crate::onnx::AttributeProto>> {
    let axis_attr = attr_int("axis", axis as i64);
    if ctx.opset() >= 16 {
        return Ok(vec![axis_attr, attr_string("reduction", "add")]);
    }
    let distinct = ctx.shapes.const_ints(ctx.i(1)).is_some_and(|v| {
        let mut sorted = v.to_vec();
        sorted.sort_unstable();
        sorted.windows(2).all(|w| w[0] != w[1]) && v.iter().all(|&i| i >= 0)
    });
    if distinct {
        Ok(vec![axis_attr])
    } else {
        Err(unsupported(
            ctx,
            format!(
                "indices that may repeat need ScatterElements with reduction 'add', available from opset 16; the model imports opset {}",
                ctx.opset()
            ),
        ))
    }
}
