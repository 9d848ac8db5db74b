//! Neural-network ops: convolution, pooling, normalisation, dropout.
//!
//! Convolution and average pooling are linear in their input, so their input
//! gradient is the transposed operation with the same window: for Conv with unit
//! strides a Conv with the flipped kernel, otherwise `ConvTranspose`; the window's
//! geometry is read once into a `Window`. Conv's weight gradient is a GEMM of the
//! output gradient with X unfolded (im2col) by one Gather whose indices the
//! `Window` computes. Max pooling scatters the gradient to the arg-max the forward
//! node reports. Training-mode BatchNormalization reaches this file already
//! rewritten into its inference form fed by explicit batch statistics
//! (`autodiff::batchnorm`); its rule recognises those statistics and emits the
//! closed-form training gradient, and otherwise applies the inference-form
//! calculus with gradients for the mean and variance too.

use super::batchnorm;
use super::window::Window;
use crate::error::{Error, Result};
use crate::onnx::builder::{attr_int, attr_ints, attr_string};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::types::Dim;
use crate::onnx::TensorProto;
use crate::ops::grad::{tensor_attr, GradCtx};

const DOUBLE: i32 = DataType::Double as i32;

type Grads = Result<Vec<Option<String>>>;

fn unsupported(ctx: &GradCtx, what: String) -> Error {
    Error::invalid(format!("{} gradient: {what}", ctx.node.op_type()))
}

// ---------------------------------------------------------------------------
// Window geometry shared by Conv, AveragePool and MaxPool.

/// The node's window over a static `input`, `auto_pad` resolved into explicit
/// pads (`pads` holds every begin, then every end, as ONNX writes them).
fn read_window(ctx: &GradCtx, kernel: Vec<i64>, input: &[i64]) -> Result<Window> {
    let window =
        Window::read(ctx.node, kernel.len(), Some(&kernel)).map_err(|e| unsupported(ctx, e))?;
    if input.len() != kernel.len() || input.iter().any(|&s| s < 1) {
        return Err(unsupported(
            ctx,
            format!(
                "the input's spatial size {input:?} does not suit kernel_shape {:?}",
                window.kernel
            ),
        ));
    }
    window.resolved(input).ok_or_else(|| {
        unsupported(
            ctx,
            format!(
                "auto_pad of kernel {:?} overflows over {input:?}",
                window.kernel
            ),
        )
    })
}

/// What the gradient rules compute from a resolved window (explicit pads).
impl Window {
    /// Span of the dilated kernel along `axis`, once `output_size_checked` has
    /// shown the geometry fits.
    fn span(&self, axis: usize) -> i64 {
        self.extent(axis) as i64
    }
    /// The output size over `input`, checked: an error where the arithmetic
    /// overflows or the window does not fit the padded input once. Every later
    /// computation with the geometry stays in range once this succeeds.
    fn output_size_checked(&self, ctx: &GradCtx, input: &[i64]) -> Result<Vec<i64>> {
        self.output_size(input).ok_or_else(|| {
            unsupported(
                ctx,
                format!(
                    "kernel_shape {:?}, strides {:?}, dilations {:?} and pads {:?} give no output \
                     for the spatial size {input:?}",
                    self.kernel, self.strides, self.dilations, self.pads
                ),
            )
        })
    }

    /// Refuses a geometry whose tables (the unfolding's kernel offsets x output
    /// positions, pooling's per-position counts) are too large to hold.
    fn check_table_len(&self, ctx: &GradCtx, input: &[i64], output: &[i64]) -> Result<()> {
        let len = self
            .kernel
            .iter()
            .chain(output)
            .try_fold(1i64, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= MAX_UNFOLD_INDICES);
        match len {
            Some(_) => Ok(()),
            None => Err(unsupported(
                ctx,
                format!(
                    "kernel_shape {:?}, strides {:?}, dilations {:?} and pads {:?} over the \
                     spatial size {input:?} give {output:?} output positions: tables of more \
                     than {MAX_UNFOLD_INDICES} entries",
                    self.kernel, self.strides, self.dilations, self.pads
                ),
            )),
        }
    }

    /// For every kernel offset k (row-major) and output position p (row-major),
    /// the flat index into the input's spatial positions that k meets from p:
    /// p s + k d - pad along each axis. Positions in the padding get the index
    /// one past the last position; the flag says whether any did.
    fn unfold_indices(&self, input: &[i64]) -> (Vec<i64>, bool) {
        let rank = self.rank();
        let output = self
            .output_size(input)
            .expect("callers checked the output size");
        let outside: i64 = input.iter().product();
        let offsets = grid(&self.kernel);
        let positions = grid(&output);
        let mut padded = false;
        let mut indices = Vec::with_capacity(offsets.len() * positions.len());
        for k in &offsets {
            for p in &positions {
                let mut flat = 0;
                for a in 0..rank {
                    let at = p[a] * self.strides[a] + k[a] * self.dilations[a] - self.pads[a];
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

    /// Whether no input element lies in two windows.
    fn windows_disjoint(&self) -> bool {
        (0..self.rank()).all(|a| self.strides[a] >= self.span(a))
    }

    /// Attributes of the `ConvTranspose` that maps an output-shaped gradient back
    /// onto exactly `input`: the transposed size is s (o - 1) + extent - pads, so
    /// the end pad absorbs any excess and `output_padding` supplies the rows the
    /// forward windows never reached (floor mode).
    fn transposed(
        &self,
        input: &[i64],
        output: &[i64],
        group: i64,
    ) -> Vec<crate::onnx::AttributeProto> {
        let rank = self.rank();
        let mut pads = self.pads[..rank].to_vec();
        let mut output_padding = Vec::with_capacity(rank);
        let mut end_pads = Vec::with_capacity(rank);
        for a in 0..rank {
            let excess = self.strides[a] * (output[a] - 1) + self.span(a) - self.pads[a] - input[a];
            end_pads.push(excess.max(0));
            output_padding.push((-excess).max(0));
        }
        pads.extend(end_pads);
        vec![
            attr_ints("kernel_shape", &self.kernel),
            attr_ints("strides", &self.strides),
            attr_ints("dilations", &self.dilations),
            attr_ints("pads", &pads),
            attr_ints("output_padding", &output_padding),
            attr_int("group", group),
        ]
    }
}

/// The most Gather indices a Conv weight gradient's unfolding may hold (the
/// product of the kernel and output sizes): 2^26 indices are 512 MiB of int64,
/// far above real networks (ResNet's 7x7 stem at 224x224: 614,656).
const MAX_UNFOLD_INDICES: i64 = 1 << 26;

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

/// The static spatial size (dims after N and C) of `name`.
fn spatial_size(ctx: &GradCtx, name: &str) -> Result<Vec<i64>> {
    let shape = ctx.shape(name).unwrap_or_default();
    let spatial: Option<Vec<i64>> = shape
        .iter()
        .skip(2)
        .map(|d| match d {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        })
        .collect();
    match spatial {
        Some(s) if shape.len() > 2 => Ok(s),
        _ => Err(unsupported(
            ctx,
            format!(
                "needs the static spatial shape of '{name}' (known: [{}])",
                shape
                    .iter()
                    .map(Dim::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The kernel's spatial size: the attribute, else the weight's static shape.
fn kernel_shape(ctx: &GradCtx, weight: Option<&str>) -> Result<Vec<i64>> {
    if let Some(k) = ctx.attr_ints("kernel_shape").filter(|k| !k.is_empty()) {
        return Ok(k);
    }
    match weight {
        Some(w) => spatial_size(ctx, w),
        None => Err(unsupported(ctx, "the node has no kernel_shape".to_string())),
    }
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

/// Records `value` as having `like`'s type (a gradient shaped like its input).
fn typed_like(ctx: &mut GradCtx, value: String, like: &str) -> String {
    if let Some(ty) = ctx.shapes.get(like).cloned() {
        ctx.shapes.insert(&value, ty);
    }
    value
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

// ---------------------------------------------------------------------------
// Convolution.

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
    let (indices, padded) = window.unfold_indices(input);
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

// ---------------------------------------------------------------------------
// Pooling.

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
pub fn average_pool(ctx: &mut GradCtx) -> Grads {
    if ctx.attr_int("ceil_mode", 0) != 0 {
        return Err(unsupported(ctx, "ceil_mode=1 is not supported".to_string()));
    }
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
    let output = window.output_size_checked(ctx, &input)?;
    window.check_table_len(ctx, &input, &output)?;
    let window_size: i64 = window.kernel.iter().product();
    if window.kernel == input && window.pads.iter().all(|&p| p == 0) {
        // One window covering X (ResNet's final 8x8 pool): g spreads evenly.
        return Ok(vec![Some(spread_evenly(ctx, &g, x, Some(window_size))?)]);
    }
    let elem = ctx.elem(x);
    let include_pad = ctx.attr_int("count_include_pad", 0) != 0;
    let inverse_divisor = if include_pad || window.pads.iter().all(|&p| p == 0) {
        ctx.constant(1.0 / window_size as f64, x)
    } else {
        let values = inverse_valid_counts(&window, &input, &output);
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

/// 1 / (elements of each window inside X), over the output grid, row-major:
/// the product of the per-axis counts.
fn inverse_valid_counts(window: &Window, input: &[i64], output: &[i64]) -> Vec<f64> {
    let per_axis: Vec<Vec<i64>> = (0..window.rank())
        .map(|a| {
            (0..output[a])
                .map(|o| {
                    let start = o * window.strides[a] - window.pads[a];
                    (0..window.kernel[a])
                        .filter(|t| (0..input[a]).contains(&(start + t)))
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

// ---------------------------------------------------------------------------
// Normalisation.

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

// ---------------------------------------------------------------------------
// Dropout.

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
