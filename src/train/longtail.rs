//! Long-tailed training sets built from balanced ones, as in the LDAM-DRW paper
//! (LDAM-DRW.md §4): per-class counts from an imbalance ratio and a profile, and
//! a seeded per-class subsample that keeps that many examples of each class.
//!
//! The reference (`IMBALANCECIFAR10.gen_imbalanced_data`) seeds numpy once, then
//! for each class in order shuffles that class's indices and keeps the first
//! `n`. [`subsample`] follows the same steps with the same shuffle (Fisher-Yates
//! from the last position down, a masked-rejection draw for each swap partner, as
//! numpy's legacy `shuffle`), but with a ChaCha8 generator instead of numpy's
//! Mersenne Twister, so the counts match the reference exactly while the chosen
//! examples differ from it. They are stable for a seed across platforms and
//! releases, since nothing here depends on `rand`'s own shuffle.

use crate::error::{Error, Result};
use crate::train::data::Dataset;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How counts fall from the head class to the tail class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// `n_i = floor(n_max * ratio^(-i / (C - 1)))`: geometric decay.
    Exp,
    /// The first `C / 2` classes keep `n_max`, the rest get `floor(n_max / ratio)`.
    Step,
    /// A Pareto (Lomax) power law of shape `alpha`, as ImageNet-LT was drawn
    /// (Liu et al. 2019, alpha 6): `n_i = floor(n_max * (1 + t_i (ratio^(1/alpha)
    /// - 1))^(-alpha))` with `t_i = i / (C - 1)`, so the head keeps `n_max` and
    /// the tail `n_max / ratio`; a smaller `alpha` drops faster after the head
    /// and flattens the tail.
    Pareto,
}

keyword_enum!(Profile { Exp => "exp", Step => "step", Pareto => "pareto" });

/// ImageNet-LT's Pareto shape.
pub const DEFAULT_PARETO_ALPHA: f64 = 6.0;

/// The Pareto shape must be a finite number > 0.
pub fn check_alpha(alpha: f64) -> Result<()> {
    if alpha.is_finite() && alpha > 0.0 {
        Ok(())
    } else {
        Err(Error::setting(
            "pareto_alpha",
            format!("must be a number > 0 (ImageNet-LT used 6), got {alpha}"),
        ))
    }
}

/// [`long_tail_counts`] with the Pareto shape `alpha` (other profiles ignore it).
pub fn long_tail_counts_with(
    n_max: usize,
    classes: usize,
    ratio: f64,
    profile: Profile,
    alpha: f64,
) -> Vec<usize> {
    match profile {
        Profile::Pareto if classes == 1 => vec![n_max],
        Profile::Pareto => {
            let span = ratio.powf(1.0 / alpha) - 1.0;
            (0..classes)
                .map(|i| {
                    let t = i as f64 / (classes - 1) as f64;
                    // Rounded before truncating so the tail lands on n_max / ratio
                    // despite the power's last-bit error.
                    let n = n_max as f64 * (1.0 + t * span).powf(-alpha);
                    (n + 1e-9 * n_max as f64).floor() as usize
                })
                .collect()
        }
        _ => long_tail_counts(n_max, classes, ratio, profile),
    }
}

/// The imbalance ratio must be a finite number >= 1 (1 keeps the set balanced).
pub fn check_ratio(ratio: f64) -> Result<()> {
    if ratio.is_finite() && ratio >= 1.0 {
        Ok(())
    } else {
        Err(Error::config(format!(
            "imbalance ratio {ratio} must be a number >= 1 (n_max / n_min, e.g. 100)"
        )))
    }
}

/// Examples to keep per class, head class first. CIFAR-10 with `n_max` 5000,
/// ratio 100, `Exp`: `[5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]`.
///
/// `Exp` evaluates `n_max * (1/ratio)^(i/(C-1))` in f64 and truncates, as the
/// reference does (`img_max * imb_factor**(i / (C - 1.0))` with `imb_factor =
/// 1/ratio`), so the counts agree with it to the example. A tail count may be 0
/// when `n_max / ratio < 1`, as in the reference. With one class there is no tail:
/// `[n_max]`. `Step` gives `C` counts for odd `C` too (the tail takes the odd
/// class), where the reference's loop would give `C - 1`. Call [`check_ratio`] on
/// user input first: a ratio below 1 would ask for more than `n_max`.
pub fn long_tail_counts(n_max: usize, classes: usize, ratio: f64, profile: Profile) -> Vec<usize> {
    let head = n_max as f64;
    match profile {
        Profile::Pareto => {
            long_tail_counts_with(n_max, classes, ratio, profile, DEFAULT_PARETO_ALPHA)
        }
        Profile::Exp if classes == 1 => vec![n_max],
        Profile::Exp => {
            let factor = 1.0 / ratio;
            (0..classes)
                .map(|i| (head * factor.powf(i as f64 / (classes - 1) as f64)) as usize)
                .collect()
        }
        Profile::Step => {
            let tail = (head / ratio) as usize;
            (0..classes)
                .map(|i| if i < classes / 2 { n_max } else { tail })
                .collect()
        }
    }
}

pub use crate::train::data::class_counts;

/// A long-tailed subset of `dataset`: for each class in class order, `counts[c]`
/// of its examples chosen by a seeded shuffle (see the module docs), concatenated
/// class after class like the reference. The same seed gives the same subset.
/// Fails when `counts` does not have one entry per class or a class has fewer
/// examples than asked.
pub fn subsample(dataset: &Dataset, counts: &[usize], seed: u64) -> Result<Dataset> {
    if counts.len() != dataset.classes {
        return Err(Error::config(format!(
            "{}: {} long-tail counts for {} classes",
            dataset.source,
            counts.len(),
            dataset.classes
        )));
    }
    // Indices of each class in ascending order, as `np.where(targets == c)[0]`.
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); dataset.classes];
    for (i, &label) in dataset.labels.iter().enumerate() {
        by_class[label as usize].push(i);
    }
    if let Some((class, (have, &want))) = by_class
        .iter()
        .map(Vec::len)
        .zip(counts)
        .enumerate()
        .find(|(_, (have, want))| have < want)
    {
        return Err(Error::config(format!(
            "{}: class {class} has {have} examples, but the long-tail profile keeps {want} \
             (lower the imbalance ratio or use a larger set)",
            dataset.source
        )));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keep = Vec::with_capacity(counts.iter().sum());
    for (indices, &want) in by_class.iter_mut().zip(counts) {
        shuffle(indices, &mut rng);
        keep.extend_from_slice(&indices[..want]);
    }
    let kept: usize = keep.len();
    dataset.subset(
        &keep,
        format!(
            "{} (long-tailed: {kept} of {} examples, seed {seed})",
            dataset.source,
            dataset.len()
        ),
    )
}

/// Fisher-Yates from the end, as numpy's legacy `RandomState.shuffle`.
fn shuffle(values: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..values.len()).rev() {
        let j = bounded(rng, i as u64) as usize;
        values.swap(i, j);
    }
}

/// Uniform in `0..=max` by masked rejection (numpy's `random_interval`): draw the
/// bits `max` needs and retry above it, so there is no modulo bias.
fn bounded(rng: &mut ChaCha8Rng, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mask = u64::MAX >> max.leading_zeros();
    loop {
        let draw = if max <= u64::from(u32::MAX) {
            u64::from(rng.next_u32())
        } else {
            rng.next_u64()
        } & mask;
        if draw <= max {
            return draw;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_counts_fall_from_n_max_to_n_max_over_ratio_by_a_power_law() {
        // ImageNet-LT's range: 1280 images for the head, 5 for the tail.
        let counts = long_tail_counts_with(1280, 1000, 256.0, Profile::Pareto, 6.0);
        assert_eq!((counts[0], counts[999]), (1280, 5));
        assert!(counts.windows(2).all(|w| w[0] >= w[1]));
        // The curve's midpoint: 1280 * (1 + (256^(1/6) - 1) / 2)^-6, by hand.
        let mid = 1280.0 * (1.0 + (256f64.powf(1.0 / 6.0) - 1.0) * 500.0 / 999.0).powf(-6.0);
        assert_eq!(counts[500], mid as usize);
        // A smaller alpha drops faster after the head.
        let steep = long_tail_counts_with(1280, 1000, 256.0, Profile::Pareto, 1.0);
        assert!(
            steep[100] < counts[100],
            "{} vs {}",
            steep[100],
            counts[100]
        );
        assert_eq!(
            long_tail_counts_with(7, 1, 10.0, Profile::Pareto, 6.0),
            vec![7]
        );
        assert!(check_alpha(0.0).is_err() && check_alpha(6.0).is_ok());
    }
    use crate::train::data::Pixels;

    #[test]
    fn exp_profile_matches_the_papers_cifar10_counts() {
        assert_eq!(
            long_tail_counts(5000, 10, 100.0, Profile::Exp),
            vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
        );
        assert_eq!(long_tail_counts(5000, 10, 10.0, Profile::Exp)[9], 500);
        assert_eq!(long_tail_counts(500, 100, 100.0, Profile::Exp)[99], 5);
        assert_eq!(long_tail_counts(7, 1, 100.0, Profile::Exp), vec![7]);
    }

    #[test]
    fn step_profile_halves_the_classes_even_for_odd_counts() {
        let mut expected = vec![5000; 5];
        expected.extend([500; 5]);
        assert_eq!(long_tail_counts(5000, 10, 10.0, Profile::Step), expected);
        assert_eq!(
            long_tail_counts(100, 3, 4.0, Profile::Step),
            vec![100, 25, 25]
        );
    }

    #[test]
    fn ratio_one_is_balanced_and_ratios_below_one_are_refused() {
        assert_eq!(long_tail_counts(9, 4, 1.0, Profile::Exp), vec![9; 4]);
        assert!(check_ratio(100.0).is_ok());
        assert!(check_ratio(0.5).is_err());
        assert!(check_ratio(f64::NAN).is_err());
    }

    #[test]
    fn profile_parses_its_cli_names() {
        assert_eq!("exp".parse::<Profile>().unwrap(), Profile::Exp);
        assert_eq!("step".parse::<Profile>().unwrap().to_string(), "step");
        assert!("linear".parse::<Profile>().is_err());
    }

    #[test]
    fn class_counts_tallies_labels_and_skips_out_of_range_ones() {
        assert_eq!(class_counts(&[0, 2, 2, 1, 2], 3), vec![1, 1, 3]);
        assert_eq!(class_counts(&[0, -1, 3, 1], 2), vec![1, 1]);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let run = |seed| {
            let mut v: Vec<usize> = (0..50).collect();
            shuffle(&mut v, &mut ChaCha8Rng::seed_from_u64(seed));
            v
        };
        let mut sorted = run(1);
        assert_ne!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(run(1), sorted);
        assert_ne!(run(2), sorted);
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn bounded_draws_cover_the_range_without_leaving_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            seen[bounded(&mut rng, 5) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    fn balanced(per_class: usize, classes: usize) -> Dataset {
        let labels: Vec<i64> = (0..per_class * classes)
            .map(|i| (i % classes) as i64)
            .collect();
        let pixels = (0..labels.len()).map(|i| i as f32).collect();
        Dataset::new(Pixels::F32(pixels), vec![1], labels, classes, "balanced").unwrap()
    }

    #[test]
    fn subsample_keeps_the_asked_counts_class_by_class() {
        let data = balanced(20, 3);
        let sub = subsample(&data, &[20, 7, 2], 0).unwrap();
        assert_eq!(sub.class_counts(), vec![20, 7, 2]);
        let first_of_each: Vec<i64> = [0, 20, 27].iter().map(|&i| sub.labels[i]).collect();
        assert_eq!(first_of_each, vec![0, 1, 2]);
        // Each kept example is the original one: its value is its index.
        for i in 0..sub.len() {
            let original = sub.example(i).unwrap()[0] as usize;
            assert_eq!(data.labels[original], sub.labels[i]);
        }
    }

    #[test]
    fn subsample_refuses_counts_it_cannot_meet() {
        let data = balanced(5, 2);
        let err = subsample(&data, &[5, 6], 0).unwrap_err().to_string();
        assert!(
            err.contains("class 1 has 5 examples") && err.contains("keeps 6"),
            "{err}"
        );
        let err = subsample(&data, &[5], 0).unwrap_err().to_string();
        assert!(err.contains("1 long-tail counts for 2 classes"), "{err}");
    }
}
