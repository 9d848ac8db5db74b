//! The LDAM-DRW method as plain formulas (Cao et al., NeurIPS 2019). The graph
//! emitter takes its constants from here, and the tests and backends use the same
//! functions, so each rule lives in exactly one place.

pub mod contract;

use crate::error::{Error, Result};

/// Which loss the patched graph computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// Label-distribution-aware margin loss: `CE(s * (z - m_y * onehot(y)), y)`.
    Ldam,
    /// Plain softmax cross-entropy on the logits.
    Ce,
    /// Focal loss on the logits, as the reference code computes it.
    Focal,
    /// Logit-adjusted cross-entropy (Menon et al., ICLR 2021): `CE(z + tau * log(pi), y)`;
    /// Balanced Softmax (Ren et al., NeurIPS 2020) at `tau = 1`.
    La,
    /// Vector-scaling loss (Kini et al., NeurIPS 2021): `CE(Delta * z + iota, y)`,
    /// `Delta_j = (n_j / n_max)^gamma`, `iota_j = tau * log(pi_j)`.
    Vs,
}

/// When class weights apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reweight {
    /// No class weights.
    None,
    /// Effective-number class weights from the first epoch.
    Rw,
    /// Deferred re-weighting: ones before the DRW epoch, effective-number weights from it on.
    Drw,
}

keyword_enum!(LossKind { Ldam => "ldam", Ce => "ce", Focal => "focal", La => "la", Vs => "vs" });
keyword_enum!(Reweight { None => "none", Rw => "rw", Drw => "drw" });

/// Everything that defines the training loss, as recorded in a patched model.
#[derive(Debug, Clone, PartialEq)]
pub struct LossConfig {
    pub class_counts: Vec<u64>,
    pub loss: LossKind,
    /// Largest margin, given to the rarest class (reference default 0.5).
    pub max_m: f64,
    /// Logit scale `s` of the LDAM loss (reference default 30).
    pub scale: f64,
    /// Focusing parameter of the focal loss (reference default 1).
    pub gamma: f64,
    pub reweight: Reweight,
    /// First epoch (0-based) with effective-number weights under DRW (reference 160).
    pub drw_epoch: i64,
    /// Effective-number beta (reference 0.9999).
    pub beta: f64,
    /// Temperature `tau` of the logit-adjusted loss (1 is Balanced Softmax).
    pub la_tau: f64,
    /// Exponent `gamma` of the VS loss's multiplicative scales (authors' CIFAR-10-LT: 0.2).
    pub vs_gamma: f64,
    /// Temperature `tau` of the VS loss's additive offsets (authors' CIFAR-10-LT: 1.2).
    pub vs_tau: f64,
}

/// Default `la_tau`: Balanced Softmax.
pub const LA_TAU: f64 = 1.0;
/// Default `vs_gamma` and `vs_tau`: the VS authors' setting for CIFAR-10-LT at ratio 100.
pub const VS_GAMMA: f64 = 0.2;
pub const VS_TAU: f64 = 1.2;

impl LossConfig {
    /// The reference recipe's settings for the given class counts.
    pub fn reference(class_counts: Vec<u64>) -> Self {
        LossConfig {
            class_counts,
            loss: LossKind::Ldam,
            max_m: 0.5,
            scale: 30.0,
            gamma: 1.0,
            reweight: Reweight::Drw,
            drw_epoch: 160,
            beta: 0.9999,
            la_tau: LA_TAU,
            vs_gamma: VS_GAMMA,
            vs_tau: VS_TAU,
        }
    }

    /// Rejects settings for which the formulas are undefined.
    pub fn validate(&self) -> Result<()> {
        check_counts(&self.class_counts)?;
        let positive = |setting: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::setting(
                    setting,
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        positive("max_m", self.max_m)?;
        positive("scale", self.scale)?;
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(Error::setting(
                "gamma",
                format!("must be >= 0, got {}", self.gamma),
            ));
        }
        if !(self.beta > 0.0 && self.beta < 1.0) {
            return Err(Error::setting(
                "beta",
                format!("must lie in (0, 1), got {}", self.beta),
            ));
        }
        for (setting, v) in [
            ("la_tau", self.la_tau),
            ("vs_gamma", self.vs_gamma),
            ("vs_tau", self.vs_tau),
        ] {
            if !v.is_finite() {
                return Err(Error::setting(
                    setting,
                    format!("must be a finite number, got {v}"),
                ));
            }
        }
        if self.drw_epoch < 0 {
            return Err(Error::setting(
                "drw_epoch",
                format!("must be >= 0, got {}", self.drw_epoch),
            ));
        }
        Ok(())
    }

    /// The affine map of the logits before the cross-entropy, as per-class
    /// `(scales, offsets)`: `z'_j = scales_j * z_j + offsets_j`; `None` for the
    /// losses that use the logits as they are (LDAM's shift depends on the label).
    pub fn logit_affine(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        let classes = self.class_counts.len();
        match self.loss {
            LossKind::La => Some((
                vec![1.0; classes],
                logit_offsets(&self.class_counts, self.la_tau),
            )),
            LossKind::Vs => Some((
                vs_scales(&self.class_counts, self.vs_gamma),
                logit_offsets(&self.class_counts, self.vs_tau),
            )),
            LossKind::Ldam | LossKind::Ce | LossKind::Focal => None,
        }
    }

    /// The class weights in force at `epoch` (0-based), or `None` when unweighted.
    pub fn class_weights_at(&self, epoch: i64) -> Option<Vec<f64>> {
        match self.reweight {
            Reweight::None => None,
            Reweight::Rw => Some(effective_number_weights(&self.class_counts, self.beta)),
            Reweight::Drw if epoch >= self.drw_epoch => {
                Some(effective_number_weights(&self.class_counts, self.beta))
            }
            Reweight::Drw => Some(vec![1.0; self.class_counts.len()]),
        }
    }
}

/// Class counts must be positive: a class without examples has no margin.
pub fn check_counts(class_counts: &[u64]) -> Result<()> {
    if class_counts.len() < 2 {
        return Err(Error::config(format!(
            "need counts for at least 2 classes, got {}",
            class_counts.len()
        )));
    }
    if let Some(class) = class_counts.iter().position(|&n| n == 0) {
        return Err(Error::config(format!(
            "class {class} has a count of 0: LDAM margins and class weights are undefined for a class without examples"
        )));
    }
    Ok(())
}

/// Per-class margins `m_j = max_m * n_j^(-1/4) / max_k n_k^(-1/4)`.
pub fn margins(class_counts: &[u64], max_m: f64) -> Vec<f64> {
    let inv_quarter: Vec<f64> = class_counts
        .iter()
        .map(|&n| 1.0 / (n as f64).sqrt().sqrt())
        .collect();
    let largest = inv_quarter.iter().cloned().fold(f64::MIN, f64::max);
    inv_quarter.iter().map(|m| m * max_m / largest).collect()
}

/// Log class priors `log(pi_j)`, `pi_j = n_j / sum_k n_k`.
pub fn log_priors(class_counts: &[u64]) -> Vec<f64> {
    let total: f64 = class_counts.iter().map(|&n| n as f64).sum();
    class_counts
        .iter()
        .map(|&n| (n as f64 / total).ln())
        .collect()
}

/// Additive logit offsets `tau * log(pi_j)`: the logit adjustment of Menon et
/// al. (added in the LA loss and as VS's `iota`, subtracted post hoc).
pub fn logit_offsets(class_counts: &[u64], tau: f64) -> Vec<f64> {
    log_priors(class_counts)
        .into_iter()
        .map(|l| tau * l)
        .collect()
}

/// VS loss's multiplicative scales `Delta_j = (n_j / n_max)^gamma`.
pub fn vs_scales(class_counts: &[u64], gamma: f64) -> Vec<f64> {
    let largest = class_counts.iter().copied().max().unwrap_or(1) as f64;
    class_counts
        .iter()
        .map(|&n| (n as f64 / largest).powf(gamma))
        .collect()
}

/// Tau-normalisation of one class's classifier weights (Kang et al., ICLR 2020):
/// `w_j / ||w_j||_2^p`.
pub fn tau_normalized(class_weights: &[f64], p: f64) -> Vec<f64> {
    let norm = class_weights.iter().map(|w| w * w).sum::<f64>().sqrt();
    let divisor = norm.powf(p);
    class_weights.iter().map(|w| w / divisor).collect()
}

/// Class-balanced weights from the effective number of samples,
/// `w_j = (1 - beta) / (1 - beta^n_j)`, normalised so that `sum_j w_j = C`.
pub fn effective_number_weights(class_counts: &[u64], beta: f64) -> Vec<f64> {
    let raw: Vec<f64> = class_counts
        .iter()
        .map(|&n| (1.0 - beta) / (1.0 - beta.powf(n as f64)))
        .collect();
    let total: f64 = raw.iter().sum();
    let classes = class_counts.len() as f64;
    raw.iter().map(|w| w / total * classes).collect()
}

/// The loss of one batch computed directly from the formulas in float64: the
/// reference the emitted graphs are tested against. `logits` is row-major [N, C].
pub fn batch_loss(config: &LossConfig, logits: &[f32], labels: &[i64], epoch: i64) -> f64 {
    let classes = config.class_counts.len();
    let margins = margins(&config.class_counts, config.max_m);
    let weights = config.class_weights_at(epoch);
    let weight_of = |y: usize| weights.as_ref().map_or(1.0, |w| w[y]);
    let affine = config.logit_affine();
    let mut weighted_sum = 0.0;
    let mut weight_total = 0.0;
    let mut focal_sum = 0.0;
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let y = label as usize;
        let scores: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(j, &z)| match config.loss {
                LossKind::Ldam => config.scale * (z as f64 - if j == y { margins[j] } else { 0.0 }),
                LossKind::Ce | LossKind::Focal => z as f64,
                LossKind::La | LossKind::Vs => {
                    let (scales, offsets) = affine.as_ref().expect("LA and VS are affine");
                    scales[j] * z as f64 + offsets[j]
                }
            })
            .collect();
        let top = scores.iter().cloned().fold(f64::MIN, f64::max);
        let log_sum_exp = top + scores.iter().map(|s| (s - top).exp()).sum::<f64>().ln();
        let cross_entropy = log_sum_exp - scores[y];
        let w = weight_of(y);
        weighted_sum += w * cross_entropy;
        weight_total += w;
        // Reference focal loss: p = exp(-w_y * ce), loss = mean((1 - p)^gamma * w_y * ce).
        let weighted_ce = w * cross_entropy;
        focal_sum += (1.0 - (-weighted_ce).exp()).powf(config.gamma) * weighted_ce;
    }
    match config.loss {
        LossKind::Focal => focal_sum / labels.len() as f64,
        LossKind::Ldam | LossKind::Ce | LossKind::La | LossKind::Vs => weighted_sum / weight_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-12)
    }

    #[test]
    fn margins_match_reference_demo() {
        let m = margins(&[100, 10], 0.5);
        assert!(close(m[0], 0.2811707, 1e-6), "{m:?}");
        assert_eq!(m[1], 0.5);
    }

    #[test]
    fn reference_demo_loss_is_56_717560() {
        let config = LossConfig {
            reweight: Reweight::None,
            ..LossConfig::reference(vec![100, 10])
        };
        let loss = batch_loss(&config, &[-1.5, 0.5, 0.2, -0.8], &[0, 1], 0);
        assert!(close(loss, 56.717560, 1e-7), "{loss}");
    }

    #[test]
    fn effective_number_weights_sum_to_class_count_and_favour_rare_classes() {
        let counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
        let w = effective_number_weights(&counts, 0.9999);
        assert!(close(w.iter().sum::<f64>(), 10.0, 1e-12));
        assert!(w.windows(2).all(|p| p[0] < p[1]));
        // (1 - b) / (1 - b^n) by hand for the rarest and most common class.
        let raw = |n: f64| (1.0 - 0.9999) / (1.0 - 0.9999f64.powf(n));
        assert!(close(w[9] / w[0], raw(50.0) / raw(5000.0), 1e-12));
    }

    #[test]
    fn drw_switches_exactly_at_the_drw_epoch() {
        let config = LossConfig::reference(vec![100, 10]);
        assert_eq!(config.class_weights_at(159), Some(vec![1.0, 1.0]));
        assert_ne!(config.class_weights_at(160), Some(vec![1.0, 1.0]));
    }

    #[test]
    fn logit_adjustment_and_vs_constants_by_hand() {
        // pi = [0.8, 0.2]: log pi = [ln 0.8, ln 0.2]; Delta = [1, (1/4)^gamma].
        let offsets = logit_offsets(&[40, 10], 2.0);
        assert!(close(offsets[0], 2.0 * 0.8f64.ln(), 1e-15));
        assert!(close(offsets[1], 2.0 * 0.2f64.ln(), 1e-15));
        let scales = vs_scales(&[40, 10], 0.5);
        assert_eq!(scales[0], 1.0);
        assert!(close(scales[1], 0.5, 1e-15));
        let w = tau_normalized(&[3.0, 4.0], 1.0);
        assert!(close(w[0], 0.6, 1e-15) && close(w[1], 0.8, 1e-15));
        assert_eq!(tau_normalized(&[3.0, 4.0], 0.0), vec![3.0, 4.0]);
    }

    #[test]
    fn balanced_softmax_loss_by_hand() {
        // CE(z + log pi, y) for one example: log(sum_j pi_j e^z_j) - (z_y + log pi_y).
        let config = LossConfig {
            loss: LossKind::La,
            reweight: Reweight::None,
            ..LossConfig::reference(vec![30, 10])
        };
        let loss = batch_loss(&config, &[0.5, -0.25], &[1], 0);
        let expected =
            (0.75 * 0.5f64.exp() + 0.25 * (-0.25f64).exp()).ln() - (-0.25 + 0.25f64.ln());
        assert!(close(loss, expected, 1e-12), "{loss} vs {expected}");
    }

    #[test]
    fn zero_count_is_an_error() {
        let err = check_counts(&[10, 0, 3]).unwrap_err().to_string();
        assert!(err.contains("class 1 has a count of 0"), "{err}");
    }
}
