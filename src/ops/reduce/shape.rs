//! Shape and type inference of reductions, and the integer contents
//! (shape arithmetic) they fold, for the inference engine (`ValueShapes::infer`).

#![allow(unused_imports)]
use crate::ops::shapes::prelude::*;

/// Reduce*: axes as an attribute before opset 18 and as input 1 from then on,
/// except ReduceSum, which took the input form at 13.
pub(crate) fn reduce(n: &Ctx) -> Option<TensorType> {
    let since = if n.op() == "ReduceSum" { 13 } else { 18 };
    let keepdims = n.int("keepdims", 1) != 0;
    let shape = n.shape(0).and_then(|x| {
        let all: Vec<usize> = (0..x.len()).collect();
        let axes: Vec<usize> = match n.operand("axes", 1, since) {
            Operand::Known(axes) if !axes.is_empty() => axes
                .iter()
                .map(|&a| norm_axis(a, x.len()))
                .collect::<Option<_>>()?,
            // Empty axes: identity when noop_with_empty_axes, else every axis.
            Operand::Known(_) | Operand::Absent if n.int("noop_with_empty_axes", 0) != 0 => vec![],
            Operand::Known(_) | Operand::Absent => all,
            // Unknown axes: with keepdims the rank survives.
            Operand::Unknown => return keepdims.then(|| vec![Dim::Unknown; x.len()]),
        };
        Some(reduced(x, &axes.into_iter().collect(), keepdims))
    });
    typed(n.elem(0), shape)
}

pub(crate) fn arg_reduce(n: &Ctx) -> Option<TensorType> {
    let keepdims = n.int("keepdims", 1) != 0;
    let shape = n.shape(0).and_then(|x| {
        let axis = norm_axis(n.int("axis", 0), x.len())?;
        Some(reduced(x, &HashSet::from([axis]), keepdims))
    });
    typed(INT64, shape)
}

pub(crate) fn reduced(x: &[Dim], axes: &HashSet<usize>, keepdims: bool) -> Vec<Dim> {
    if keepdims {
        x.iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Fixed(1)
                } else {
                    d.clone()
                }
            })
            .collect()
    } else {
        without_axes(x, axes)
    }
}

/// Values and int64 indices with `axis` cut to K (input 1 from opset 10).
pub(crate) fn top_k(n: &Ctx) -> Vec<Option<TensorType>> {
    let shape = n.shape(0).and_then(|x| {
        let axis = norm_axis(n.int("axis", -1), x.len())?;
        let k = match n.operand("k", 1, 10) {
            Operand::Known(k) => single(&k).map_or(Dim::Unknown, |&k| Dim::Fixed(k)),
            _ => Dim::Unknown,
        };
        let mut out = x.to_vec();
        out[axis] = k;
        Some(out)
    });
    vec![typed(n.elem(0), shape.clone()), typed(INT64, shape)]
}
