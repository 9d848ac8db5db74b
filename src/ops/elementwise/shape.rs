//! Shape and type inference of element-wise ops, and the integer contents
//! (shape arithmetic) they fold, for the inference engine (`ValueShapes::infer`).

#![allow(unused_imports)]
use crate::ops::shapes::prelude::*;

/// Input 0's shape and element type (activations, unary math, identity).
pub(crate) fn same(n: &Ctx) -> Option<TensorType> {
    n.like(0, n.elem(0))
}

pub(crate) fn cast(n: &Ctx) -> Option<TensorType> {
    n.like(0, n.int("to", 0) as i32)
}

pub(crate) fn cast_like(n: &Ctx) -> Option<TensorType> {
    n.like(0, n.elem(1))
}

/// Input 0's shape, boolean (Not, IsNaN, IsInf).
pub(crate) fn boolean(n: &Ctx) -> Option<TensorType> {
    n.like(0, BOOL)
}

/// Comparisons and logic: the broadcast shape, boolean.
pub(crate) fn compare(n: &Ctx) -> Option<TensorType> {
    broadcast_inputs(n, BOOL)
}

/// Arithmetic: the broadcast shape, input 0's element type.
pub(crate) fn arithmetic(n: &Ctx) -> Option<TensorType> {
    broadcast_inputs(n, n.elem(0))
}

pub(crate) fn where_(n: &Ctx) -> Option<TensorType> {
    broadcast_inputs(n, n.elem(1))
}

pub(crate) fn neg_values(n: &Ctx) -> Option<Vec<Dim>> {
    n.values(0).map(|v| {
        v.iter()
            .map(|d| dim_arith("Sub", &Dim::Fixed(0), d))
            .collect()
    })
}

/// Multidirectional (numpy) broadcasting of every input.
pub(crate) fn broadcast_inputs(n: &Ctx, elem: i32) -> Option<TensorType> {
    let shapes: Option<Vec<&[Dim]>> = n.inputs().map(|name| n.shapes.shape(name)).collect();
    typed(elem, shapes.map(|s| broadcast_shapes(&s)))
}

/// Integer-to-integer casts keep the numbers when they fit; other casts are not
/// followed (float contents are not tracked).
pub(crate) fn cast_values(n: &Ctx) -> Option<Vec<Dim>> {
    let to = n.int("to", 0) as i32;
    if !is_int_type(n.elem(0)) || !is_int_type(to) {
        return None;
    }
    let values = n.values(0)?;
    let fits = to == INT64
        || values.iter().all(|d| match d {
            Dim::Fixed(v) => fits_in(*v, to),
            _ => false,
        });
    fits.then(|| values.to_vec())
}

/// `Where` over known values of one shape (or scalars): the legacy exporter
/// computes `expand(B, -1, -1)` targets as `Where(shape == -1, 1, shape)`.
pub(crate) fn where_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (cond, a, b) = (n.values(0)?, n.values(1)?, n.values(2)?);
    let len = cond.len().max(a.len()).max(b.len());
    let at = |v: &[Dim], i: usize| -> Option<Dim> {
        match v.len() {
            1 => Some(v[0].clone()),
            l if l == len => Some(v[i].clone()),
            _ => None,
        }
    };
    (0..len)
        .map(|i| match at(cond, i)? {
            Dim::Fixed(0) => at(b, i),
            Dim::Fixed(_) => at(a, i),
            _ => None,
        })
        .collect()
}

/// Elementwise arithmetic with broadcasting; `N + 0`, `N * 1` keep the symbol.
pub(crate) fn binary_values(n: &Ctx) -> Option<Vec<Dim>> {
    if n.inputs().count() != 2 {
        return None;
    }
    let (a, a_dims) = (n.values(0)?, n.static_dims(0)?);
    let (b, b_dims) = (n.values(1)?, n.static_dims(1)?);
    let rank = a_dims.len().max(b_dims.len());
    let align = |d: &[usize]| {
        let mut full = vec![1; rank - d.len()];
        full.extend_from_slice(d);
        full
    };
    let (a_dims, b_dims) = (align(&a_dims), align(&b_dims));
    if a_dims
        .iter()
        .zip(&b_dims)
        .any(|(&x, &y)| x != y && x != 1 && y != 1)
    {
        return None;
    }
    let out_dims: Vec<usize> = a_dims
        .iter()
        .zip(&b_dims)
        .map(|(&x, &y)| if x == 1 { y } else { x })
        .collect();
    let (a_strides, b_strides) = (strides(&a_dims), strides(&b_dims));
    let source = |index: &[usize], dims: &[usize], strides: &[usize]| -> usize {
        index
            .iter()
            .enumerate()
            .map(|(k, &i)| if dims[k] == 1 { 0 } else { i * strides[k] })
            .sum()
    };
    let mut out = Vec::new();
    for index in multi_indices(&out_dims) {
        let x = a.get(source(&index, &a_dims, &a_strides))?;
        let y = b.get(source(&index, &b_dims, &b_strides))?;
        out.push(dim_arith(n.op(), x, y));
    }
    Some(out)
}
