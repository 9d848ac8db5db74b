//! The window geometry that Conv, AveragePool and MaxPool's gradient rules share:
//! the node's window resolved over a static input, its checked output size, and
//! the `ConvTranspose` that maps an output-shaped gradient back onto the input.

use crate::error::Result;
use crate::onnx::builder::{attr_int, attr_ints};
use crate::onnx::types::Dim;
use crate::ops::grad::GradCtx;
use crate::ops::nn::gradient::common::unsupported;
use crate::ops::nn::window::Window;

/// The node's window over a static `input`, `auto_pad` resolved into explicit
/// pads (`pads` holds every begin, then every end, as ONNX writes them).
pub(super) fn read_window(ctx: &GradCtx, kernel: Vec<i64>, input: &[i64]) -> Result<Window> {
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
    pub(super) fn span(&self, axis: usize) -> i64 {
        self.extent(axis) as i64
    }
    /// The output size over `input`, checked: an error where the arithmetic
    /// overflows or the window does not fit the padded input once. Every later
    /// computation with the geometry stays in range once this succeeds.
    pub(super) fn output_size_checked(&self, ctx: &GradCtx, input: &[i64]) -> Result<Vec<i64>> {
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
    pub(super) fn check_table_len(
        &self,
        ctx: &GradCtx,
        input: &[i64],
        output: &[i64],
    ) -> Result<()> {
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

    /// Whether no input element lies in two windows.
    pub(super) fn windows_disjoint(&self) -> bool {
        (0..self.rank()).all(|a| self.strides[a] >= self.span(a))
    }

    /// Attributes of the `ConvTranspose` that maps an output-shaped gradient back
    /// onto exactly `input`: the transposed size is s (o - 1) + extent - pads, so
    /// the end pad absorbs any excess and `output_padding` supplies the rows the
    /// forward windows never reached (floor mode).
    pub(super) fn transposed(
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

/// The static spatial size (dims after N and C) of `name`.
pub(super) fn spatial_size(ctx: &GradCtx, name: &str) -> Result<Vec<i64>> {
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
pub(super) fn kernel_shape(ctx: &GradCtx, weight: Option<&str>) -> Result<Vec<i64>> {
    if let Some(k) = ctx.attr_ints("kernel_shape").filter(|k| !k.is_empty()) {
        return Ok(k);
    }
    match weight {
        Some(w) => spatial_size(ctx, w),
        None => Err(unsupported(ctx, "the node has no kernel_shape".to_string())),
    }
}
