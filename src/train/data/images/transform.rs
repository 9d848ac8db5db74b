//! The geometry of torchvision's image transforms on planar f32 images:
//! `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`, `Resize(s)` of
//! the shorter side followed by `CenterCrop(size)`, and the resampling they share,
//! PIL's bilinear filter (a triangle kernel widened by the scale factor when
//! shrinking, so downscaling averages rather than aliases).

use rand::RngExt;

/// A crop box in source pixels: `(top, left, height, width)`.
pub type CropBox = (usize, usize, usize, usize);

/// `RandomResizedCrop`'s scale range (fraction of the image area).
pub const CROP_SCALE: (f64, f64) = (0.08, 1.0);
/// `RandomResizedCrop`'s aspect-ratio range (width / height).
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a box of random
/// area and aspect ratio that fits, else the centre crop of the whole image
/// clamped to the ratio range.
pub fn random_resized_crop_box(height: usize, width: usize, rng: &mut impl RngExt) -> CropBox {
    let area = (height * width) as f64;
    let (log_lo, log_hi) = (CROP_RATIO.0.ln(), CROP_RATIO.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.random_range(CROP_SCALE.0..CROP_SCALE.1);
        let aspect = rng.random_range(log_lo..log_hi).exp();
        let w = (target_area * aspect).sqrt().round() as usize;
        let h = (target_area / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < CROP_RATIO.0 {
        (
            ((width as f64 / CROP_RATIO.0).round() as usize).min(height),
            width,
        )
    } else if in_ratio > CROP_RATIO.1 {
        (
            height,
            ((height as f64 * CROP_RATIO.1).round() as usize).min(width),
        )
    } else {
        (height, width)
    };
    ((height - h) / 2, (width - w) / 2, h.max(1), w.max(1))
}

/// The shorter side `Resize` scales to before `CenterCrop(size)`: `size * 256 /
/// 224`, rounded (256 for 224, as the ImageNet recipe).
pub fn eval_resize_side(size: usize) -> usize {
    (size * 256 + 112) / 224
}

/// Evaluation geometry for an image of `height x width` and an output of
/// `out_h x out_w`: `None` when the sizes are equal (no resampling at all),
/// else the size the image is resized to (shorter side to
/// [`eval_resize_side`], the longer one in proportion, truncated as
/// torchvision does) and the centre crop's offset in it.
pub fn eval_geometry(
    height: usize,
    width: usize,
    out_h: usize,
    out_w: usize,
) -> Option<((usize, usize), (usize, usize))> {
    if (height, width) == (out_h, out_w) {
        return None;
    }
    let side = eval_resize_side(out_h.min(out_w)).max(out_h).max(out_w);
    let (new_h, new_w) = if height <= width {
        (side, (side * width / height.max(1)).max(out_w))
    } else {
        ((side * height / width.max(1)).max(out_h), side)
    };
    let top = ((new_h - out_h) as f64 / 2.0).round() as usize;
    let left = ((new_w - out_w) as f64 / 2.0).round() as usize;
    Some(((new_h, new_w), (top, left)))
}

/// Weights of one output axis: for each output index, the first input index
/// and the normalised weights of the inputs from there on (PIL's
/// `precompute_coeffs` with the bilinear filter).
struct AxisWeights {
    first: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

/// Output positions `out_range` of an axis that maps source span `[in0, in1)`
/// of an `in_size` axis onto `out_size` pixels.
fn axis_weights(
    in_size: usize,
    in0: f64,
    in1: f64,
    out_size: usize,
    out_range: std::ops::Range<usize>,
) -> AxisWeights {
    let scale = (in1 - in0) / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    let mut first = Vec::with_capacity(out_range.len());
    let mut weights = Vec::with_capacity(out_range.len());
    for out in out_range {
        let center = in0 + (out as f64 + 0.5) * scale;
        let lo = ((center - support + 0.5).floor().max(0.0) as usize).min(in_size - 1);
        let hi = ((center + support + 0.5).floor() as usize).clamp(lo + 1, in_size);
        let mut w: Vec<f64> = (lo..hi)
            .map(|x| {
                let t = ((x as f64 - center + 0.5) / filter_scale).abs();
                (1.0 - t).max(0.0)
            })
            .collect();
        let total: f64 = w.iter().sum();
        if total > 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        } else {
            // A span thinner than a pixel between two centres: nearest pixel.
            w.iter_mut().for_each(|v| *v = 0.0);
            w[0] = 1.0;
        }
        first.push(lo);
        weights.push(w.into_iter().map(|v| v as f32).collect());
    }
    AxisWeights { first, weights }
}

/// Resamples the `crop` of a planar `channels x height x width` image to an
/// `out_h x out_w` grid, of which the window at `offset` (of the output's own
/// `out.len() / channels` pixels) is written into `out`. `grid` is the full
/// output size the crop maps onto; the window is `win_h x win_w`.
#[allow(clippy::too_many_arguments)]
pub fn resample(
    image: &[f32],
    [channels, height, width]: [usize; 3],
    crop: CropBox,
    grid: (usize, usize),
    offset: (usize, usize),
    (win_h, win_w): (usize, usize),
    out: &mut [f32],
) {
    let (top, left, crop_h, crop_w) = crop;
    let rows = axis_weights(
        height,
        top as f64,
        (top + crop_h) as f64,
        grid.0,
        offset.0..offset.0 + win_h,
    );
    let cols = axis_weights(
        width,
        left as f64,
        (left + crop_w) as f64,
        grid.1,
        offset.1..offset.1 + win_w,
    );
    // Horizontal pass over the source rows the vertical pass reads.
    let row_lo = rows.first.iter().copied().min().unwrap_or(0);
    let row_hi = rows
        .first
        .iter()
        .zip(&rows.weights)
        .map(|(&f, w)| f + w.len())
        .max()
        .unwrap_or(0);
    let span = row_hi - row_lo;
    let mut horizontal = vec![0.0f32; channels * span * win_w];
    for c in 0..channels {
        for (r, y) in (row_lo..row_hi).enumerate() {
            let src = &image[(c * height + y) * width..][..width];
            let dst = &mut horizontal[(c * span + r) * win_w..][..win_w];
            for ((o, &f), w) in dst.iter_mut().zip(&cols.first).zip(&cols.weights) {
                *o = src[f..f + w.len()]
                    .iter()
                    .zip(w)
                    .map(|(&s, &k)| s * k)
                    .sum();
            }
        }
    }
    for c in 0..channels {
        let plane = &horizontal[c * span * win_w..][..span * win_w];
        for (oy, (&f, w)) in rows.first.iter().zip(&rows.weights).enumerate() {
            let dst = &mut out[(c * win_h + oy) * win_w..][..win_w];
            dst.fill(0.0);
            for (k, &weight) in w.iter().enumerate() {
                let src = &plane[(f - row_lo + k) * win_w..][..win_w];
                for (o, &s) in dst.iter_mut().zip(src) {
                    *o += s * weight;
                }
            }
        }
    }
}

/// `RandomResizedCrop` to `out_h x out_w` and a horizontal flip with
/// probability 1/2 of a planar `channels x height x width` image, drawn from
/// `rng`.
pub fn resized_crop_flip(
    image: &[f32],
    [channels, height, width]: [usize; 3],
    (out_h, out_w): (usize, usize),
    rng: &mut impl RngExt,
    out: &mut [f32],
) {
    let crop = random_resized_crop_box(height, width, rng);
    resample(
        image,
        [channels, height, width],
        crop,
        (out_h, out_w),
        (0, 0),
        (out_h, out_w),
        out,
    );
    if rng.random_bool(0.5) {
        flip_rows(out, out_w);
    }
}

/// Mirrors every row of a planar image in place.
pub fn flip_rows(image: &mut [f32], width: usize) {
    for row in image.chunks_exact_mut(width) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn eval_geometry_resizes_the_shorter_side_then_centre_crops() {
        assert_eq!(eval_geometry(28, 28, 28, 28), None);
        assert_eq!(eval_resize_side(224), 256);
        // 500x375 (w x h) -> shorter side 256, longer int(256 * 500 / 375) = 341.
        assert_eq!(
            eval_geometry(375, 500, 224, 224),
            Some(((256, 341), (16, 59)))
        );
    }

    #[test]
    fn resampling_a_constant_keeps_it_and_an_identity_box_copies() {
        let image: Vec<f32> = (0..2 * 6 * 8).map(|i| i as f32).collect();
        let mut out = vec![0.0; 2 * 6 * 8];
        resample(
            &image,
            [2, 6, 8],
            (0, 0, 6, 8),
            (6, 8),
            (0, 0),
            (6, 8),
            &mut out,
        );
        for (a, b) in image.iter().zip(&out) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        let constant = vec![0.25f32; 3 * 40 * 30];
        let mut small = vec![0.0; 3 * 7 * 9];
        resample(
            &constant,
            [3, 40, 30],
            (3, 2, 30, 25),
            (7, 9),
            (0, 0),
            (7, 9),
            &mut small,
        );
        assert!(small.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn halving_averages_pixel_pairs() {
        // 1x4 row [0, 1, 2, 3] -> 2 pixels, each the triangle-weighted mean
        // around its centre (1 and 3) with the kernel widened to 2 pixels.
        let mut out = [0.0f32; 2];
        resample(
            &[0.0, 1.0, 2.0, 3.0],
            [1, 1, 4],
            (0, 0, 1, 4),
            (1, 2),
            (0, 0),
            (1, 2),
            &mut out,
        );
        let expected = [
            (0.0 * 0.75 + 1.0 * 0.75 + 2.0 * 0.25) / 1.75,
            (1.0 * 0.25 + 2.0 * 0.75 + 3.0 * 0.75) / 1.75,
        ];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-5, "{out:?} vs {expected:?}");
        }
    }

    #[test]
    fn random_boxes_fit_the_image_and_respect_the_ranges() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let (top, left, h, w) = random_resized_crop_box(60, 90, &mut rng);
            assert!(top + h <= 60 && left + w <= 90 && h > 0 && w > 0);
        }
        // A 1x100 strip never fits the ratio range: the clamped centre crop.
        assert_eq!(random_resized_crop_box(1, 100, &mut rng), (0, 49, 1, 1));
    }
}
