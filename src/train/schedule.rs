//! What changes from epoch to epoch: the learning rate (LDAM-DRW.md section 4) and
//! the order in which training examples are visited (section 3: instance sampling,
//! class-balanced re-sampling RS, deferred re-sampling DRS). Class *weights* under
//! DRW are not here: they come from [`LossConfig::class_weights_at`] only.
//!
//! [`LossConfig::class_weights_at`]: crate::ldam::LossConfig::class_weights_at

use crate::error::{Error, Result};
use crate::ldam::effective_number_weights;
use rand::seq::SliceRandom;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// The reference's step schedule with linear warm-up. With `e = epoch + 1`:
/// `e <= warmup_epochs` gives `base_lr * e / warmup_epochs`; otherwise `base_lr`
/// times `factor` once for every step `s` with `e > s`. The reference recipe
/// ([`LrSchedule::reference`]) gives `lr * 0.01` after epoch 160 and `lr * 0.0001`
/// after epoch 180.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    pub base_lr: f64,
    /// Epochs of linear warm-up (reference 5); 0 disables it.
    pub warmup_epochs: usize,
    /// 1-based epoch counts after which the rate is multiplied by `factor`
    /// (reference `[160, 180]`).
    pub steps: Vec<usize>,
    /// Multiplier applied at each step (reference 0.01).
    pub factor: f64,
}

impl LrSchedule {
    /// The CIFAR recipe of the paper: warm-up 5, steps at 160 and 180, factor 0.01.
    pub fn reference(base_lr: f64) -> Self {
        LrSchedule {
            base_lr,
            warmup_epochs: 5,
            steps: vec![160, 180],
            factor: 0.01,
        }
    }

    /// Rejects schedules that would silently train with a meaningless rate,
    /// naming the settings (the fields `lr`, `lr_factor`, `lr_steps`,
    /// `warmup_epochs` of a `TrainConfig`).
    pub fn validate(&self) -> Result<()> {
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return Err(Error::setting(
                "lr",
                format!("must be a positive number, got {}", self.base_lr),
            ));
        }
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(Error::setting(
                "lr_factor",
                format!("must be a positive number, got {}", self.factor),
            ));
        }
        if let Some(pair) = self.steps.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(Error::setting(
                "lr_steps",
                format!(
                    "must be strictly increasing, got {} before {}",
                    pair[0], pair[1]
                ),
            ));
        }
        // Warm-up is checked before the steps (as in the reference), so a step
        // inside the warm-up would have no effect until warm-up ends.
        if let Some(&first) = self.steps.first() {
            if self.warmup_epochs > first {
                return Err(Error::WarmupPastFirstStep {
                    warmup_epochs: self.warmup_epochs,
                    first_step: first,
                });
            }
        }
        Ok(())
    }

    /// The learning rate for `epoch` (0-based), in the reference's order of checks.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let e = epoch + 1;
        if e <= self.warmup_epochs {
            return self.base_lr * e as f64 / self.warmup_epochs as f64;
        }
        // Repeated multiplication, so that two steps of 0.01 give exactly the
        // reference's `lr * 0.0001` (0.01 * 0.01 == 0.0001 in f64).
        let passed = self.steps.iter().filter(|&&step| e > step).count();
        let multiplier = (0..passed).fold(1.0, |m, _| m * self.factor);
        self.base_lr * multiplier
    }
}

/// The effective-number beta of the reference's class-balanced sampler
/// (`ImbalancedDatasetSampler`), fixed there independently of the loss's beta.
pub const RESAMPLE_BETA: f64 = 0.9999;

/// How an epoch visits the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// Every example once per epoch.
    Instance,
    /// RS: N draws with replacement, an example's probability proportional to the
    /// effective-number weight of its class, so rare classes are seen more often.
    ClassBalanced,
    /// DRS: instance sampling before `from_epoch` (0-based), class-balanced from it
    /// on; the same switch point convention as DRW's `drw_epoch`.
    Deferred { from_epoch: usize },
}

impl Sampler {
    /// The example indices of one epoch, in visiting order.
    ///
    /// `shuffle` only affects instance sampling (identity order when false, for
    /// reproducible debugging); re-sampling is random by nature and always uses
    /// `rng`. Every label must lie in `0..classes`: the data loaders guarantee it.
    pub fn epoch_order(
        &self,
        labels: &[i64],
        classes: usize,
        epoch: usize,
        shuffle: bool,
        rng: &mut ChaCha8Rng,
    ) -> Vec<usize> {
        match self {
            Sampler::Instance => instance_order(labels.len(), shuffle, rng),
            Sampler::Deferred { from_epoch } if epoch < *from_epoch => {
                instance_order(labels.len(), shuffle, rng)
            }
            Sampler::ClassBalanced | Sampler::Deferred { .. } => {
                class_balanced_draws(labels, classes, rng)
            }
        }
    }
}

fn instance_order(len: usize, shuffle: bool, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        order.shuffle(rng);
    }
    order
}

/// `torch.multinomial(weights, N, replacement=True)` over per-example weights
/// `w_{y_i}`: a uniform draw located in the cumulative weights.
fn class_balanced_draws(labels: &[i64], classes: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let class_weights = sampling_weights(labels, classes);
    let mut cumulative = Vec::with_capacity(labels.len());
    let mut total = 0.0;
    for &label in labels {
        total += class_weights[label as usize];
        cumulative.push(total);
    }
    (0..labels.len())
        .map(|_| {
            let target = rng.random::<f64>() * total;
            // The first example whose cumulative weight exceeds the target; the
            // clamp only guards against rounding at the very top.
            cumulative
                .partition_point(|&c| c <= target)
                .min(labels.len() - 1)
        })
        .collect()
}

/// Per-class sampling weights from the training labels' class counts. Classes
/// absent from `labels` are left out of [`effective_number_weights`] (their
/// `1 - beta^0 = 0` would poison the normalisation) and get weight 0; dropping
/// them changes only the normalisation constant, which sampling ignores.
pub fn sampling_weights(labels: &[i64], classes: usize) -> Vec<f64> {
    let mut counts = vec![0u64; classes];
    for (i, &label) in labels.iter().enumerate() {
        assert!(
            (0..classes as i64).contains(&label),
            "label {label} of example {i} is outside 0..{classes}: data loaders reject such labels"
        );
        counts[label as usize] += 1;
    }
    let present: Vec<usize> = (0..classes).filter(|&c| counts[c] > 0).collect();
    let present_counts: Vec<u64> = present.iter().map(|&c| counts[c]).collect();
    let mut weights = vec![0.0; classes];
    for (&class, w) in present
        .iter()
        .zip(effective_number_weights(&present_counts, RESAMPLE_BETA))
    {
        weights[class] = w;
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn reference_schedule_hits_the_papers_rates_at_every_boundary() {
        let schedule = LrSchedule::reference(0.1);
        schedule.validate().unwrap();
        let expected = [
            (0, 0.1 * 1.0 / 5.0),
            (3, 0.1 * 4.0 / 5.0),
            (4, 0.1),
            (5, 0.1),
            (159, 0.1),
            (160, 0.1 * 0.01),
            (179, 0.1 * 0.01),
            (180, 0.1 * 0.0001),
            (199, 0.1 * 0.0001),
        ];
        for (epoch, lr) in expected {
            assert_eq!(schedule.lr_at(epoch), lr, "epoch {epoch}");
        }
    }

    #[test]
    fn no_warmup_starts_at_the_base_rate() {
        let schedule = LrSchedule {
            warmup_epochs: 0,
            ..LrSchedule::reference(0.5)
        };
        assert_eq!(schedule.lr_at(0), 0.5);
    }

    #[test]
    fn invalid_schedules_name_their_setting() {
        let bad = |s: LrSchedule| s.validate().unwrap_err().to_string();
        assert!(bad(LrSchedule::reference(0.0)).starts_with("lr "));
        assert!(bad(LrSchedule::reference(f64::NAN)).starts_with("lr "));
        let steps = LrSchedule {
            steps: vec![180, 160],
            ..LrSchedule::reference(0.1)
        };
        assert!(bad(steps).contains("lr_steps must be strictly increasing"));
        let warmup = LrSchedule {
            warmup_epochs: 200,
            ..LrSchedule::reference(0.1)
        };
        assert!(bad(warmup).contains("warmup_epochs (200) must not exceed the first of lr_steps"));
        let factor = LrSchedule {
            factor: -1.0,
            ..LrSchedule::reference(0.1)
        };
        assert!(bad(factor).starts_with("lr_factor "));
    }

    #[test]
    fn instance_order_is_a_permutation_or_identity() {
        let labels = [0i64, 1, 1, 0, 2, 2, 2];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut order = Sampler::Instance.epoch_order(&labels, 3, 0, true, &mut rng);
        assert_ne!(order, (0..7).collect::<Vec<_>>(), "seed 7 shuffles");
        order.sort_unstable();
        assert_eq!(order, (0..7).collect::<Vec<_>>());
        let identity = Sampler::Instance.epoch_order(&labels, 3, 0, false, &mut rng);
        assert_eq!(identity, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn deferred_sampler_switches_at_from_epoch() {
        // One rare example among many: instance sampling visits it exactly once,
        // re-sampling almost surely repeats or omits examples.
        let labels: Vec<i64> = (0..200).map(|i| if i == 0 { 1 } else { 0 }).collect();
        let drs = Sampler::Deferred { from_epoch: 3 };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut before = drs.epoch_order(&labels, 2, 2, true, &mut rng);
        before.sort_unstable();
        assert_eq!(before, (0..200).collect::<Vec<_>>());
        let after = drs.epoch_order(&labels, 2, 3, true, &mut rng);
        assert_eq!(after.len(), 200);
        let rare = after.iter().filter(|&&i| i == 0).count();
        assert!(rare > 20, "rare example drawn {rare} times of 200");
    }

    #[test]
    fn absent_classes_get_zero_weight_and_are_never_drawn() {
        let labels = [0i64, 0, 2, 2, 2];
        let weights = sampling_weights(&labels, 4);
        assert_eq!(weights[1], 0.0);
        assert_eq!(weights[3], 0.0);
        assert!(weights[0] > weights[2]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let order = Sampler::ClassBalanced.epoch_order(&labels, 4, 0, true, &mut rng);
        assert!(order.iter().all(|&i| i < labels.len()));
    }
}
