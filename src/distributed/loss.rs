//! How the batch loss combines across ranks. The patched loss of a batch is a
//! ratio `numerator / denominator` (the weighted mean
//! `sum_i w_{y_i} l_i / sum_i w_{y_i}` of the cross-entropy losses, or the
//! plain mean over examples of the focal loss, [`crate::ldam::batch_loss`]).
//! The global batch's loss is therefore
//! `sum_r numerator_r / sum_r denominator_r`, and its gradient
//! `sum_r denominator_r * grad(loss_r) / sum_r denominator_r`: each rank scales
//! its slice's gradient by its slice's denominator before the sum, never
//! averaging per-rank means.

use crate::ldam::{LossConfig, LossKind};

/// The denominator of the batch loss of `labels` at `epoch`: the sum of the
/// class weights in force of the labels (1 each when unweighted) for the
/// cross-entropy losses, the number of examples for the focal loss.
pub fn denominator(config: &LossConfig, labels: &[i64], epoch: i64) -> f64 {
    match config.loss {
        LossKind::Focal => labels.len() as f64,
        LossKind::Ldam | LossKind::Ce | LossKind::La | LossKind::Vs => {
            match config.class_weights_at(epoch) {
                Some(weights) => labels
                    .iter()
                    .map(|&y| {
                        usize::try_from(y)
                            .ok()
                            .and_then(|y| weights.get(y))
                            .copied()
                            .unwrap_or(0.0)
                    })
                    .sum(),
                None => labels.len() as f64,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldam::{batch_loss, LossConfig, LossKind, Reweight};

    /// Logits and labels of a small batch, deterministic.
    fn batch(n: usize, classes: usize) -> (Vec<f32>, Vec<i64>) {
        let logits = (0..n * classes)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let labels = (0..n).map(|i| ((i * 5 + 1) % classes) as i64).collect();
        (logits, labels)
    }

    #[test]
    fn slices_combined_by_numerator_and_denominator_give_the_whole_batch_loss() {
        let classes = 4;
        let (logits, labels) = batch(10, classes);
        for loss in [LossKind::Ldam, LossKind::Ce, LossKind::Focal] {
            for (reweight, epoch) in [(Reweight::None, 0), (Reweight::Drw, 0), (Reweight::Drw, 5)] {
                let config = LossConfig {
                    loss,
                    reweight,
                    drw_epoch: 3,
                    beta: 0.99,
                    ..LossConfig::reference(vec![50, 20, 8, 3])
                };
                let whole = batch_loss(&config, &logits, &labels, epoch);
                let (mut numerator, mut total) = (0.0, 0.0);
                for range in [0..3, 3..4, 4..10] {
                    let part = &labels[range.clone()];
                    let d = denominator(&config, part, epoch);
                    let l = batch_loss(
                        &config,
                        &logits[range.start * classes..range.end * classes],
                        part,
                        epoch,
                    );
                    numerator += l * d;
                    total += d;
                }
                let combined = numerator / total;
                assert!(
                    (combined - whole).abs() <= 1e-12 * whole.abs(),
                    "{loss} {reweight} epoch {epoch}: {combined} vs {whole}"
                );
                if reweight == Reweight::Drw && epoch >= 3 && loss != LossKind::Focal {
                    // Averaging the per-slice means would not be the batch's loss.
                    let naive: f64 = [0..3, 3..4, 4..10]
                        .into_iter()
                        .map(|r| {
                            batch_loss(
                                &config,
                                &logits[r.start * classes..r.end * classes],
                                &labels[r],
                                epoch,
                            )
                        })
                        .sum::<f64>()
                        / 3.0;
                    assert!((naive - whole).abs() > 1e-6, "{naive} vs {whole}");
                }
            }
        }
    }

    #[test]
    fn drw_weights_enter_the_denominator_from_the_drw_epoch() {
        let config = LossConfig {
            drw_epoch: 2,
            ..LossConfig::reference(vec![100, 10])
        };
        let labels = [0, 1, 1];
        assert_eq!(denominator(&config, &labels, 1), 3.0);
        let weights = config.class_weights_at(2).unwrap();
        let expected = weights[0] + 2.0 * weights[1];
        assert!((denominator(&config, &labels, 2) - expected).abs() < 1e-12);
        assert_ne!(denominator(&config, &labels, 2), 3.0);
    }
}
