//! Pooling. Max pooling scatters the gradient to the arg-max the forward node
//! reports; average pooling is linear, so its gradient is a transposed
//! convolution with a kernel of ones over the same window.

use crate::error::Result;
use crate::onnx::builder::{attr_int, attr_string};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::TensorProto;
use crate::ops::grad::{tensor_attr, GradCtx};
use crate::ops::nn::gradient::common::{typed_like, unsupported, Grads};
use crate::ops::nn::gradient::geometry::{kernel_shape, read_window, spatial_size};
use crate::ops::nn::window::Window;

const DOUBLE: i32 = DataType::Double as i32;

/// Y = max over each window: the gradient goes to each window's arg-max, summed
/// where windows overlap. The forward node's Indices output holds that arg-max as
/// an offset into the whole flattened X (storage_order 0), so dX is a scatter-add
/// of g into zeros; the window geometry (pads, dilations, ceil_mode) never matters.
pub fn max_pool(ctx: &mut GradCtx) -> Grads {
    if ctx.attr_int("storage_order", 0) != 0 {
        return Err(unsupported(
            ctx,
            "storage_order=1 (column-major Indices) is not supported".to_string(),
        ));
    }
    let g = ctx.g()?;
    let x = ctx.i(0);
    // Overlapping windows can pick the same element twice: that needs
    // ScatterElements' reduction="add" (opset 16); disjoint windows never collide.
    let scatter_attrs = if ctx.opset() >= 16 {
        vec![attr_int("axis", 0), attr_string("reduction", "add")]
    } else {
        let kernel = kernel_shape(ctx, None)?;
        let rank = kernel.len();
        let window = read_window(ctx, kernel, &vec![1; rank])?;
        if !window.windows_disjoint() {
            return Err(unsupported(
                ctx,
                format!(
                    "overlapping windows (kernel_shape {:?}, strides {:?}) need ScatterElements with reduction, available from opset 16; the model imports opset {}",
                    window.kernel,
                    window.strides,
                    ctx.opset()
                ),
            ));
        }
        vec![attr_int("axis", 0)]
    };
    let indices = ctx.forward_output(1);
    let shape = ctx.shape_of(x);
    let zero = float_tensor(ctx.elem(x), &[1], &[0.0]);
    let zeros = ctx.op(
        "ConstantOfShape",
        &[&shape],
        vec![tensor_attr("value", zero)],
        None,
    );
    let flat = ctx.int_constant(&[-1]);
    let zeros = ctx.op("Reshape", &[&zeros, &flat], vec![], None);
    let indices = ctx.op("Reshape", &[&indices, &flat], vec![], None);
    let g_flat = ctx.op("Reshape", &[&g, &flat], vec![], None);
    let scattered = ctx.op(
        "ScatterElements",
        &[&zeros, &indices, &g_flat],
        scatter_attrs,
        None,
    );
    Ok(vec![Some(ctx.op(
        "Reshape",
        &[&scattered, &shape],
        vec![],
        Some(x),
    ))])
}

/// Y = mean over each window: every element of a window receives g / divisor,
/// summed over the windows it lies in. That is a transposed convolution with a
/// kernel of ones, run on each (n, c) plane as its own sample so that one
/// [1, 1, k...] kernel serves every channel. Follows PyTorch's divisor: the whole
/// window with count_include_pad=1, its elements inside X otherwise.
///
/// In ceil mode (ResNet-D's `AvgPool2d(2, 2, ceil_mode=True)`) the last window
/// may run past the end padding; it is clipped there, and the divisor counts
/// the clipped window (pads included) or its elements inside X, as PyTorch.
pub fn average_pool(ctx: &mut GradCtx) -> Grads {
    let ceil = ctx.attr_int("ceil_mode", 0) != 0;
    if let Some(d) = ctx
        .attr_ints("dilations")
        .filter(|d| d.iter().any(|&v| v != 1))
    {
        return Err(unsupported(
            ctx,
            format!("dilations {d:?} are not supported (PyTorch has no dilated average pooling)"),
        ));
    }
    if let Some(mode) = ctx
        .attr_string("auto_pad")
        .filter(|m| !matches!(m.as_str(), "NOTSET" | "VALID" | ""))
    {
        return Err(unsupported(
            ctx,
            format!("auto_pad '{mode}' is not supported (use explicit pads)"),
        ));
    }
    let g = ctx.g()?;
    let x = ctx.i(0);
    let input = spatial_size(ctx, x)?;
    let window = read_window(ctx, kernel_shape(ctx, None)?, &input)?;
    let output = if ceil {
        (0..window.rank())
            .map(|a| window.output_len(a, input[a], true))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| unsupported(ctx, "no output in ceil mode".to_string()))?
    } else {
        window.output_size_checked(ctx, &input)?
    };
    window.check_table_len(ctx, &input, &output)?;
    let window_size: i64 = window.kernel.iter().product();
    if window.kernel == input && window.pads.iter().all(|&p| p == 0) {
        // One window covering X (ResNet's final 8x8 pool): g spreads evenly.
        return Ok(vec![Some(spread_evenly(ctx, &g, x, Some(window_size))?)]);
    }
    let elem = ctx.elem(x);
    let include_pad = ctx.attr_int("count_include_pad", 0) != 0;
    let clipped = ceil
        && (0..window.rank()).any(|a| {
            window.strides[a] * (output[a] - 1) + window.kernel[a]
                > input[a] + window.pads[a] + window.pads[a + window.rank()]
        });
    let inverse_divisor = if !clipped && (include_pad || window.pads.iter().all(|&p| p == 0)) {
        ctx.constant(1.0 / window_size as f64, x)
    } else {
        // Elements counted: inside X, or inside X and its pads.
        let rank = window.rank();
        let bounds: Vec<(i64, i64)> = (0..rank)
            .map(|a| match include_pad {
                true => (-window.pads[a], input[a] + window.pads[a + rank]),
                false => (0, input[a]),
            })
            .collect();
        let values = inverse_counts(&window, &bounds, &output);
        tensor_constant(ctx, "grad/avgpool_inverse_counts", elem, &output, &values)
    };
    let shares = ctx.mul(&g, &inverse_divisor, &g);
    let plane_shape: Vec<i64> = [-1, 1]
        .into_iter()
        .chain(std::iter::repeat_n(0, window.rank()))
        .collect();
    let plane_shape = ctx.int_constant(&plane_shape);
    let planes = ctx.op("Reshape", &[&shares, &plane_shape], vec![], None);
    let kernel_dims: Vec<i64> = [1, 1]
        .into_iter()
        .chain(window.kernel.iter().copied())
        .collect();
    let ones = tensor_constant(
        ctx,
        "grad/avgpool_ones",
        elem,
        &kernel_dims,
        &vec![1.0; window_size as usize],
    );
    let spread = ctx.op(
        "ConvTranspose",
        &[&planes, &ones],
        window.transposed(&input, &output, 1),
        None,
    );
    let shape = ctx.shape_of(x);
    Ok(vec![Some(ctx.op(
        "Reshape",
        &[&spread, &shape],
        vec![],
        Some(x),
    ))])
}

/// 1 / (elements of each window inside `bounds`, per axis `[lo, hi)`), over
/// the output grid, row-major: the product of the per-axis counts.
fn inverse_counts(window: &Window, bounds: &[(i64, i64)], output: &[i64]) -> Vec<f64> {
    let per_axis: Vec<Vec<i64>> = (0..window.rank())
        .map(|a| {
            (0..output[a])
                .map(|o| {
                    let start = o * window.strides[a] - window.pads[a];
                    (0..window.kernel[a])
                        .filter(|t| (bounds[a].0..bounds[a].1).contains(&(start + t)))
                        .count() as i64
                })
                .collect()
        })
        .collect();
    let total: i64 = output.iter().product();
    (0..total)
        .map(|flat| {
            let mut rest = flat;
            let mut count = 1;
            for a in (0..window.rank()).rev() {
                count *= per_axis[a][(rest % output[a]) as usize];
                rest /= output[a];
            }
            1.0 / count as f64
        })
        .collect()
}

/// Y = mean of X over its spatial axes: dX = g / count, broadcast back to X.
pub fn global_average_pool(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let x = ctx.i(0);
    let count = spatial_size(ctx, x).ok().map(|s| s.iter().product());
    Ok(vec![Some(spread_evenly(ctx, &g, x, count)?)])
}

/// g [N, C, 1, ...] divided by the elements per window (static `count`, else
/// Size(X) / Size(g) at run time) and expanded to X's shape.
fn spread_evenly(ctx: &mut GradCtx, g: &str, x: &str, count: Option<i64>) -> Result<String> {
    let share = match count {
        Some(count) => {
            let inverse = ctx.constant(1.0 / count as f64, x);
            ctx.mul(g, &inverse, g)
        }
        None => {
            let size_x = ctx.op("Size", &[x], vec![], None);
            let size_g = ctx.op("Size", &[g], vec![], None);
            let count = ctx.op("Div", &[&size_x, &size_g], vec![], None);
            let count = ctx.op("CastLike", &[&count, g], vec![], None);
            ctx.div(g, &count, g)
        }
    };
    let shape = ctx.shape_of(x);
    Ok(ctx.op("Expand", &[&share, &shape], vec![], Some(x)))
}

/// A tensor of `elem_type` (float or double) with the given values.
fn float_tensor(elem_type: i32, dims: &[i64], values: &[f64]) -> TensorProto {
    if elem_type == DOUBLE {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(DOUBLE),
            raw_data: Some(
                values
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
            ),
            ..Default::default()
        }
    } else {
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        crate::onnx::tensor::f32_tensor("", dims, &values)
    }
}

fn tensor_constant(
    ctx: &mut GradCtx,
    hint: &str,
    elem_type: i32,
    dims: &[i64],
    values: &[f64],
) -> String {
    ctx.b.constant(hint, float_tensor(elem_type, dims, values))
}

/// Resize in nearest mode by whole factors (HRNet's and FPN's
/// `nn.Upsample(scale_factor=2, mode='nearest')`): every input element is
/// copied into a block of `f1 x f2 ...` outputs, so its gradient is the sum of
/// g over its block: g reshaped to `[N, C, H, f1, W, f2, ...]` and summed over
/// the factor axes. The factors come from X's and Y's static shapes. Other
/// modes and fractional factors are refused.
pub fn resize(ctx: &mut GradCtx) -> Grads {
    let mode = ctx
        .attr_string("mode")
        .unwrap_or_else(|| "nearest".to_string());
    let transform = ctx
        .attr_string("coordinate_transformation_mode")
        .unwrap_or_else(|| "half_pixel".to_string());
    if mode == "linear" {
        return linear_resize(ctx, &transform);
    }
    if mode != "nearest"
        || !matches!(
            transform.as_str(),
            "asymmetric" | "half_pixel" | "pytorch_half_pixel"
        )
    {
        return Err(unsupported(
            ctx,
            format!(
                "mode '{mode}' with coordinate_transformation_mode '{transform}' is not supported \
                 (nearest upsampling by whole factors, and linear, are)"
            ),
        ));
    }
    let g = ctx.g()?;
    let (x, y) = (ctx.i(0), ctx.o(0));
    use crate::onnx::types::Dim;
    let (Some(xs), Some(ys)) = (ctx.shape(x), ctx.shape(y)) else {
        return Err(unsupported(
            ctx,
            "the ranks of its input and output must be known".to_string(),
        ));
    };
    // Per axis (extent, factor); an axis Resize leaves alone may be symbolic
    // (the batch), and one such extent is left to Reshape's -1.
    let mut blocks = Vec::with_capacity(2 * xs.len());
    for (a, b) in xs.iter().zip(&ys) {
        let (extent, factor) = match (a, b) {
            (Dim::Fixed(a), Dim::Fixed(b)) if *a > 0 && b % a == 0 => (*a, b / a),
            (a, b) if a == b && !matches!(a, Dim::Unknown) => (-1, 1),
            _ => {
                return Err(unsupported(
                    ctx,
                    format!("{xs:?} to {ys:?} is not an upsampling by whole factors"),
                ))
            }
        };
        blocks.extend([extent, factor]);
    }
    if blocks.iter().filter(|&&v| v == -1).count() > 1 {
        return Err(unsupported(
            ctx,
            "more than one of its axes has no static extent".to_string(),
        ));
    }
    let block_shape = ctx.int_constant(&blocks);
    let blocked = ctx.op("Reshape", &[&g, &block_shape], vec![], None);
    let factor_axes: Vec<i64> = (0..xs.len() as i64).map(|a| 2 * a + 1).collect();
    let summed = ctx.reduce_sum(&blocked, &factor_axes, false);
    Ok(vec![Some(typed_like(ctx, summed, x)), None, None, None])
}

/// Resize in linear mode (PyTorch's bilinear `F.interpolate`, EfficientFormerV2's
/// upsampling) over the last two axes with static lengths: Y = A_H X A_W^T with
/// the interpolation matrices of [`interpolation::linear_matrix`], so
/// dX = A_H^T g A_W, two MatMuls with constant matrices.
fn linear_resize(ctx: &mut GradCtx, transform: &str) -> Grads {
    use crate::onnx::types::Dim;
    use crate::ops::nn::interpolation::linear_matrix;
    if ctx.attr_int("antialias", 0) != 0 || ctx.attr_ints("axes").is_some() {
        return Err(unsupported(
            ctx,
            "antialias and axes are not supported in linear mode".to_string(),
        ));
    }
    let g = ctx.g()?;
    let (x, y) = (ctx.i(0), ctx.o(0));
    let (Some(xs), Some(ys)) = (ctx.shape(x), ctx.shape(y)) else {
        return Err(unsupported(
            ctx,
            "the shapes of its input and output must be known".to_string(),
        ));
    };
    let scales: Option<Vec<f64>> = ctx
        .has_input(2)
        .then(|| ctx.shapes.floats.get(ctx.i(2)).cloned())
        .flatten()
        .filter(|s| !s.is_empty());
    let elem = ctx.elem(x);
    let rank = xs.len();
    let mut dx = g;
    for axis in 0..rank {
        let scale = scales.as_ref().and_then(|s| s.get(axis)).copied();
        if xs[axis] == ys[axis] && scale.is_none_or(|s| s == 1.0) {
            continue;
        }
        let (Dim::Fixed(len_in), Dim::Fixed(len_out)) = (&xs[axis], &ys[axis]) else {
            return Err(unsupported(
                ctx,
                format!("axis {axis} is resized but its lengths are not static ({xs:?} to {ys:?})"),
            ));
        };
        if axis + 2 < rank {
            return Err(unsupported(
                ctx,
                format!("axis {axis} is resized: linear mode is supported over the last two axes"),
            ));
        }
        let (len_in, len_out) = (*len_in, *len_out);
        let scale = scale.unwrap_or(len_out as f64 / len_in as f64);
        let matrix = linear_matrix(len_in, len_out, scale, transform).ok_or_else(|| {
            unsupported(
                ctx,
                format!(
                    "coordinate_transformation_mode '{transform}' is not supported in linear mode"
                ),
            )
        })?;
        dx = if axis == rank - 1 {
            // [..., out] @ A [out, in]
            let a = tensor_constant(ctx, "grad/resize_linear", elem, &[len_out, len_in], &matrix);
            ctx.op("MatMul", &[&dx, &a], vec![], None)
        } else {
            // A^T [in, out] @ [..., out, W]
            let (rows, cols) = (len_out as usize, len_in as usize);
            let transposed: Vec<f64> = (0..cols)
                .flat_map(|i| (0..rows).map(move |o| (o, i)))
                .map(|(o, i)| matrix[o * cols + i])
                .collect();
            let a_t = tensor_constant(
                ctx,
                "grad/resize_linear",
                elem,
                &[len_in, len_out],
                &transposed,
            );
            ctx.op("MatMul", &[&a_t, &dx], vec![], None)
        };
    }
    Ok(vec![Some(typed_like(ctx, dx, x)), None, None, None])
}
