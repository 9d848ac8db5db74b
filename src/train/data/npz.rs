//! NPZ datasets: arrays `x` (N, ...) and `y` (N,) (or Keras' `x_train`/`y_train`
//! and `x_test`/`y_test`) read through the one NPZ reader, [`Npz`].

use crate::error::{Error, Result};
use crate::npz::{npy_integers, Npz};
use crate::train::data::dataset::{Dataset, Pixels, Split};
use std::path::Path;

pub(super) fn read_npz(path: &Path, split: Split) -> Result<Dataset> {
    let bad = |what: String| Error::config(format!("{}: {what}", path.display()));
    let mut npz = Npz::open(path)?;
    let split_suffix = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    let (x_key, y_key) = if npz.contains("x") || npz.contains("y") {
        ("x".to_string(), "y".to_string())
    } else {
        (format!("x_{split_suffix}"), format!("y_{split_suffix}"))
    };
    // Both arrays are looked up before either is read, so a missing one is
    // reported before a damaged one.
    for key in [&x_key, &y_key] {
        if !npz.contains(key) {
            return Err(npz.missing(
                key,
                "; an NPZ dataset needs 'x' (N, ...) uint8 or float32 and 'y' (N,) integer",
            ));
        }
    }
    let (x_header, x_bytes) = npz.read(&x_key)?;
    let (y_header, y_bytes) = npz.read(&y_key)?;

    let n = *x_header.shape.first().unwrap_or(&0);
    if x_header.shape.len() < 2 {
        return Err(bad(format!(
            "array '{x_key}' has shape {:?}; expected (N, ...) with one row per example",
            x_header.shape
        )));
    }
    let y_is_column =
        y_header.shape.len() == 1 || (y_header.shape.len() == 2 && y_header.shape[1] == 1);
    if !y_is_column || y_header.shape[0] != n {
        return Err(bad(format!(
            "array '{y_key}' has shape {:?}, but '{x_key}' holds {n} examples; expected ({n},)",
            y_header.shape
        )));
    }
    if x_header.fortran_order && x_header.shape.len() > 1 {
        return Err(bad(format!(
            "array '{x_key}' is stored in Fortran order; save np.ascontiguousarray(x)"
        )));
    }
    let labels =
        npy_integers(&y_header, &y_bytes).map_err(|why| bad(format!("array '{y_key}': {why}")))?;
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l < 0) {
        return Err(bad(format!(
            "array '{y_key}': label {l} of example {i} is negative"
        )));
    }
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);

    let (shape, nhwc) = npz_example_shape(&x_header.shape[1..]);
    let images = match (x_header.descr.kind, x_header.descr.size) {
        (b'u', 1) => Pixels::U8(x_bytes),
        (b'f', 4) => Pixels::F32(
            x_bytes
                .chunks_exact(4)
                .map(|b| {
                    let b = [b[0], b[1], b[2], b[3]];
                    if x_header.descr.big_endian {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    }
                })
                .collect(),
        ),
        // Token ids (a text classifier's int64 input): kept as exact floats,
        // fed to the model in the element type its input declares.
        (b'i', _) | (b'u', 2..) => Pixels::F32(
            token_ids(&x_header, &x_bytes).map_err(|why| bad(format!("array '{x_key}': {why}")))?,
        ),
        _ => {
            return Err(bad(format!(
                "array '{x_key}' has dtype '{}'; expected uint8 or float32 \
                 (x.astype(np.float32)), or integer token ids",
                x_header.descr.text
            )))
        }
    };
    let images = if nhwc {
        hwc_to_chw(images, &shape)
    } else {
        images
    };
    let layout = if nhwc {
        ", height-width-channels transposed"
    } else {
        ""
    };
    Dataset::new(
        images,
        shape,
        labels,
        classes,
        format!("NPZ {} ({x_key}, {y_key}{layout})", path.display()),
    )
}

/// Largest integer every value up to which float32 holds exactly.
const EXACT_IN_F32: i64 = 1 << 24;

/// Integer inputs (token ids) as float32, which holds every integer up to 2^24
/// exactly; larger values are refused rather than rounded.
fn token_ids(
    header: &crate::npz::NpyHeader,
    bytes: &[u8],
) -> std::result::Result<Vec<f32>, String> {
    let values = npy_integers(header, bytes)?;
    match values.iter().position(|v| v.abs() > EXACT_IN_F32) {
        Some(i) => Err(format!(
            "value {} at {i} is beyond 2^24, which this reader keeps exact (token ids are)",
            values[i]
        )),
        None => Ok(values.into_iter().map(|v| v as f32).collect()),
    }
}

/// Channels-first shape of one example from an NPZ's per-example dimensions, and
/// whether the data are height-width-channels (Keras' CIFAR layout) and need
/// transposing: (H, W) is grey; (C, H, W) when the first dimension looks like a
/// channel count (1, 3 or 4); else (H, W, C) when the last one does.
fn npz_example_shape(dims: &[usize]) -> (Vec<usize>, bool) {
    let is_channels = |d: usize| matches!(d, 1 | 3 | 4);
    match *dims {
        [h, w] => (vec![1, h, w], false),
        [c, _, _] if is_channels(c) => (dims.to_vec(), false),
        [h, w, c] if is_channels(c) => (vec![c, h, w], true),
        _ => (dims.to_vec(), false),
    }
}

fn hwc_to_chw(images: Pixels, chw: &[usize]) -> Pixels {
    let (c, h, w) = (chw[0], chw[1], chw[2]);
    fn transpose<T: Copy + Default>(values: &[T], c: usize, h: usize, w: usize) -> Vec<T> {
        let mut out = vec![T::default(); values.len()];
        let n = c * h * w;
        for (src, dst) in values.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        dst[(ch * h + y) * w + x] = src[(y * w + x) * c + ch];
                    }
                }
            }
        }
        out
    }
    match images {
        Pixels::U8(v) => Pixels::U8(transpose(&v, c, h, w)),
        Pixels::F32(v) => Pixels::F32(transpose(&v, c, h, w)),
        files @ Pixels::Files(_) => files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npz_shapes_become_channels_first() {
        assert_eq!(npz_example_shape(&[28, 28]), (vec![1, 28, 28], false));
        assert_eq!(npz_example_shape(&[3, 32, 32]), (vec![3, 32, 32], false));
        assert_eq!(npz_example_shape(&[32, 32, 3]), (vec![3, 32, 32], true));
        assert_eq!(npz_example_shape(&[64]), (vec![64], false));
    }

    #[test]
    fn hwc_transpose_moves_each_channel_to_its_plane() {
        // One 1x2 image with 3 channels: pixel 0 = (1, 2, 3), pixel 1 = (4, 5, 6).
        let out = hwc_to_chw(Pixels::U8(vec![1, 2, 3, 4, 5, 6]), &[3, 1, 2]);
        assert_eq!(out, Pixels::U8(vec![1, 4, 2, 5, 3, 6]));
    }
}
