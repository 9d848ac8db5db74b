//! Normalisation. Training-mode BatchNormalization reaches this file already
//! rewritten into its inference form fed by explicit batch statistics
//! (`autodiff::batchnorm`); its rule recognises those statistics and emits the
//! closed-form training gradient, and otherwise applies the inference-form
//! calculus with gradients for the mean and variance too.

use crate::onnx::builder::{attr_int, attr_ints};
use crate::ops::grad::GradCtx;
use crate::ops::nn::batchnorm;
use crate::ops::nn::gradient::common::{typed_like, unsupported, Grads};

/// Inference form, per channel c (axis 1), with s = 1 / sqrt(var + eps):
/// Y = scale (X - mean) s + B, x̂ = (X - mean) s.
/// dX = g scale s;  dscale = Σ g x̂;  dB = Σ g;  dmean = -Σ g scale s;
/// dvar = -1/2 scale s² Σ g x̂, sums over every axis but the channel.
/// With explicit batch statistics (training mode) mean and var are functions of
/// X, and the engine carries dmean and dvar back through their ReduceMean nodes.
pub fn batch_normalization(ctx: &mut GradCtx) -> Grads {
    if batchnorm::is_training(ctx.node, ctx.opset()) {
        return Err(unsupported(
            ctx,
            "training_mode=1 must first be rewritten with explicit batch statistics (autodiff::batchnorm::explicit_statistics)".to_string(),
        ));
    }
    let g = ctx.g()?;
    let (x, scale, bias, mean, var) = (ctx.i(0), ctx.i(1), ctx.i(2), ctx.i(3), ctx.i(4));
    let rank = ctx
        .shapes
        .rank(x)
        .ok_or_else(|| unsupported(ctx, format!("needs the rank of '{x}'")))?;
    let axes: Vec<i64> = std::iter::once(0).chain(2..rank as i64).collect();
    let inv_std = inverse_std(ctx);
    let scaled_inv_std = ctx.mul(scale, &inv_std, scale);
    let producer = |value: &str| ctx.producer(value);
    if let Some(centered) = batchnorm::centered_input(ctx.node, producer, ctx.shapes) {
        return batch_normalization_of_batch(ctx, &g, &centered, &inv_std, &scaled_inv_std);
    }

    let mut grads = vec![None; ctx.node.input.len()];
    if ctx.needs(0) {
        let factor = per_channel(ctx, &scaled_inv_std, rank);
        grads[0] = Some(ctx.mul(&g, &factor, x));
    }
    let sum_g = (ctx.needs(2) || ctx.needs(3)).then(|| ctx.reduce_sum(&g, &axes, false));
    let sum_g_xhat = (ctx.needs(1) || ctx.needs(4)).then(|| {
        let mean_c = per_channel(ctx, mean, rank);
        let inv_std_c = per_channel(ctx, &inv_std, rank);
        let centered = ctx.sub(x, &mean_c, x);
        let xhat = ctx.mul(&centered, &inv_std_c, x);
        let g_xhat = ctx.mul(&g, &xhat, x);
        ctx.reduce_sum(&g_xhat, &axes, false)
    });
    if let (true, Some(sum_g_xhat)) = (ctx.needs(1), sum_g_xhat.clone()) {
        grads[1] = Some(typed_like(ctx, sum_g_xhat, scale));
    }
    if let (true, Some(sum_g)) = (ctx.needs(2), sum_g.clone()) {
        grads[2] = Some(typed_like(ctx, sum_g, bias));
    }
    if let (true, Some(sum_g)) = (ctx.needs(3), sum_g.as_deref()) {
        let d = ctx.mul(sum_g, &scaled_inv_std, mean);
        grads[3] = Some(ctx.neg(&d));
    }
    if let (true, Some(sum_g_xhat)) = (ctx.needs(4), sum_g_xhat.as_deref()) {
        let minus_half = ctx.constant(-0.5, var);
        let inv_var = ctx.mul(&inv_std, &inv_std, var);
        let slope = ctx.mul(scale, &inv_var, var);
        let slope = ctx.mul(&slope, &minus_half, var);
        grads[4] = Some(ctx.mul(sum_g_xhat, &slope, var));
    }
    Ok(grads)
}

/// 1 / sqrt(var + epsilon) of a BatchNormalization, per channel.
fn inverse_std(ctx: &mut GradCtx) -> String {
    let var = ctx.i(4);
    let epsilon = ctx.attr_float("epsilon", 1e-5) as f64;
    let eps = ctx.constant(epsilon, var);
    let var_eps = ctx.add(var, &eps, var);
    let std = ctx.op("Sqrt", &[&var_eps], vec![], Some(var));
    ctx.op("Reciprocal", &[&std], vec![], Some(var))
}

/// Training form: mean and var are the batch statistics of X itself, so with the
/// forward's centred input C = X - mean, s = 1 / sqrt(var + eps), x̂ = C s and
/// M elements per channel, the whole derivative through the statistics is
/// dX = scale s (g - Σ g / M - C s² Σ(g C) / M);  dscale = s Σ(g C);  dB = Σ g
/// (sums over every axis but the channel). Mean and var get no gradient of their
/// own: this already is their share.
fn batch_normalization_of_batch(
    ctx: &mut GradCtx,
    g: &str,
    centered: &str,
    inv_std: &str,
    scaled_inv_std: &str,
) -> Grads {
    let (x, scale, bias, var) = (ctx.i(0), ctx.i(1), ctx.i(2), ctx.i(4));
    let rank = ctx.shapes.rank(x).expect("centered_input checked the rank");
    let axes: Vec<i64> = std::iter::once(0).chain(2..rank as i64).collect();
    let mut grads = vec![None; ctx.node.input.len()];
    let sum_g = (ctx.needs(0) || ctx.needs(2)).then(|| ctx.reduce_sum(g, &axes, false));
    let sum_g_centered = (ctx.needs(0) || ctx.needs(1)).then(|| {
        let g_centered = ctx.mul(g, centered, x);
        ctx.reduce_sum(&g_centered, &axes, false)
    });
    if let (true, Some(sum_g_centered)) = (ctx.needs(1), sum_g_centered.as_deref()) {
        let d = ctx.mul(sum_g_centered, inv_std, scale);
        grads[1] = Some(typed_like(ctx, d, scale));
    }
    if let (true, Some(sum_g)) = (ctx.needs(2), sum_g.clone()) {
        grads[2] = Some(typed_like(ctx, sum_g, bias));
    }
    if let (true, Some(sum_g), Some(sum_g_centered)) = (ctx.needs(0), sum_g, sum_g_centered) {
        // M = Size(X) / Size(var), known only at run time (the batch is symbolic).
        let size_x = ctx.op("Size", &[x], vec![], None);
        let size_var = ctx.op("Size", &[var], vec![], None);
        let count = ctx.op("Div", &[&size_x, &size_var], vec![], None);
        let to = attr_int("to", i64::from(ctx.elem(var)));
        let count = ctx.op("Cast", &[&count], vec![to], None);
        let mean_g = ctx.div(&sum_g, &count, var);
        let inv_var = ctx.mul(inv_std, inv_std, var);
        let mean_g_centered = ctx.div(&sum_g_centered, &count, var);
        let projection = ctx.mul(&mean_g_centered, &inv_var, var);
        let mean_g = per_channel(ctx, &mean_g, rank);
        let projection = per_channel(ctx, &projection, rank);
        let factor = per_channel(ctx, scaled_inv_std, rank);
        let along = ctx.mul(centered, &projection, x);
        let centered_g = ctx.sub(g, &mean_g, x);
        let tangent = ctx.sub(&centered_g, &along, x);
        grads[0] = Some(ctx.mul(&tangent, &factor, x));
    }
    Ok(grads)
}

/// Over the normalised axes A = [axis, rank), with x̂ = (X - mean) s, s = 1/std:
/// Y = x̂ scale + B;  dB = Σ g;  dscale = Σ g x̂ (over the broadcast axes);
/// dX = s (ĝ - mean_A(ĝ) - x̂ mean_A(ĝ x̂)) with ĝ = g scale.
/// Mean and InvStdDev come from the forward node (in its stash type).
pub fn layer_normalization(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let (x, scale, bias) = (ctx.i(0), ctx.i(1), ctx.i(2));
    let axis = ctx.attr_int("axis", -1);
    let rank = ctx.shapes.rank(x);
    // Negative axes need no rank: A = [axis, -1].
    let axes: Vec<i64> = match (axis, rank) {
        (a, _) if a < 0 => (a..0).collect(),
        (a, Some(r)) => (a..r as i64).collect(),
        (_, None) => {
            return Err(unsupported(
                ctx,
                format!("axis={axis} needs the rank of '{x}'"),
            ))
        }
    };
    let mean = ctx.forward_output(1);
    let inv_std = ctx.forward_output(2);
    let mean = ctx.op("CastLike", &[&mean, x], vec![], None);
    let inv_std = ctx.op("CastLike", &[&inv_std, x], vec![], None);
    let centered = ctx.sub(x, &mean, x);
    let xhat = ctx.mul(&centered, &inv_std, x);

    let mut grads = vec![None; ctx.node.input.len()];
    if ctx.needs(0) {
        let g_hat = ctx.mul(&g, scale, x);
        let mean_g_hat = reduce_mean(ctx, &g_hat, &axes, true);
        let g_hat_xhat = ctx.mul(&g_hat, &xhat, x);
        let projection = reduce_mean(ctx, &g_hat_xhat, &axes, true);
        let along = ctx.mul(&xhat, &projection, x);
        let centered_g = ctx.sub(&g_hat, &mean_g_hat, x);
        let tangent = ctx.sub(&centered_g, &along, x);
        grads[0] = Some(ctx.mul(&tangent, &inv_std, x));
    }
    if ctx.needs(1) {
        let g_xhat = ctx.mul(&g, &xhat, x);
        grads[1] = Some(ctx.unbroadcast(&g_xhat, scale));
    }
    if ctx.needs(2) {
        grads[2] = Some(ctx.unbroadcast(&g, bias));
    }
    Ok(grads)
}

/// `ReduceMean` over constant axes, axes as an attribute before opset 18.
fn reduce_mean(ctx: &mut GradCtx, x: &str, axes: &[i64], keepdims: bool) -> String {
    let keep = attr_int("keepdims", i64::from(keepdims));
    if ctx.opset() >= 18 {
        let axes = ctx.int_constant(axes);
        ctx.op("ReduceMean", &[x, &axes], vec![keep], None)
    } else {
        ctx.op(
            "ReduceMean",
            &[x],
            vec![keep, attr_ints("axes", axes)],
            None,
        )
    }
}

/// `[C]` reshaped to `[C, 1, ...]` so it broadcasts along axis 1 of a rank-`rank` tensor.
fn per_channel(ctx: &mut GradCtx, v: &str, rank: usize) -> String {
    if rank <= 2 {
        return v.to_string();
    }
    let axes: Vec<i64> = (1..rank as i64 - 1).collect();
    let axes = ctx.int_constant(&axes);
    ctx.op("Unsqueeze", &[v, &axes], vec![], None)
}
