//! Matrix products.

use crate::error::{Error, Result};
use crate::onnx::builder::{attr_float, attr_int, attr_ints};
use crate::ops::grad::GradCtx;

type Grads = Result<Vec<Option<String>>>;

/// Y = alpha * A' B' + beta * C, with A' = A^T when transA, B' = B^T when transB.
pub fn gemm(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let (a, b, c, y) = (ctx.i(0), ctx.i(1), ctx.i(2), ctx.o(0));
    let alpha = ctx.attr_float("alpha", 1.0);
    let beta = ctx.attr_float("beta", 1.0);
    let trans_a = ctx.attr_int("transA", 0) != 0;
    let trans_b = ctx.attr_int("transB", 0) != 0;
    let gemm = |ctx: &mut GradCtx, x: &str, z: &str, ta: bool, tb: bool, like: &str| {
        let mut attrs = vec![
            attr_int("transA", i64::from(ta)),
            attr_int("transB", i64::from(tb)),
        ];
        if alpha != 1.0 {
            attrs.push(attr_float("alpha", alpha));
        }
        ctx.op("Gemm", &[x, z], attrs, Some(like))
    };
    // dA' = alpha g B'^T; dB' = alpha A'^T g; transposed operands take the transpose.
    let da = ctx.needs(0).then(|| match trans_a {
        false => gemm(ctx, &g, b, false, !trans_b, a),
        true => gemm(ctx, b, &g, trans_b, true, a),
    });
    let db = ctx.needs(1).then(|| match trans_b {
        false => gemm(ctx, a, &g, !trans_a, false, b),
        true => gemm(ctx, &g, a, true, trans_a, b),
    });
    let dc = (ctx.has_input(2) && ctx.needs(2)).then(|| {
        let scaled = if beta != 1.0 {
            let k = ctx.constant(beta as f64, y);
            ctx.mul(&g, &k, y)
        } else {
            g.clone()
        };
        ctx.unbroadcast(&scaled, c)
    });
    Ok(vec![da, db, dc])
}

/// Y = A @ B (numpy semantics, rank >= 2): dA = g @ B^T, dB = A^T @ g, summed over
/// broadcast batch dimensions.
pub fn matmul(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let (a, b) = (ctx.i(0), ctx.i(1));
    let rank = |ctx: &GradCtx, v: &str| ctx.shapes.rank(v);
    let (ra, rb) = match (rank(ctx, a), rank(ctx, b)) {
        (Some(ra), Some(rb)) if ra >= 2 && rb >= 2 => (ra, rb),
        other => {
            return Err(Error::invalid(format!(
                "MatMul gradient needs operands of known rank >= 2, got {other:?}"
            )))
        }
    };
    if ra == 2 && rb == 2 {
        let da = ctx
            .needs(0)
            .then(|| ctx.op("Gemm", &[&g, b], vec![attr_int("transB", 1)], Some(a)));
        let db = ctx
            .needs(1)
            .then(|| ctx.op("Gemm", &[a, &g], vec![attr_int("transA", 1)], Some(b)));
        return Ok(vec![da, db]);
    }
    let swap_last = |r: usize| -> Vec<i64> {
        let mut perm: Vec<i64> = (0..r as i64).collect();
        perm.swap(r - 2, r - 1);
        perm
    };
    let ry = ra.max(rb);
    let da = ctx.needs(0).then(|| {
        let bt = ctx.op(
            "Transpose",
            &[b],
            vec![attr_ints("perm", &swap_last(rb))],
            None,
        );
        let d = ctx.op("MatMul", &[&g, &bt], vec![], None);
        ctx.unbroadcast(&d, a)
    });
    let db = ctx.needs(1).then(|| {
        let at = ctx.op(
            "Transpose",
            &[a],
            vec![attr_ints("perm", &swap_last(ra))],
            None,
        );
        let d = ctx.op("MatMul", &[&at, &g], vec![], None);
        ctx.unbroadcast(&d, b)
    });
    let _ = ry;
    Ok(vec![da, db])
}
