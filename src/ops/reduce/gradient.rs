//! Reductions and normalisation by a norm.

use crate::error::{Error, Result};
use crate::onnx::builder::attr_int;
use crate::ops::grad::GradCtx;

type Grads = Result<Vec<Option<String>>>;

/// The reduced axes: the attribute before the op's axes-as-input opset, else the
/// constant second input. `None` means "all axes".
fn reduce_axes(ctx: &GradCtx, axes_input_since: i64) -> Result<Option<Vec<i64>>> {
    if ctx.opset() >= axes_input_since {
        if !ctx.has_input(1) {
            return Ok(None);
        }
        let axes = ctx.shapes.const_ints(ctx.i(1)).ok_or_else(|| {
            Error::invalid(format!(
                "reduction axes '{}' are not a compile-time constant",
                ctx.i(1)
            ))
        })?;
        Ok(if axes.is_empty() {
            None
        } else {
            Some(axes.to_vec())
        })
    } else {
        Ok(ctx.attr_ints("axes").filter(|a| !a.is_empty()))
    }
}

/// The output gradient reshaped so that it broadcasts against the input.
fn kept_dims(ctx: &mut GradCtx, g: &str, axes: &Option<Vec<i64>>) -> String {
    let keepdims = ctx.attr_int("keepdims", 1) != 0;
    match axes {
        Some(axes) if !keepdims => {
            let axes = ctx.int_constant(axes);
            ctx.op("Unsqueeze", &[g, &axes], vec![], None)
        }
        // keepdims, or a full reduction to a scalar: broadcasting already lines up.
        _ => g.to_string(),
    }
}

/// True when the node reduces nothing (empty axes with noop_with_empty_axes=1).
fn is_noop(ctx: &GradCtx, axes: &Option<Vec<i64>>) -> bool {
    axes.is_none() && ctx.attr_int("noop_with_empty_axes", 0) != 0
}

pub fn reduce_sum(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let x = ctx.i(0);
    let axes = reduce_axes(ctx, 13)?;
    if is_noop(ctx, &axes) {
        return Ok(vec![Some(g), None]);
    }
    let kept = kept_dims(ctx, &g, &axes);
    let shape = ctx.shape_of(x);
    Ok(vec![
        Some(ctx.op("Expand", &[&kept, &shape], vec![], Some(x))),
        None,
    ])
}

pub fn reduce_mean(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let (x, y) = (ctx.i(0), ctx.o(0));
    let axes = reduce_axes(ctx, 18)?;
    if is_noop(ctx, &axes) {
        return Ok(vec![Some(g), None]);
    }
    // Elements per output value: Size(x) / Size(y).
    let size_x = ctx.op("Size", &[x], vec![], None);
    let size_y = ctx.op("Size", &[y], vec![], None);
    let size_x = ctx.op("CastLike", &[&size_x, y], vec![], None);
    let size_y = ctx.op("CastLike", &[&size_y, y], vec![], None);
    let count = ctx.div(&size_x, &size_y, &size_x);
    let scaled = ctx.div(&g, &count, y);
    let kept = kept_dims(ctx, &scaled, &axes);
    let shape = ctx.shape_of(x);
    Ok(vec![
        Some(ctx.op("Expand", &[&kept, &shape], vec![], Some(x))),
        None,
    ])
}

/// y = ||x||: dx = x * g / y, zero where y = 0 (as PyTorch's norm backward).
pub fn reduce_l2(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let (x, y) = (ctx.i(0), ctx.o(0));
    let axes = reduce_axes(ctx, 18)?;
    if is_noop(ctx, &axes) {
        // |x| elementwise.
        let sign = ctx.op("Sign", &[x], vec![], Some(x));
        return Ok(vec![Some(ctx.mul(&g, &sign, x)), None]);
    }
    let zero = ctx.constant(0.0, y);
    let is_zero = ctx.op("Equal", &[y, &zero], vec![], None);
    let one = ctx.constant(1.0, y);
    let safe = ctx.select(&is_zero, &one, y, y);
    let q = ctx.div(&g, &safe, y);
    let q = ctx.select(&is_zero, &zero, &q, y);
    let kept = kept_dims(ctx, &q, &axes);
    Ok(vec![Some(ctx.mul(x, &kept, x)), None])
}

/// y = x / ||x||_axis (p = 2): dx = (g - y * sum(g y, axis)) / ||x||.
pub fn lp_normalization(ctx: &mut GradCtx) -> Grads {
    if ctx.attr_int("p", 2) != 2 {
        return Err(Error::invalid(
            "LpNormalization gradient supports p = 2 only".to_string(),
        ));
    }
    let g = ctx.g()?;
    let (x, y) = (ctx.i(0), ctx.o(0));
    let axis = ctx.attr_int("axis", -1);
    let norm = ctx.b.reduce_l2_keepdims(x, &[axis], "grad/lp_norm");
    let gy = ctx.mul(&g, y, y);
    let projection = if ctx.opset() >= 13 {
        ctx.reduce_sum(&gy, &[axis], true)
    } else {
        ctx.op(
            "ReduceSum",
            &[&gy],
            vec![
                attr_int("keepdims", 1),
                crate::onnx::builder::attr_ints("axes", &[axis]),
            ],
            None,
        )
    };
    let along = ctx.mul(y, &projection, y);
    let tangent = ctx.sub(&g, &along, y);
    Ok(vec![Some(ctx.div(&tangent, &norm, x))])
}
