//! Evaluation as the long-tail literature reports it (LDAM-DRW.md section 4):
//! top-1, per-class accuracy from the confusion matrix, and many/medium/few-shot
//! group accuracy by *training* count. All accuracies are percentages, because
//! the paper's tables are top-1 error in percent (`error = 100 - accuracy`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A class with more training examples than this is "many-shot".
pub const MANY_SHOT_ABOVE: u64 = 100;
/// A class with fewer training examples than this is "few-shot"; the classes in
/// between (20..=100) are "medium-shot".
pub const FEW_SHOT_BELOW: u64 = 20;

/// The usual long-tail split of classes by training count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shot {
    Many,
    Medium,
    Few,
}

impl Shot {
    /// `> 100` many, `< 20` few, otherwise medium.
    pub fn of(train_count: u64) -> Shot {
        if train_count > MANY_SHOT_ABOVE {
            Shot::Many
        } else if train_count < FEW_SHOT_BELOW {
            Shot::Few
        } else {
            Shot::Medium
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Shot::Many => "many",
            Shot::Medium => "medium",
            Shot::Few => "few",
        }
    }
}

/// Mean per-class accuracy (%) of each shot group; `None` when a group has no
/// class with test examples (the reference's `np.mean([])` would give NaN).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupAccuracy {
    pub many: Option<f64>,
    pub medium: Option<f64>,
    pub few: Option<f64>,
}

/// A confusion matrix, `confusion[true][predicted]`, and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    confusion: Vec<Vec<u64>>,
}

impl Evaluation {
    /// An empty matrix, for accumulating batch by batch with [`Evaluation::add_logits`].
    pub fn new(classes: usize) -> Self {
        Evaluation {
            confusion: vec![vec![0; classes]; classes],
        }
    }

    /// From a ready-made square matrix (rows: true class, columns: prediction).
    pub fn from_confusion(confusion: Vec<Vec<u64>>) -> Result<Self> {
        let classes = confusion.len();
        if let Some(row) = confusion.iter().position(|r| r.len() != classes) {
            return Err(Error::config(format!(
                "confusion matrix row {row} has {} columns, expected {classes}",
                confusion[row].len()
            )));
        }
        Ok(Evaluation { confusion })
    }

    /// From true labels and predicted classes, both in `0..classes`.
    pub fn from_predictions(labels: &[i64], predicted: &[i64], classes: usize) -> Result<Self> {
        if labels.len() != predicted.len() {
            return Err(Error::config(format!(
                "{} labels but {} predictions",
                labels.len(),
                predicted.len()
            )));
        }
        let mut evaluation = Evaluation::new(classes);
        evaluation.check_range("label", labels)?;
        evaluation.check_range("prediction", predicted)?;
        for (&label, &pred) in labels.iter().zip(predicted) {
            evaluation.confusion[label as usize][pred as usize] += 1;
        }
        Ok(evaluation)
    }

    /// From row-major logits `[N, classes]`: the prediction is each row's argmax.
    pub fn from_logits(logits: &[f32], labels: &[i64], classes: usize) -> Result<Self> {
        let mut evaluation = Evaluation::new(classes);
        evaluation.add_logits(logits, labels)?;
        Ok(evaluation)
    }

    /// Adds a batch of row-major logits `[N, classes]` and their labels. Ties go to
    /// the lowest class index; a NaN logit counts as the largest (as in
    /// `torch.argmax`), so a diverged model scores as wrong, not as class 0.
    pub fn add_logits(&mut self, logits: &[f32], labels: &[i64]) -> Result<()> {
        let classes = self.classes();
        if classes == 0 || logits.len() != labels.len() * classes {
            return Err(Error::config(format!(
                "{} logits do not form {} rows of {classes} classes",
                logits.len(),
                labels.len()
            )));
        }
        // Checked before counting, so that a bad batch leaves the matrix untouched.
        self.check_range("label", labels)?;
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            self.confusion[label as usize][argmax(row)] += 1;
        }
        Ok(())
    }

    fn check_range(&self, what: &str, values: &[i64]) -> Result<()> {
        let classes = self.classes() as i64;
        match values.iter().position(|v| !(0..classes).contains(v)) {
            Some(i) => Err(Error::config(format!(
                "{what} {} of example {i} is outside 0..{classes}",
                values[i]
            ))),
            None => Ok(()),
        }
    }

    pub fn classes(&self) -> usize {
        self.confusion.len()
    }

    /// `confusion[true][predicted]`.
    pub fn confusion(&self) -> &[Vec<u64>] {
        &self.confusion
    }

    /// Number of evaluated examples.
    pub fn total(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }

    /// Test examples per class (the row sums).
    pub fn class_totals(&self) -> Vec<u64> {
        self.confusion.iter().map(|row| row.iter().sum()).collect()
    }

    /// Top-1 accuracy in %: trace / total. NaN when nothing was evaluated.
    pub fn top1(&self) -> f64 {
        let correct: u64 = (0..self.classes()).map(|c| self.confusion[c][c]).sum();
        percent(correct, self.total()).unwrap_or(f64::NAN)
    }

    /// Top-1 error in %, the number the paper's tables report.
    pub fn top1_error(&self) -> f64 {
        100.0 - self.top1()
    }

    /// Accuracy (%) of each true class: diagonal / row sum; `None` for a class
    /// without test examples, whose accuracy is undefined rather than 0.
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| percent(row[c], row.iter().sum()))
            .collect()
    }

    /// Many/medium/few-shot accuracy by training count. As the long-tail
    /// literature's `shot_acc` does, a group's accuracy is the *mean of its classes'
    /// accuracies* (not pooled over examples), and classes without test examples
    /// are left out of the mean.
    pub fn group_accuracy(&self, train_counts: &[u64]) -> Result<GroupAccuracy> {
        if train_counts.is_empty() {
            // Unknown training counts: no class belongs to any group.
            return Ok(GroupAccuracy {
                many: None,
                medium: None,
                few: None,
            });
        }
        if train_counts.len() != self.classes() {
            return Err(Error::config(format!(
                "{} training class counts for {} evaluated classes",
                train_counts.len(),
                self.classes()
            )));
        }
        let per_class = self.per_class_accuracy();
        let group_mean = |shot: Shot| {
            let accuracies: Vec<f64> = per_class
                .iter()
                .zip(train_counts)
                .filter(|&(_, &n)| Shot::of(n) == shot)
                .filter_map(|(acc, _)| *acc)
                .collect();
            (!accuracies.is_empty())
                .then(|| accuracies.iter().sum::<f64>() / accuracies.len() as f64)
        };
        Ok(GroupAccuracy {
            many: group_mean(Shot::Many),
            medium: group_mean(Shot::Medium),
            few: group_mean(Shot::Few),
        })
    }
}

/// The predicted class of one row of logits: the first largest value, a NaN
/// counting as largest (so a diverged network is not scored as right by chance).
pub fn argmax(row: &[f32]) -> usize {
    (1..row.len()).fold(0, |best, j| {
        let beats = !row[best].is_nan() && (row[j].is_nan() || row[j] > row[best]);
        if beats {
            j
        } else {
            best
        }
    })
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shot_thresholds_follow_the_long_tail_convention() {
        assert_eq!(Shot::of(101), Shot::Many);
        assert_eq!(Shot::of(100), Shot::Medium);
        assert_eq!(Shot::of(20), Shot::Medium);
        assert_eq!(Shot::of(19), Shot::Few);
    }

    #[test]
    fn logits_argmax_prefers_the_first_of_equal_scores_and_nan() {
        let logits = [1.0, 1.0, 0.0, 0.0, -f32::NAN, 5.0];
        let e = Evaluation::from_logits(&logits, &[0, 2], 3).unwrap();
        assert_eq!(e.confusion()[0], vec![1, 0, 0]);
        assert_eq!(e.confusion()[2], vec![0, 1, 0]);
    }

    #[test]
    fn without_training_counts_there_are_no_groups_and_nan_rows_count_as_wrong() {
        let e = Evaluation::from_logits(&[0.9, 0.1, f32::NAN, 0.5], &[0, 1], 2).unwrap();
        assert_eq!(argmax(&[0.1, f32::NAN, 0.5]), 1);
        assert_eq!(e.top1(), 50.0);
        let g = e.group_accuracy(&[]).unwrap();
        assert_eq!((g.many, g.medium, g.few), (None, None, None));
        assert!(e.group_accuracy(&[5]).is_err());
    }

    #[test]
    fn out_of_range_labels_and_ragged_logits_are_errors() {
        let err = Evaluation::from_predictions(&[0, 3], &[0, 0], 3).unwrap_err();
        assert!(err.to_string().contains("label 3 of example 1"), "{err}");
        let err = Evaluation::from_logits(&[0.0; 5], &[0, 1], 3).unwrap_err();
        assert!(err.to_string().contains("5 logits"), "{err}");
    }

    #[test]
    fn accumulating_batches_equals_one_pass() {
        let logits = [0.9, 0.1, 0.2, 0.8, 0.7, 0.3];
        let labels = [0, 0, 1];
        let whole = Evaluation::from_logits(&logits, &labels, 2).unwrap();
        let mut batched = Evaluation::new(2);
        batched.add_logits(&logits[..2], &labels[..1]).unwrap();
        batched.add_logits(&logits[2..], &labels[1..]).unwrap();
        assert_eq!(whole, batched);
    }

    #[test]
    fn a_class_without_test_examples_has_no_accuracy() {
        let e = Evaluation::from_predictions(&[0, 0], &[0, 1], 2).unwrap();
        assert_eq!(e.per_class_accuracy(), vec![Some(50.0), None]);
        let groups = e.group_accuracy(&[500, 5]).unwrap();
        assert_eq!(groups.many, Some(50.0));
        assert_eq!(groups.few, None);
        assert!(Evaluation::new(2).top1().is_nan());
    }
}
