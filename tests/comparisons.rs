//! The comparison helpers every numeric check in `tests/` goes through
//! (`common::tolerance`): a NaN or an infinity in either operand fails any
//! bound, however the check is written, and an error just past its bound fails.

mod common;

use common::tolerance::{max_abs_diff, normwise_error, within, worst};

#[test]
fn a_nan_or_an_infinity_in_either_tensor_fails_every_bound() {
    let good = [1.0f32, -2.0, 3.0];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let spoiled = [1.0f32, bad, 3.0];
        for (actual, expected) in [(&spoiled, &good), (&good, &spoiled)] {
            let err = normwise_error(actual, expected, 0.0);
            assert!(err.is_infinite(), "{bad}: error {err}");
            assert!(!within(err, 1e30), "{bad} passes a bound");
            // Written the other way round, the check still fails.
            assert!(err > 1e30, "{bad}: `err > bound` would let it through");
            assert!(
                max_abs_diff(actual, expected).is_nan()
                    || max_abs_diff(actual, expected).is_infinite()
            );
        }
    }
    assert!(!within(f64::NAN, f64::INFINITY));
    assert!(within(0.5, 1.0) && !within(1.5, 1.0));
}

#[test]
fn the_worst_error_is_nan_when_any_is() {
    assert_eq!(worst([0.1, 0.3, 0.2]), 0.3);
    assert!(worst([0.1, f64::NAN, 0.2]).is_nan());
    assert!(worst([f64::NAN, 0.2]).is_nan());
    // The folds they replace drop the NaN.
    assert_eq!([0.1, f64::NAN, 0.2].into_iter().fold(0.0, f64::max), 0.2);
    assert!(max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]).is_nan());
    assert_eq!(max_abs_diff(&[1.0, 2.5], &[1.0, 2.0]), 0.5);
}

/// A 1% error in one element of a tensor fails a bound of 0.3% of its norm
/// (normwise), and the exact tensor passes it.
#[test]
fn a_one_percent_error_fails_a_three_per_mille_bound() {
    let expected: Vec<f32> = (0..64)
        .map(|i| ((i * 37 % 64) as f32 - 31.5) / 8.0)
        .collect();
    let mut actual = expected.clone();
    let largest = (0..64)
        .max_by(|&a, &b| expected[a].abs().total_cmp(&expected[b].abs()))
        .unwrap();
    actual[largest] *= 1.01;
    assert!(within(normwise_error(&expected, &expected, 0.0), 3e-3));
    assert!(!within(normwise_error(&actual, &expected, 0.0), 1e-3));
    // Scaled as a whole, a 1% error is 1% normwise.
    let scaled: Vec<f32> = expected.iter().map(|v| v * 1.01).collect();
    let err = normwise_error(&scaled, &expected, 0.0);
    assert!(!within(err, 3e-3) && (err - 0.01).abs() < 1e-6, "{err}");
}
