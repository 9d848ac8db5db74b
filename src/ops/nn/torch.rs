//! Convolution, pooling, normalisation and Dropout.

use super::batchnorm;
use super::window::Window;
use crate::ops::kernel::{normalize_axis, one, OpCtx, OpError, OpResult};
use tch::{Kind, Tensor};

/// The window geometry of Conv and the pools, as libtorch takes it.
struct TorchWindow {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    /// Symmetric padding for libtorch, after any explicit pre-padding.
    padding: Vec<i64>,
    /// [last_begin, last_end, ..., first_begin, first_end] for `constant_pad_nd`
    /// when the padding is asymmetric (or too large for the pool), else `None`.
    pre_pad: Option<Vec<i64>>,
}

/// The node's [`Window`] over `x`, its pads resolved for `x`'s size.
fn window(
    ctx: &OpCtx,
    x: &Tensor,
    weight_kernel: Option<&[i64]>,
    pool: bool,
) -> Result<TorchWindow, OpError> {
    let n = x
        .dim()
        .checked_sub(2)
        .ok_or_else(|| ctx.error(format!("input of shape {:?} has no spatial axes", x.size())))?;
    let geometry = Window::read(ctx.node, n, weight_kernel).map_err(|e| ctx.error(e))?;
    let spatial = &x.size()[2..];
    let resolved = geometry
        .resolved(spatial)
        .ok_or_else(|| ctx.error(format!("pads overflow over the input {spatial:?}")))?;
    let Window {
        kernel,
        strides,
        dilations,
        pads,
        ..
    } = resolved;
    let (begin, end) = pads.split_at(n);
    // libtorch pools allow at most half the kernel as padding.
    let pool_limit = |i: usize| pool && 2 * begin[i] > kernel[i];
    if (0..n).all(|i| begin[i] == end[i] && !pool_limit(i)) {
        return Ok(TorchWindow {
            padding: begin.to_vec(),
            kernel,
            strides,
            dilations,
            pre_pad: None,
        });
    }
    let pre_pad = (0..n).rev().flat_map(|i| [begin[i], end[i]]).collect();
    Ok(TorchWindow {
        padding: vec![0; n],
        kernel,
        strides,
        dilations,
        pre_pad: Some(pre_pad),
    })
}

fn pre_padded(x: &Tensor, w: &TorchWindow, value: f64) -> Result<Tensor, tch::TchError> {
    match &w.pre_pad {
        None => Ok(x.shallow_clone()),
        Some(pads) if value == 0.0 => x.f_constant_pad_nd(pads.as_slice()),
        Some(pads) => x.f_pad(pads.as_slice(), "constant", value),
    }
}

pub fn conv(ctx: &OpCtx) -> OpResult {
    let (x, weight, bias) = (ctx.input(0)?, ctx.input(1)?, ctx.opt_input(2));
    let weight_kernel = weight.size()[2..].to_vec();
    let w = window(ctx, x, Some(&weight_kernel), false)?;
    let group = ctx.attr_int("group", 1);
    let x = pre_padded(x, &w, 0.0)?;
    let zeros = vec![0; w.kernel.len()];
    one(x.f_convolution(
        weight,
        bias,
        w.strides.as_slice(),
        w.padding.as_slice(),
        w.dilations.as_slice(),
        false,
        zeros.as_slice(),
        group,
    )?)
}

pub fn max_pool(ctx: &OpCtx) -> OpResult {
    if ctx.wants_output(1) {
        return Err(ctx.error(
            "the Indices output is not supported by the torch backend (ONNX flattens indices over the whole tensor)",
        ));
    }
    if ctx.attr_int("storage_order", 0) != 0 {
        return Err(ctx.error("storage_order 1 is not supported"));
    }
    let x = ctx.input(0)?;
    let w = window(ctx, x, None, true)?;
    let ceil = ctx.attr_int("ceil_mode", 0) != 0;
    let x = pre_padded(x, &w, f64::NEG_INFINITY)?;
    let (k, s, p, d) = (
        w.kernel.as_slice(),
        w.strides.as_slice(),
        w.padding.as_slice(),
        w.dilations.as_slice(),
    );
    one(match k.len() {
        1 => x.f_max_pool1d(k, s, p, d, ceil)?,
        2 => x.f_max_pool2d(k, s, p, d, ceil)?,
        3 => x.f_max_pool3d(k, s, p, d, ceil)?,
        n => return Err(ctx.error(format!("{n}-D pooling is not supported"))),
    })
}

pub fn average_pool(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let w = window(ctx, x, None, true)?;
    if w.dilations.iter().any(|&d| d != 1) {
        return Err(ctx.error("dilated average pooling is not supported"));
    }
    let ceil = ctx.attr_int("ceil_mode", 0) != 0;
    let include_pad = ctx.attr_int("count_include_pad", 0) != 0;
    if w.pre_pad.is_some() && !include_pad {
        return Err(ctx.error("asymmetric padding with count_include_pad=0 is not supported"));
    }
    let x = pre_padded(x, &w, 0.0)?;
    let (k, s, p) = (
        w.kernel.as_slice(),
        w.strides.as_slice(),
        w.padding.as_slice(),
    );
    one(match k.len() {
        1 => x.f_avg_pool1d(k, s, p, ceil, include_pad)?,
        2 => x.f_avg_pool2d(k, s, p, ceil, include_pad, None)?,
        3 => x.f_avg_pool3d(k, s, p, ceil, include_pad, None)?,
        n => return Err(ctx.error(format!("{n}-D pooling is not supported"))),
    })
}

pub fn global_average_pool(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let spatial: Vec<i64> = (2..x.dim() as i64).collect();
    one(x.f_mean_dim(spatial.as_slice(), true, None)?)
}

/// PyTorch semantics: in training mode the batch's mean and biased variance
/// normalise, and libtorch updates the running statistics in place with ONNX
/// momentum m (PyTorch's 1 - m) and the unbiased variance; otherwise the running
/// statistics normalise. Outputs 1 and 2 of a training-mode node are the updated
/// running statistics.
pub fn batch_normalization(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let (scale, bias) = (ctx.input(1)?, ctx.input(2)?);
    let (mean, var) = (ctx.input(3)?, ctx.input(4)?);
    let epsilon = f64::from(ctx.attr_float("epsilon", 1e-5));
    let momentum = f64::from(ctx.attr_float("momentum", 0.9));
    let training = ctx.training && batchnorm::is_training(ctx.node, ctx.opset);
    if (3..5).any(|i| ctx.wants_output(i)) {
        return Err(ctx.error("the saved mean and variance outputs are not supported"));
    }
    let y = x.f_batch_norm(
        Some(scale),
        Some(bias),
        Some(mean),
        Some(var),
        training,
        1.0 - momentum,
        epsilon,
        true,
    )?;
    Ok(vec![y, mean.shallow_clone(), var.shallow_clone()])
}

/// Normalises over the axes from `axis` (default -1) on, epsilon 1e-5 by default.
pub fn layer_normalization(ctx: &OpCtx) -> OpResult {
    if ctx.wants_output(1) || ctx.wants_output(2) {
        return Err(ctx.error("the Mean and InvStdDev outputs are not supported"));
    }
    let x = ctx.input(0)?;
    let axis = normalize_axis(ctx.attr_int("axis", -1), x.dim())? as usize;
    let epsilon = f64::from(ctx.attr_float("epsilon", 1e-5));
    let normalized = x.size()[axis..].to_vec();
    let scale = ctx.input(1)?.f_expand(normalized.as_slice(), false)?;
    let bias = ctx
        .opt_input(2)
        .map(|b| b.f_expand(normalized.as_slice(), false))
        .transpose()?;
    one(x.f_layer_norm(
        normalized.as_slice(),
        Some(&scale),
        bias.as_ref(),
        epsilon,
        true,
    )?)
}

/// Opset 12 on: `ratio` (default 0.5) and `training_mode` (default false) are
/// inputs; before, Dropout is the identity at inference. In a training step with
/// training_mode true, kept elements are scaled by 1 / (1 - ratio), as PyTorch.
pub fn dropout(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let (ratio, training_mode) = if ctx.opset >= 12 {
        let ratio = ctx.scalar_input(1)?.unwrap_or(0.5);
        let mode = ctx.scalar_input(2)?.unwrap_or(0.0) != 0.0;
        (ratio, mode)
    } else {
        (f64::from(ctx.attr_float("ratio", 0.5)), false)
    };
    if !(0.0..1.0).contains(&ratio) {
        return Err(ctx.error(format!("ratio must lie in [0, 1), got {ratio}")));
    }
    if !(ctx.training && training_mode) || ratio == 0.0 {
        let mask = x.f_ones_like()?.f_to_kind(Kind::Bool)?;
        return Ok(vec![x.shallow_clone(), mask]);
    }
    let keep = x.f_rand_like()?.f_ge(ratio)?;
    let y = x.f_mul(&keep)?.f_mul_scalar(1.0 / (1.0 - ratio))?;
    Ok(vec![y, keep])
}
