//! Convolution, pooling, normalisation and Dropout.

use super::batchnorm;
use super::window::{AutoPad, Window};
use crate::onnx::{NodeAttributes, NodeProto};
use crate::ops::kernel::{normalize_axis, one, step, Host, NodeCtx, OpCtx, OpError, Prepare};
use std::borrow::Cow;
use tch::{Kind, Tensor};

/// The window geometry of Conv and the pools, as libtorch takes it.
#[derive(Clone)]
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

impl TorchWindow {
    /// `window`, its pads explicit, in libtorch's form.
    fn of(window: Window, pool: bool) -> TorchWindow {
        let Window {
            kernel,
            strides,
            dilations,
            pads,
            ..
        } = window;
        let n = kernel.len();
        let (begin, end) = pads.split_at(n);
        // libtorch pools allow at most half the kernel as padding.
        let pool_limit = |i: usize| pool && 2 * begin[i] > kernel[i];
        if (0..n).all(|i| begin[i] == end[i] && !pool_limit(i)) {
            return TorchWindow {
                padding: begin.to_vec(),
                kernel,
                strides,
                dilations,
                pre_pad: None,
            };
        }
        let pre_pad = (0..n).rev().flat_map(|i| [begin[i], end[i]]).collect();
        TorchWindow {
            padding: vec![0; n],
            kernel,
            strides,
            dilations,
            pre_pad: Some(pre_pad),
        }
    }
}

/// A Conv's or pool's window: resolved when the program is built, unless it
/// depends on the input (SAME padding on the input's size, a Conv without
/// `kernel_shape` on its weight's).
enum Geometry {
    Fixed { spatial: usize, window: TorchWindow },
    PerInput { node: NodeProto, pool: bool },
}

impl Geometry {
    fn prepare(node: &NodeCtx, pool: bool) -> Result<Geometry, OpError> {
        let spatial = node
            .node
            .ints_attr("kernel_shape")
            .filter(|k| !k.is_empty())
            .map(<[i64]>::len);
        if let Some(spatial) = spatial {
            let window = Window::read(node.node, spatial, None).map_err(|e| node.error(e))?;
            if matches!(window.auto_pad, AutoPad::NotSet | AutoPad::Valid) {
                // Explicit or no padding: the same for every input size.
                let window = window
                    .resolved(&vec![0; spatial])
                    .ok_or_else(|| node.error("pads overflow"))?;
                return Ok(Geometry::Fixed {
                    spatial,
                    window: TorchWindow::of(window, pool),
                });
            }
        }
        Ok(Geometry::PerInput {
            node: node.node.clone(),
            pool,
        })
    }

    /// The window over `x` (for a Conv, with `weight`).
    fn over(&self, x: &Tensor, weight: Option<&Tensor>) -> Result<Cow<'_, TorchWindow>, OpError> {
        let n = x
            .dim()
            .checked_sub(2)
            .ok_or_else(|| OpError(format!("input of shape {:?} has no spatial axes", x.size())))?;
        match self {
            Geometry::Fixed { spatial, window } => {
                if n != *spatial {
                    return Err(OpError(format!(
                        "kernel_shape has {spatial} values, the input of shape {:?} has {n} spatial axes",
                        x.size()
                    )));
                }
                Ok(Cow::Borrowed(window))
            }
            Geometry::PerInput { node, pool } => {
                let weight_kernel = weight.map(|w| w.size().get(2..).unwrap_or(&[]).to_vec());
                let geometry = Window::read(node, n, weight_kernel.as_deref()).map_err(OpError)?;
                let size = x.size();
                let spatial = &size[2..];
                let resolved = geometry
                    .resolved(spatial)
                    .ok_or_else(|| OpError(format!("pads overflow over the input {spatial:?}")))?;
                Ok(Cow::Owned(TorchWindow::of(resolved, *pool)))
            }
        }
    }
}

fn pre_padded(x: &Tensor, w: &TorchWindow, value: f64) -> Result<Tensor, tch::TchError> {
    match &w.pre_pad {
        None => Ok(x.shallow_clone()),
        Some(pads) if value == 0.0 => x.f_constant_pad_nd(pads.as_slice()),
        Some(pads) => x.f_pad(pads.as_slice(), "constant", value),
    }
}

pub fn conv(node: &NodeCtx) -> Prepare {
    let geometry = Geometry::prepare(node, false)?;
    let group = node.attr_int("group", 1);
    step(move |ctx| {
        let (x, weight, bias) = (ctx.input(0)?, ctx.input(1)?, ctx.opt_input(2));
        let w = geometry.over(x, Some(weight))?;
        let zeros = vec![0; w.kernel.len()];
        let x = pre_padded(x, &w, 0.0)?;
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
    })
}

pub fn max_pool(node: &NodeCtx) -> Prepare {
    if node.wants_output(1) {
        return Err(node.error(
            "the Indices output is not supported by the torch backend (ONNX flattens indices over the whole tensor)",
        ));
    }
    if node.attr_int("storage_order", 0) != 0 {
        return Err(node.error("storage_order 1 is not supported"));
    }
    let geometry = Geometry::prepare(node, true)?;
    let ceil = node.attr_int("ceil_mode", 0) != 0;
    step(move |ctx| {
        let x = ctx.input(0)?;
        let w = geometry.over(x, None)?;
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
    })
}

pub fn average_pool(node: &NodeCtx) -> Prepare {
    let geometry = Geometry::prepare(node, true)?;
    let ceil = node.attr_int("ceil_mode", 0) != 0;
    let include_pad = node.attr_int("count_include_pad", 0) != 0;
    step(move |ctx| {
        let x = ctx.input(0)?;
        let w = geometry.over(x, None)?;
        if w.dilations.iter().any(|&d| d != 1) {
            return Err(ctx.error("dilated average pooling is not supported"));
        }
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
    })
}

pub fn global_average_pool(_: &NodeCtx) -> Prepare {
    step(|ctx| {
        let x = ctx.input(0)?;
        let spatial: Vec<i64> = (2..x.dim() as i64).collect();
        one(x.f_mean_dim(spatial.as_slice(), true, None)?)
    })
}

/// PyTorch semantics: in training mode the batch's mean and biased variance
/// normalise, and libtorch updates the running statistics in place with ONNX
/// momentum m (PyTorch's 1 - m) and the unbiased variance; otherwise the running
/// statistics normalise. Outputs 1 and 2 of a training-mode node are the updated
/// running statistics.
pub fn batch_normalization(node: &NodeCtx) -> Prepare {
    if (3..5).any(|i| node.wants_output(i)) {
        return Err(node.error("the saved mean and variance outputs are not supported"));
    }
    let epsilon = f64::from(node.attr_float("epsilon", 1e-5));
    let momentum = f64::from(node.attr_float("momentum", 0.9));
    let training_mode = batchnorm::is_training(node.node, node.opset);
    // Statistics the graph computes (NF-Net's weight standardisation) are no
    // running statistics: as PyTorch's `F.batch_norm(w, None, None,
    // training=True)`, such a node normalises with its batch statistics in
    // evaluation too, and passes none (libtorch would update them in place, and
    // refuses inputs that need gradients).
    let computed = training_mode && node.is_computed(3) && node.is_computed(4);
    step(move |ctx| {
        let x = ctx.input(0)?;
        let (scale, bias) = (ctx.input(1)?, ctx.input(2)?);
        let (mean, var) = (ctx.input(3)?, ctx.input(4)?);
        let train = computed || (ctx.training && training_mode);
        let running = |t| (!computed).then_some(t);
        let y = x.f_batch_norm(
            Some(scale),
            Some(bias),
            running(mean),
            running(var),
            train,
            1.0 - momentum,
            epsilon,
            true,
        )?;
        Ok(vec![y, mean.shallow_clone(), var.shallow_clone()])
    })
}

/// Normalises over the axes from `axis` (default -1) on, epsilon 1e-5 by default.
pub fn layer_normalization(node: &NodeCtx) -> Prepare {
    if node.wants_output(1) || node.wants_output(2) {
        return Err(node.error("the Mean and InvStdDev outputs are not supported"));
    }
    let axis = node.attr_int("axis", -1);
    let epsilon = f64::from(node.attr_float("epsilon", 1e-5));
    step(move |ctx| {
        let x = ctx.input(0)?;
        let axis = normalize_axis(axis, x.dim())? as usize;
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
    })
}

/// Opset 12 on: `ratio` (default 0.5) and `training_mode` (default false) are
/// inputs; before, Dropout is the identity at inference. In a training step with
/// training_mode true, kept elements are scaled by 1 / (1 - ratio), as PyTorch.
pub fn dropout(node: &NodeCtx) -> Prepare {
    let (ratio, training_mode) = if node.opset >= 12 {
        (node.scalar_input(1)?, node.scalar_input(2)?)
    } else {
        (
            Host::Fixed(Some(f64::from(node.attr_float("ratio", 0.5)))),
            Host::Fixed(None),
        )
    };
    let wants_mask = node.wants_output(1);
    step(move |ctx| {
        let x = ctx.input(0)?;
        let ratio = ratio.get(ctx)?.unwrap_or(0.5);
        let training_mode = training_mode.get(ctx)?.unwrap_or(0.0) != 0.0;
        if !(0.0..1.0).contains(&ratio) {
            return Err(ctx.error(format!("ratio must lie in [0, 1), got {ratio}")));
        }
        if !(ctx.training && training_mode) || ratio == 0.0 {
            if !wants_mask {
                return one(x.shallow_clone());
            }
            let mask = Tensor::f_ones(x.size(), (Kind::Bool, x.device()))?;
            return Ok(vec![x.shallow_clone(), mask]);
        }
        let keep = x.f_rand_like()?.f_ge(ratio)?;
        let y = x.f_mul(&keep)?.f_mul_scalar(1.0 / (1.0 - ratio))?;
        Ok(if wants_mask { vec![y, keep] } else { vec![y] })
    })
}

/// Resize's output lengths and per-axis factors: from `sizes` (factor out / in)
/// or from `scales` (lengths floored).
fn resize_targets(ctx: &OpCtx, dims: &[i64]) -> Result<(Vec<i64>, Vec<f64>), OpError> {
    Ok(match ctx.opt_input(3).filter(|t| t.numel() > 0) {
        Some(sizes) => {
            let sizes = Vec::<i64>::try_from(sizes)?;
            let factors = dims
                .iter()
                .zip(&sizes)
                .map(|(&d, &s)| s as f64 / d as f64)
                .collect();
            (sizes, factors)
        }
        None => {
            let scales = Vec::<f64>::try_from(ctx.input(2)?.f_to_kind(tch::Kind::Double)?)?;
            let sizes = dims
                .iter()
                .zip(&scales)
                .map(|(&d, s)| (d as f64 * s).floor() as i64)
                .collect();
            (sizes, scales)
        }
    })
}

/// Resize in linear mode over the last two axes: X multiplied along each
/// resized axis by the interpolation matrix the gradient rule transposes
/// ([`crate::ops::nn::interpolation::linear_matrix`]).
fn linear_resize(node: &NodeCtx) -> Prepare {
    if node.attr_int("antialias", 0) != 0 || node.node.ints_attr("axes").is_some() {
        return Err(node.error("antialias and axes are not supported in linear mode"));
    }
    let transform = node
        .node
        .string_attr("coordinate_transformation_mode")
        .unwrap_or("half_pixel")
        .to_string();
    step(move |ctx| {
        let x = ctx.input(0)?;
        let dims = x.size();
        let (targets, factors) = resize_targets(ctx, &dims)?;
        let rank = dims.len();
        let mut y = x.shallow_clone();
        for axis in 0..rank {
            let (from, to) = (dims[axis], targets[axis]);
            if from == to && factors.get(axis).is_none_or(|&f| f == 1.0) {
                continue;
            }
            if axis + 2 < rank {
                return Err(ctx.error("linear mode is supported over the last two axes"));
            }
            let factor = factors
                .get(axis)
                .copied()
                .unwrap_or(to as f64 / from as f64);
            let matrix = crate::ops::nn::interpolation::linear_matrix(from, to, factor, &transform)
                .ok_or_else(|| {
                    ctx.error(format!(
                        "coordinate_transformation_mode '{transform}' is not supported in linear mode"
                    ))
                })?;
            let a = Tensor::f_from_slice(&matrix)?
                .f_reshape([to, from])?
                .f_to_kind(x.kind())?
                .f_to_device(x.device())?;
            y = if axis == rank - 1 {
                y.f_matmul(&a.f_transpose(0, 1)?)?
            } else {
                a.f_matmul(&y)?
            };
        }
        one(y)
    })
}

/// Resize in nearest mode by whole factors, as the gradient rule supports:
/// each axis repeated element by element.
pub fn resize(node: &NodeCtx) -> Prepare {
    use crate::onnx::NodeAttributes;
    let mode = node
        .node
        .string_attr("mode")
        .unwrap_or("nearest")
        .to_string();
    if mode == "linear" {
        return linear_resize(node);
    }
    if mode != "nearest" {
        return Err(node.error(format!(
            "mode '{mode}' is not supported (nearest and linear are)"
        )));
    }
    step(|ctx| {
        let x = ctx.input(0)?;
        let dims = x.size();
        let (targets, _) = resize_targets(ctx, &dims)?;
        let mut y = x.shallow_clone();
        for (axis, (&from, &to)) in dims.iter().zip(&targets).enumerate() {
            if from == to {
                continue;
            }
            if from <= 0 || to % from != 0 {
                return Err(ctx.error("not an upsampling by whole factors"));
            }
            y = y.f_repeat_interleave_self_int(to / from, Some(axis as i64), None)?;
        }
        one(y)
    })
}
