//! Resize in linear mode as a matrix per resized axis: output element o of an
//! axis of length `out` reads the input at a source coordinate (ONNX's
//! coordinate_transformation_mode), clamped to the input, and mixes its two
//! neighbours. Y is X multiplied by one such [out, in] matrix along every
//! resized axis, so the gradient multiplies g by the transposes; the libtorch
//! kernel and the gradient rule both build their matrices here.

/// The source coordinate of output element `o`, for the transforms linear
/// upsampling uses (PyTorch's bilinear with `align_corners=False` exports as
/// half_pixel or pytorch_half_pixel, `align_corners=True` as align_corners).
/// `None` for a transform this does not cover.
pub fn source(o: i64, len_in: i64, len_out: i64, scale: f64, transform: &str) -> Option<f64> {
    let o = o as f64;
    Some(match transform {
        "half_pixel" => (o + 0.5) / scale - 0.5,
        "pytorch_half_pixel" if len_out > 1 => (o + 0.5) / scale - 0.5,
        "pytorch_half_pixel" => 0.0,
        "align_corners" if len_out > 1 => o * (len_in - 1) as f64 / (len_out - 1) as f64,
        "align_corners" => 0.0,
        "asymmetric" => o / scale,
        _ => return None,
    })
}

/// The row-major [len_out, len_in] matrix of linear interpolation along one
/// axis: row o holds 1 - λ at floor(s) and λ at the next element (the last
/// element twice at the end), s = `source(o)` clamped to [0, len_in - 1], as
/// ONNX Runtime and PyTorch clamp it. `scale` is the axis's factor (the
/// `scales` input, or len_out / len_in when `sizes` is given).
pub fn linear_matrix(len_in: i64, len_out: i64, scale: f64, transform: &str) -> Option<Vec<f64>> {
    if len_in <= 0 || len_out <= 0 {
        return None;
    }
    let (rows, cols) = (len_out as usize, len_in as usize);
    let mut matrix = vec![0.0; rows * cols];
    for o in 0..len_out {
        let s = source(o, len_in, len_out, scale, transform)?.clamp(0.0, (len_in - 1) as f64);
        let low = s.floor() as usize;
        let high = (low + 1).min(cols - 1);
        let lambda = s - low as f64;
        let row = &mut matrix[o as usize * cols..(o as usize + 1) * cols];
        row[low] += 1.0 - lambda;
        row[high] += lambda;
    }
    Some(matrix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's `F.interpolate(x, scale_factor=2, mode='linear',
    /// align_corners=False)` of [0, 10, 20, 30] is [0, 2.5, 7.5, 12.5, 17.5, 22.5,
    /// 27.5, 30]: the half-pixel sources clamp at both ends.
    #[test]
    fn half_pixel_doubling_matches_pytorch() {
        let m = linear_matrix(4, 8, 2.0, "half_pixel").unwrap();
        let x = [0.0, 10.0, 20.0, 30.0];
        let y: Vec<f64> = m
            .chunks(4)
            .map(|row| row.iter().zip(&x).map(|(w, v)| w * v).sum())
            .collect();
        assert_eq!(y, [0.0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30.0]);
        // Every row mixes to one.
        for row in m.chunks(4) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    /// `align_corners=True`: the ends map to the ends, [0, 10, 20] to five
    /// outputs 0, 5, 10, 15, 20.
    #[test]
    fn align_corners_maps_ends_to_ends() {
        let m = linear_matrix(3, 5, 5.0 / 3.0, "align_corners").unwrap();
        let x = [0.0, 10.0, 20.0];
        let y: Vec<f64> = m
            .chunks(3)
            .map(|row| row.iter().zip(&x).map(|(w, v)| w * v).sum())
            .collect();
        assert_eq!(y, [0.0, 5.0, 10.0, 15.0, 20.0]);
        assert!(linear_matrix(3, 5, 2.0, "tf_crop_and_resize").is_none());
    }
}
