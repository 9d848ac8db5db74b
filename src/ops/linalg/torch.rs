//! Matrix products.

use crate::ops::kernel::{one, step, NodeCtx, Prepare};

pub fn matmul(_: &NodeCtx) -> Prepare {
    step(|ctx| one(ctx.input(0)?.f_matmul(ctx.input(1)?)?))
}

/// `alpha * A' B' + beta * C` with A' = A or its transpose (`transA`), same for B;
/// alpha and beta default to 1, C is optional and broadcasts to [M, N].
pub fn gemm(node: &NodeCtx) -> Prepare {
    let alpha = f64::from(node.attr_float("alpha", 1.0));
    let beta = f64::from(node.attr_float("beta", 1.0));
    let trans_a = node.attr_int("transA", 0) != 0;
    let trans_b = node.attr_int("transB", 0) != 0;
    // PyTorch's Linear layer exports as exactly this form: one fused call.
    let linear = alpha == 1.0 && beta == 1.0 && !trans_a && trans_b;
    step(move |ctx| {
        let (a, b, c) = (ctx.input(0)?, ctx.input(1)?, ctx.opt_input(2));
        if a.dim() != 2 || b.dim() != 2 {
            return Err(ctx.error(format!(
                "A and B must be matrices, got shapes {:?} and {:?}",
                a.size(),
                b.size()
            )));
        }
        if linear {
            return one(a.f_linear(b, c)?);
        }
        let a = if trans_a {
            a.f_tr()?
        } else {
            a.shallow_clone()
        };
        let b = if trans_b {
            b.f_tr()?
        } else {
            b.shallow_clone()
        };
        let mut y = a.f_matmul(&b)?;
        if alpha != 1.0 {
            y = y.f_mul_scalar(alpha)?;
        }
        match c {
            Some(c) if beta != 0.0 => {
                let c = if beta == 1.0 {
                    c.shallow_clone()
                } else {
                    c.f_mul_scalar(beta)?
                };
                one(y.f_add(&c)?)
            }
            _ => one(y),
        }
    })
}
