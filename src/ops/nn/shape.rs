//! Shape and type inference of convolution, pooling, normalisation and dropout, and the integer contents
//! (shape arithmetic) they fold, for the inference engine (`ValueShapes::infer`).

#![allow(unused_imports)]
use super::window::Window;
use crate::ops::shapes::prelude::*;

/// The output and its mask.
pub(crate) fn dropout(n: &Ctx) -> Vec<Option<TensorType>> {
    vec![n.like(0, n.elem(0)), n.like(0, BOOL)]
}

/// A convolution's input dims (rank >= 2), its weight's dims, and its window
/// (the weight's kernel when `kernel_shape` is absent; `None` when invalid).
fn convolution<'a>(n: &Ctx<'a>) -> Option<(&'a [Dim], Option<&'a [Dim]>, Option<Window>)> {
    let x = n.shape(0).filter(|x| x.len() >= 2)?;
    let weight = n.shape(1);
    let weight_kernel = weight.and_then(|w| static_ints(w.get(2..)?));
    let window = Window::read(n.node, x.len() - 2, weight_kernel.as_deref()).ok();
    Some((x, weight, window))
}

pub(crate) fn conv(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let Some((x, weight, window)) = convolution(n) else {
        return typed(elem, None);
    };
    let spatial = x.len() - 2;
    let out_channels = weight
        .and_then(|w| w.first())
        .cloned()
        .unwrap_or(Dim::Unknown);
    let mut out = vec![x[0].clone(), out_channels];
    for i in 0..spatial {
        let dim = match (&x[i + 2], &window) {
            (Dim::Fixed(size), Some(w)) => w.output_len(i, *size, false),
            _ => None,
        };
        out.push(dim.map_or(Dim::Unknown, Dim::Fixed));
    }
    typed(elem, Some(out))
}

pub(crate) fn conv_transpose(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let Some((x, weight, window)) = convolution(n) else {
        return typed(elem, None);
    };
    let spatial = x.len() - 2;
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
        let size = match (output_shape, &x[i + 2], &window) {
            (Some(explicit), _, _) => explicit.get(i).copied(),
            (None, Dim::Fixed(size), Some(w)) => {
                let extra = output_padding.get(i).copied().unwrap_or(0);
                w.transposed_len(i, *size, extra)
            }
            _ => None,
        };
        out.push(size.map_or(Dim::Unknown, Dim::Fixed));
    }
    typed(elem, Some(out))
}

/// MaxPool (with its int64 `Indices`), AveragePool, LpPool.
pub(crate) fn pool(n: &Ctx) -> Vec<Option<TensorType>> {
    let elem = n.elem(0);
    let Some(x) = n.shape(0).filter(|x| x.len() >= 2) else {
        return vec![typed(elem, None), typed(INT64, None)];
    };
    let spatial = x.len() - 2;
    let window = Window::read(n.node, spatial, None).ok();
    let ceil_mode = n.int("ceil_mode", 0) != 0;
    let mut out = x[..2].to_vec();
    for i in 0..spatial {
        let dim = match (&x[i + 2], &window) {
            (Dim::Fixed(size), Some(w)) => w.output_len(i, *size, ceil_mode),
            _ => None,
        };
        out.push(dim.map_or(Dim::Unknown, Dim::Fixed));
    }
    vec![typed(elem, Some(out.clone())), typed(INT64, Some(out))]
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

/// Resize (opset 11 on: X, roi, scales, sizes): `sizes` when given, else
/// `floor(dim * scale)` per axis, as ONNX defines it.
pub(crate) fn resize(n: &Ctx) -> Option<TensorType> {
    let x = n.shape(0);
    let shape = if let Some(sizes) = n.ints(3).filter(|s| !s.is_empty()) {
        Some(sizes.iter().map(|&v| Dim::Fixed(v)).collect())
    } else {
        let (x, scales) = (x?, n.floats(2)?);
        (scales.len() == x.len()).then(|| {
            x.iter()
                .zip(scales)
                .map(|(d, &s)| match d {
                    Dim::Fixed(v) => Dim::Fixed((*v as f64 * s).floor() as i64),
                    other if s == 1.0 => other.clone(),
                    _ => Dim::Unknown,
                })
                .collect()
        })
    };
    typed(n.elem(0), shape)
}
