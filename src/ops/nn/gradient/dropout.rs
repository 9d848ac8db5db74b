//! Dropout.

use crate::ops::grad::GradCtx;
use crate::ops::nn::gradient::common::Grads;

/// Training: Y = X mask / (1 - ratio), so dX = g mask / (1 - ratio) with the
/// forward node's own mask. Inference (no or false training_mode; before opset
/// 12 always): Y = X, dX = g.
pub fn dropout(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let x = ctx.i(0);
    let mut grads = vec![None; ctx.node.input.len()];
    if !ctx.needs(0) {
        return Ok(grads);
    }
    let training = ctx.i(2);
    let known = known_flag(ctx, training);
    if ctx.opset() < 12 || training.is_empty() || known == Some(false) {
        grads[0] = Some(g);
        return Ok(grads);
    }
    let mask = ctx.forward_output(1);
    let zero = ctx.constant(0.0, x);
    let kept = ctx.select(&mask, &g, &zero, x);
    let one = ctx.constant(1.0, x);
    let keep_probability = if ctx.has_input(1) {
        let ratio = ctx.op("CastLike", &[ctx.i(1), x], vec![], None);
        ctx.sub(&one, &ratio, &ratio)
    } else {
        ctx.constant(0.5, x)
    };
    // In inference mode the mask is all true and ORT does not scale.
    let keep_probability = match known {
        Some(true) => keep_probability,
        _ => ctx.select(training, &keep_probability, &one, &one),
    };
    grads[0] = Some(ctx.div(&kept, &keep_probability, x));
    Ok(grads)
}

/// The value of a boolean flag known at compile time.
fn known_flag(ctx: &GradCtx, name: &str) -> Option<bool> {
    if name.is_empty() {
        return None;
    }
    ctx.shapes
        .const_ints(name)
        .and_then(|v| v.first().map(|&b| b != 0))
}
