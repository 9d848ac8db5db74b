//! Convolution. Conv is linear in its input, so dX is the transposed operation
//! with the same window: for unit strides a Conv with the flipped kernel,
//! otherwise `ConvTranspose`. dW is a GEMM of the output gradient with X unfolded
//! (im2col) by one Gather whose indices this file computes from the `Window`.

use crate::error::Result;
use crate::onnx::builder::{attr_int, attr_ints};
use crate::onnx::types::Dim;
use crate::ops::grad::GradCtx;
use crate::ops::nn::gradient::common::{typed_like, unsupported, Grads};
use crate::ops::nn::gradient::geometry::{kernel_shape, read_window, spatial_size};
use crate::ops::nn::window::Window;

/// Y = X ⋆ W + B (cross-correlation, `group` independent channel groups).
/// dX is the transposed convolution of g with the same W; dW is a GEMM of g with
/// X unfolded; dB sums g over everything but the channel.
pub fn conv(ctx: &mut GradCtx) -> Grads {
    let g = ctx.g()?;
    let (x, w) = (ctx.i(0), ctx.i(1));
    let group = ctx.attr_int("group", 1);
    if group < 1 {
        return Err(unsupported(ctx, format!("group {group} must be >= 1")));
    }
    let kernel = kernel_shape(ctx, Some(w))?;
    let mut grads = vec![None; ctx.node.input.len()];
    if ctx.needs(0) || ctx.needs(1) {
        let input = spatial_size(ctx, x)?;
        let window = read_window(ctx, kernel.clone(), &input)?;
        let output = window.output_size_checked(ctx, &input)?;
        if let Ok((out_channels, _)) = weight_channels(ctx, w) {
            if out_channels % group != 0 {
                return Err(unsupported(
                    ctx,
                    format!("{out_channels} output channels do not split into {group} groups"),
                ));
            }
        }
        if ctx.needs(1) {
            window.check_table_len(ctx, &input, &output)?;
        }
        if ctx.needs(0) {
            grads[0] = Some(conv_input_grad(ctx, &g, &window, &input, &output, group)?);
        }
        if ctx.needs(1) {
            grads[1] = Some(conv_weight_grad(ctx, &g, &window, &input, group)?);
        }
    }
    if ctx.needs(2) {
        let axes: Vec<i64> = std::iter::once(0)
            .chain(2..2 + kernel.len() as i64)
            .collect();
        let db = ctx.reduce_sum(&g, &axes, false);
        grads[2] = Some(typed_like(ctx, db, ctx.i(2)));
    }
    Ok(grads)
}

/// dX[n, c, i] = Σ_{o, k} g[n, o, (i + pad - k d) / s] W[o, c, k] over the k where
/// the division is exact. With unit strides that is a plain convolution of g with
/// W's channels swapped within each group and its window flipped, padded by
/// extent - 1 - pad on each side; ONNX Runtime's CPU Conv runs it faster than the
/// equivalent ConvTranspose (its col2im pass is gone). Strided windows (and pads
/// wider than the kernel) use ConvTranspose, which skips the products with the
/// zeros a strided gradient would need between its rows.
fn conv_input_grad(
    ctx: &mut GradCtx,
    g: &str,
    window: &Window,
    input: &[i64],
    output: &[i64],
    group: i64,
) -> Result<String> {
    let (x, w) = (ctx.i(0), ctx.i(1));
    let rank = window.rank();
    let flipped_pads: Vec<i64> = (0..2 * rank)
        .map(|i| window.span(i % rank) - 1 - window.pads[i])
        .collect();
    if window.strides.iter().any(|&s| s != 1) || flipped_pads.iter().any(|&p| p < 0) {
        let attrs = window.transposed(input, output, group);
        return Ok(ctx.op("ConvTranspose", &[g, w], attrs, Some(x)));
    }
    let kernel = flipped_transposed_kernel(ctx, window, group)?;
    let attrs = vec![
        attr_ints("kernel_shape", &window.kernel),
        attr_ints("dilations", &window.dilations),
        attr_ints("pads", &flipped_pads),
        attr_int("group", group),
    ];
    Ok(ctx.op("Conv", &[g, &kernel], attrs, Some(x)))
}

/// W [C_out, C/G, k...] as the kernel of the input gradient's convolution:
/// [C, C_out/G, k...] (input and output channels swapped within each group) with
/// every spatial axis reversed. A few small ops on the weight, not on activations.
fn flipped_transposed_kernel(ctx: &mut GradCtx, window: &Window, group: i64) -> Result<String> {
    let w = ctx.i(1);
    let (out_channels, per_group) = weight_channels(ctx, w)?;
    let rank = window.rank() as i64;
    let spatial: Vec<i64> = (0..rank).map(|a| a + 2).collect();
    let swapped = if group == 1 {
        let perm: Vec<i64> = [1, 0].into_iter().chain(spatial.iter().copied()).collect();
        ctx.op("Transpose", &[w], vec![attr_ints("perm", &perm)], None)
    } else {
        let grouped: Vec<i64> = [group, out_channels / group, per_group]
            .into_iter()
            .chain(window.kernel.iter().copied())
            .collect();
        let grouped = reshape(ctx, w, &grouped);
        let perm: Vec<i64> = [0, 2, 1]
            .into_iter()
            .chain(spatial.iter().map(|a| a + 1))
            .collect();
        let swapped = ctx.op(
            "Transpose",
            &[&grouped],
            vec![attr_ints("perm", &perm)],
            None,
        );
        let shape: Vec<i64> = [group * per_group, out_channels / group]
            .into_iter()
            .chain(window.kernel.iter().copied())
            .collect();
        reshape(ctx, &swapped, &shape)
    };
    let starts = ctx.int_constant(&vec![-1; rank as usize]);
    let ends = ctx.int_constant(&vec![i64::MIN; rank as usize]);
    let axes = ctx.int_constant(&spatial);
    let steps = ctx.int_constant(&vec![-1; rank as usize]);
    Ok(ctx.op(
        "Slice",
        &[&swapped, &starts, &ends, &axes, &steps],
        vec![],
        None,
    ))
}

/// dW[o, c, k] = Σ_{n, p} g[n, o, p] X[n, c + group(o)·C/G, p s + k d - pad], a
/// GEMM over the samples n and output positions p, as frameworks compute it. (The
/// same sum written as a Conv takes g as an OH x OW kernel, for which ONNX
/// Runtime's CPU Conv is very slow.) X unfolded (im2col) by one Gather gives
/// U [G, C/G·K, P·N], g gives [G, C_out/G, P·N], and one batched MatMul
/// U g^T [G, C/G·K, C_out/G] is dW once transposed and reshaped.
///
/// U is the left operand and g^T a Transpose, which ONNX Runtime folds into the
/// MatMul (FusedMatMul, transB): on ResNet-32's shapes that runs about 2x faster
/// than Gemm(g, U, transB=1), and left unfused the Transpose would copy only g,
/// K times smaller than U. The price is memory: U holds K copies of X.
fn conv_weight_grad(
    ctx: &mut GradCtx,
    g: &str,
    window: &Window,
    input: &[i64],
    group: i64,
) -> Result<String> {
    let w = ctx.i(1);
    let (out_channels, per_group) = weight_channels(ctx, w)?;
    let offsets: i64 = window.kernel.iter().product();
    let unfolded = unfold(ctx, window, input);
    let u = reshape(ctx, &unfolded, &[group, per_group * offsets, -1]);
    let g_rows = gradient_rows(ctx, g, group, out_channels / group);
    let swap_last = || vec![attr_ints("perm", &[0, 2, 1])];
    let g_t = ctx.op("Transpose", &[&g_rows], swap_last(), None);
    let product = ctx.op("MatMul", &[&u, &g_t], vec![], None);
    // [G, C/G·K, C_out/G] -> [G, C_out/G, C/G·K] -> [C_out, C/G, k...]
    let product = ctx.op("Transpose", &[&product], swap_last(), None);
    let weight_shape: Vec<i64> = [out_channels, per_group]
        .into_iter()
        .chain(window.kernel.iter().copied())
        .collect();
    let weight_shape = ctx.int_constant(&weight_shape);
    Ok(ctx.op("Reshape", &[&product, &weight_shape], vec![], Some(w)))
}

/// The static [C_out, C_in/G] of the weight, which the GEMM reshapes need.
fn weight_channels(ctx: &GradCtx, w: &str) -> Result<(i64, i64)> {
    match ctx.shape(w).as_deref() {
        Some([Dim::Fixed(out), Dim::Fixed(per_group), ..]) => Ok((*out, *per_group)),
        _ => Err(unsupported(
            ctx,
            format!("the weight gradient needs the static channel dims of '{w}'"),
        )),
    }
}

fn reshape(ctx: &mut GradCtx, x: &str, shape: &[i64]) -> String {
    let shape = ctx.int_constant(shape);
    ctx.op("Reshape", &[x, &shape], vec![], None)
}

/// Input 0 of the Conv unfolded as [C, K, P, N]: for channel c, kernel offset k
/// (row-major, as W stores them) and output position p, the column of the N
/// samples' X values that offset meets (zero in the padding). Samples go last so
/// that the Gather copies whole columns and the contracted axes (p, n) are
/// adjacent; the channel, group-major, stays first so groups split off by a
/// reshape. Every reshape copies or infers N, which may be symbolic.
fn unfold(ctx: &mut GradCtx, window: &Window, input: &[i64]) -> String {
    let x = ctx.i(0);
    let columns = sample_last(ctx, x);
    let (indices, padded) = unfold_indices(window, input);
    let positions: i64 = input.iter().product();
    let identity = indices.len() as i64 == positions
        && indices.iter().enumerate().all(|(i, &v)| v == i as i64);
    if identity {
        // A 1x1 kernel, stride 1, no padding: X is its own unfolding.
        return columns;
    }
    let source = if padded {
        // One zero column at index `positions` stands for every padded position.
        let pads = ctx.int_constant(&[0, 0, 0, 0, 1, 0]);
        ctx.op("Pad", &[&columns, &pads], vec![], None)
    } else {
        columns
    };
    let offsets: i64 = window.kernel.iter().product();
    let table = unfold_table(ctx, &[offsets, indices.len() as i64 / offsets], &indices);
    ctx.op(
        "Gather",
        &[&source, &table],
        vec![attr_int("axis", 1)],
        None,
    )
}

/// For every kernel offset k (row-major) and output position p (row-major),
/// the flat index into the input's spatial positions that k meets from p:
/// p s + k d - pad along each axis. Positions in the padding get the index
/// one past the last position; the flag says whether any did.
fn unfold_indices(window: &Window, input: &[i64]) -> (Vec<i64>, bool) {
    let rank = window.rank();
    let output = window
        .output_size(input)
        .expect("callers checked the output size");
    let outside: i64 = input.iter().product();
    let offsets = grid(&window.kernel);
    let positions = grid(&output);
    let mut padded = false;
    let mut indices = Vec::with_capacity(offsets.len() * positions.len());
    for k in &offsets {
        for p in &positions {
            let mut flat = 0;
            for a in 0..rank {
                let at = p[a] * window.strides[a] + k[a] * window.dilations[a] - window.pads[a];
                if !(0..input[a]).contains(&at) {
                    flat = outside;
                    break;
                }
                flat = flat * input[a] + at;
            }
            padded |= flat == outside;
            indices.push(flat);
        }
    }
    (indices, padded)
}
/// Every index of an array of the given size, row-major (the last axis fastest).
fn grid(size: &[i64]) -> Vec<Vec<i64>> {
    size.iter().fold(vec![vec![]], |prefixes, &n| {
        prefixes
            .iter()
            .flat_map(|prefix| {
                (0..n).map(move |i| {
                    let mut index = prefix.clone();
                    index.push(i);
                    index
                })
            })
            .collect()
    })
}

/// [N, C, spatial...] -> [C, positions, N].
fn sample_last(ctx: &mut GradCtx, x: &str) -> String {
    let flat = reshape(ctx, x, &[0, 0, -1]);
    ctx.op(
        "Transpose",
        &[&flat],
        vec![attr_ints("perm", &[1, 2, 0])],
        None,
    )
}

const UNFOLD_TABLE: &str = "grad/conv_unfold_indices";

/// The Gather indices of an unfolding, shared by every Conv of the same geometry
/// (most Convs of a network share a few): an earlier identical table is reused.
fn unfold_table(ctx: &mut GradCtx, dims: &[i64], indices: &[i64]) -> String {
    let table = crate::onnx::tensor::i64_tensor("", dims, indices);
    let earlier = ctx.b.initializers.iter().find(|t| {
        t.name().contains(UNFOLD_TABLE) && t.dims == table.dims && t.raw_data == table.raw_data
    });
    match earlier {
        Some(t) => t.name().to_string(),
        None => ctx.b.constant(UNFOLD_TABLE, table),
    }
}

/// g [N, C_out, out...] as rows over (p, n), like U's: [C_out, P, N], then
/// [G, C_out/G, P·N].
fn gradient_rows(ctx: &mut GradCtx, g: &str, group: i64, out_per_group: i64) -> String {
    let rows = sample_last(ctx, g);
    reshape(ctx, &rows, &[group, out_per_group, -1])
}
