//! Shape and type inference of matrix products, and the integer contents
//! (shape arithmetic) they fold, for the inference engine (`ValueShapes::infer`).

#![allow(unused_imports)]
use crate::ops::shapes::prelude::*;

pub(crate) fn matmul(n: &Ctx) -> Option<TensorType> {
    let shape = match (n.shape(0), n.shape(1)) {
        (Some(a), Some(b)) => matmul_dims(a, b),
        _ => None,
    };
    typed(n.elem(0), shape)
}

/// numpy.matmul: 1-D operands gain (and then lose) a unit axis; batch axes broadcast.
pub(crate) fn matmul_dims(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2 = if a.len() == 1 {
        vec![Dim::Fixed(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2 = if b.len() == 1 {
        vec![b[0].clone(), Dim::Fixed(1)]
    } else {
        b.to_vec()
    };
    let mut out = broadcast_shapes(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]]);
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Some(out)
}

/// `Y = op(A) @ op(B) + C`: always rank 2, [M, N].
pub(crate) fn gemm(n: &Ctx) -> Option<TensorType> {
    let pick = |i: usize, index: usize| {
        n.shape(i)
            .and_then(|s| s.get(index))
            .cloned()
            .unwrap_or(Dim::Unknown)
    };
    // M is A's row count (its column count when transposed); N is B's columns.
    let m = pick(0, usize::from(n.int("transA", 0) != 0));
    let cols = pick(1, usize::from(n.int("transB", 0) == 0));
    typed(n.elem(0), Some(vec![m, cols]))
}
