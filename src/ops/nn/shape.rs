//! Shape and type inference of convolution, pooling, normalisation and dropout, and the integer contents
//! (shape arithmetic) they fold; the engine is [`crate::ops::shapes`].

#![allow(unused_imports)]
use crate::ops::shapes::prelude::*;

/// The output and its mask.
pub(crate) fn dropout(n: &Ctx) -> Vec<Option<TensorType>> {
    vec![n.like(0, n.elem(0)), n.like(0, BOOL)]
}

/// Kernel window attributes shared by Conv, ConvTranspose and the pools.
pub(crate) struct Window {
    pub(crate) kernel: Option<Vec<i64>>,
    pub(crate) strides: Vec<i64>,
    pub(crate) dilations: Vec<i64>,
    /// `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`.
    pub(crate) pads: Vec<i64>,
    pub(crate) auto_pad: String,
}

impl Window {
    pub(crate) fn read(n: &Ctx, spatial: usize, weight_kernel: Option<Vec<i64>>) -> Window {
        let or_fill = |name: &str, fill: i64, len: usize| {
            n.ints_attr(name)
                .map(<[i64]>::to_vec)
                .unwrap_or_else(|| vec![fill; len])
        };
        Window {
            kernel: n
                .ints_attr("kernel_shape")
                .map(<[i64]>::to_vec)
                .or(weight_kernel),
            strides: or_fill("strides", 1, spatial),
            dilations: or_fill("dilations", 1, spatial),
            pads: or_fill("pads", 0, 2 * spatial),
            auto_pad: n.string("auto_pad", "NOTSET").to_string(),
        }
    }
    pub(crate) fn at(&self, i: usize, spatial: usize) -> Option<WindowAxis> {
        let at =
            |v: &[i64], i: usize, default: i64| i128::from(v.get(i).copied().unwrap_or(default));
        Some(WindowAxis {
            kernel: i128::from(*self.kernel.as_ref()?.get(i)?),
            stride: at(&self.strides, i, 1),
            dilation: at(&self.dilations, i, 1),
            pad_begin: at(&self.pads, i, 0),
            pad_end: at(&self.pads, i + spatial, 0),
        })
        .filter(|w| w.stride > 0 && w.dilation > 0 && w.kernel > 0)
    }
}

/// One spatial axis of a window, widened so that the size formulas cannot overflow
/// whatever the attributes say.
#[derive(Clone, Copy)]
pub(crate) struct WindowAxis {
    pub(crate) kernel: i128,
    pub(crate) stride: i128,
    pub(crate) dilation: i128,
    pub(crate) pad_begin: i128,
    pub(crate) pad_end: i128,
}

impl WindowAxis {
    pub(crate) fn extent(&self) -> i128 {
        (self.kernel - 1) * self.dilation + 1
    }
}

pub(crate) fn conv(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let Some(x) = n.shape(0).filter(|x| x.len() >= 2) else {
        return typed(elem, None);
    };
    let spatial = x.len() - 2;
    let weight = n.shape(1);
    let weight_kernel = weight.and_then(|w| static_ints(w.get(2..)?));
    let window = Window::read(n, spatial, weight_kernel);
    let out_channels = weight
        .and_then(|w| w.first())
        .cloned()
        .unwrap_or(Dim::Unknown);
    let mut out = vec![x[0].clone(), out_channels];
    for i in 0..spatial {
        let dim = match (&x[i + 2], window.at(i, spatial)) {
            (Dim::Fixed(size), Some(w)) => conv_out_size(*size, &w, &window.auto_pad),
            _ => None,
        };
        out.push(dim.map_or(Dim::Unknown, Dim::Fixed));
    }
    typed(elem, Some(out))
}

/// Conv output length: `floor((in + pads - extent) / stride) + 1`; SAME keeps
/// `ceil(in / stride)`; VALID pads nothing.
pub(crate) fn conv_out_size(size: i64, w: &WindowAxis, auto_pad: &str) -> Option<i64> {
    let size = i128::from(size);
    let numerator = match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => return narrow(ceil_div(size, w.stride)),
        "VALID" => size - w.extent(),
        _ => size + w.pad_begin + w.pad_end - w.extent(),
    };
    (numerator >= 0)
        .then(|| narrow(numerator / w.stride + 1))
        .flatten()
}

pub(crate) fn conv_transpose(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let Some(x) = n.shape(0).filter(|x| x.len() >= 2) else {
        return typed(elem, None);
    };
    let spatial = x.len() - 2;
    let weight = n.shape(1);
    let weight_kernel = weight.and_then(|w| static_ints(w.get(2..)?));
    let window = Window::read(n, spatial, weight_kernel);
    // Weight is [C_in, C_out / group, k...].
    let out_channels = match weight.and_then(|w| w.get(1)) {
        Some(Dim::Fixed(c)) => c
            .checked_mul(n.int("group", 1))
            .map_or(Dim::Unknown, Dim::Fixed),
        _ => Dim::Unknown,
    };
    let output_padding = n.ints_attr("output_padding").unwrap_or(&[]);
    // output_shape names the spatial sizes (some exporters include N and C too).
    let output_shape = n.ints_attr("output_shape").map(|s| match s.len() {
        l if l == x.len() => &s[2..],
        _ => s,
    });
    let mut out = vec![x[0].clone(), out_channels];
    for i in 0..spatial {
        let size = match (output_shape, &x[i + 2], window.at(i, spatial)) {
            (Some(explicit), _, _) => explicit.get(i).copied(),
            (None, Dim::Fixed(size), Some(w)) => {
                let extra = output_padding.get(i).copied().unwrap_or(0);
                conv_transpose_size(*size, &w, extra, &window.auto_pad)
            }
            _ => None,
        };
        out.push(size.map_or(Dim::Unknown, Dim::Fixed));
    }
    typed(elem, Some(out))
}

/// `stride * (in - 1) + output_padding + extent - pads`; SAME gives `in * stride`.
pub(crate) fn conv_transpose_size(
    size: i64,
    w: &WindowAxis,
    output_padding: i64,
    auto_pad: &str,
) -> Option<i64> {
    let size = i128::from(size);
    let pads = match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => return narrow(size * w.stride),
        "VALID" => 0,
        _ => w.pad_begin + w.pad_end,
    };
    narrow(w.stride * (size - 1) + i128::from(output_padding) + w.extent() - pads)
}

/// MaxPool (with its int64 `Indices`), AveragePool, LpPool.
pub(crate) fn pool(n: &Ctx) -> Vec<Option<TensorType>> {
    let elem = n.elem(0);
    let Some(x) = n.shape(0).filter(|x| x.len() >= 2) else {
        return vec![typed(elem, None), typed(INT64, None)];
    };
    let spatial = x.len() - 2;
    let window = Window::read(n, spatial, None);
    let ceil_mode = n.int("ceil_mode", 0) != 0;
    let mut out = x[..2].to_vec();
    for i in 0..spatial {
        let dim = match (&x[i + 2], window.at(i, spatial)) {
            (Dim::Fixed(size), Some(w)) => pool_out_size(*size, &w, &window.auto_pad, ceil_mode),
            _ => None,
        };
        out.push(dim.map_or(Dim::Unknown, Dim::Fixed));
    }
    vec![typed(elem, Some(out.clone())), typed(INT64, Some(out))]
}

/// Pool output length as ONNX Runtime computes it: SAME pads are derived from the
/// legacy target `ceil(in / stride)`, and in ceil mode a last window that would
/// start in the end padding is dropped (onnx/onnx#5741).
pub(crate) fn pool_out_size(
    size: i64,
    w: &WindowAxis,
    auto_pad: &str,
    ceil_mode: bool,
) -> Option<i64> {
    let size = i128::from(size);
    let (begin, end) = match auto_pad {
        "VALID" => (0, 0),
        "SAME_UPPER" | "SAME_LOWER" => {
            let needed = (ceil_div(size, w.stride) - 1) * w.stride + w.kernel - size;
            let begin = if auto_pad == "SAME_LOWER" {
                (needed + 1) / 2
            } else {
                needed / 2
            };
            (begin, needed - begin)
        }
        _ => (w.pad_begin, w.pad_end),
    };
    let numerator = size + begin + end - w.extent();
    if numerator < 0 {
        return None;
    }
    if !ceil_mode {
        return narrow(numerator / w.stride + 1);
    }
    let out = ceil_div(numerator, w.stride) + 1;
    narrow(if (out - 1) * w.stride >= size + begin {
        out - 1
    } else {
        out
    })
}

pub(crate) fn global_pool(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).filter(|x| x.len() >= 2).map(|x| {
        let mut out = x[..2].to_vec();
        out.resize(x.len(), Dim::Fixed(1));
        out
    });
    typed(n.elem(0), shape)
}

/// Output 0 is X; the statistics outputs (running mean/var in opset 14+, also the
/// saved mean/var before) are per channel, like the `mean` input.
pub(crate) fn batch_norm(n: &Ctx) -> Vec<Option<TensorType>> {
    let channel = n
        .shape(0)
        .and_then(|x| x.get(1))
        .cloned()
        .unwrap_or(Dim::Unknown);
    let stat = |i: usize| {
        n.ty(i)
            .cloned()
            .or_else(|| typed(n.elem(0), Some(vec![channel.clone()])))
    };
    vec![n.like(0, n.elem(0)), stat(3), stat(4), stat(3), stat(4)]
}

/// Output 0 is X; Mean and InvStdDev keep the leading axes and are 1 from `axis`
/// on, in the `stash_type` precision.
pub(crate) fn layer_norm(n: &Ctx) -> Vec<Option<TensorType>> {
    let stash = n.int("stash_type", i64::from(FLOAT)) as i32;
    let stats = n.shape(0).and_then(|x| {
        let axis = norm_axis(n.int("axis", -1), x.len())?;
        let mut dims = x[..axis].to_vec();
        dims.resize(x.len(), Dim::Fixed(1));
        Some(dims)
    });
    vec![
        n.like(0, n.elem(0)),
        typed(stash, stats.clone()),
        typed(stash, stats),
    ]
}
