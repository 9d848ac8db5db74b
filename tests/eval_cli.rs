//! `ldam-onnx eval` on data the test writes: a model built so that its
//! prediction for every test image is known (right except a deliberate set of
//! mistakes over several classes) gets exactly the overall, per-class and group
//! accuracy that follow from the design, in its text and JSON output; bad input
//! fails with one line naming the problem.

mod common;

use common::{image_linear_model, run, Data, Rng};
use ldam_onnx::onnx::io::{save, SaveOptions};
use ldam_onnx::onnx::ModelProto;
use ndarray::{Array1, Array4};
use ndarray_npy::NpzWriter;
use std::path::Path;
use std::process::{Command, Output};

fn ldam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(args)
        .output()
        .expect("the binary starts")
}

/// `n` random grey 28x28 float images in [0, 1] with labels 0..10, as an NPZ.
fn write_npz(path: &Path, n: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = rng.floats(n * 784, 0.0, 1.0);
    let y: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    npz.add_array(
        "x",
        &Array4::from_shape_vec((n, 1, 28, 28), x.clone()).unwrap(),
    )
    .unwrap();
    npz.add_array("y", &Array1::from_vec(y.clone())).unwrap();
    npz.finish().unwrap();
    (x, y)
}

const CLASSES: usize = 10;
/// Where class `j`'s evidence sits in the flattened 28x28 image: the model's
/// logit `j` is the pixel at `EVIDENCE[j]` (plus a small bias).
const EVIDENCE: [usize; CLASSES] = [5, 83, 161, 239, 317, 395, 473, 551, 629, 707];
/// Test examples of each class: all different, so per-class accuracies differ.
const TEST_COUNTS: [usize; CLASSES] = [8, 11, 14, 17, 20, 23, 26, 29, 32, 35];
/// The deliberate mistakes: (true class, class the image shows, how many).
/// Spread over six classes (two of them many-, two medium-, two few-shot by
/// `TRAIN_COUNTS`), each sent to a different wrong class.
const MISTAKES: [(usize, usize, usize); 6] = [
    (0, 7, 2),
    (2, 3, 1),
    (3, 0, 5),
    (5, 9, 3),
    (7, 1, 4),
    (8, 2, 7),
];
const TRAIN_COUNTS: &str = "500,300,200,100,80,50,30,19,10,5";

/// `logits = Flatten(input) @ W^T + b` through one Gemm, where row `j` of `W` is
/// 1 at pixel `EVIDENCE[j]` and 0 elsewhere, and `b_j = 0.01 j`: logit `j` is
/// that pixel plus 0.01 j.
fn evidence_model() -> ModelProto {
    let pixels = 28 * 28;
    let mut weight = vec![0f32; CLASSES * pixels];
    for (class, &pixel) in EVIDENCE.iter().enumerate() {
        weight[class * pixels + pixel] = 1.0;
    }
    let bias: Vec<f32> = (0..CLASSES).map(|j| 0.01 * j as f32).collect();
    image_linear_model("evidence", &weight, &bias)
}

/// The test set: for each class its `TEST_COUNTS` examples, of which the
/// `MISTAKES` show another class, in a seeded random order. An image showing
/// class `k` has 1.0 at `EVIDENCE[k]` and noise in [0, 0.5) everywhere else,
/// so the model's logit `k` (>= 1.0) beats every other (< 0.5 + 0.09): the
/// prediction is the shown class, and only the listed mistakes are wrong.
/// Returns the images, the labels and the shown classes.
fn evidence_set(seed: u64) -> (Vec<f32>, Vec<i64>, Vec<usize>) {
    let mut examples: Vec<(i64, usize)> = Vec::new();
    for (class, &count) in TEST_COUNTS.iter().enumerate() {
        let mut shown = vec![class; count];
        let mut wrong = 0;
        for &(_, other, n) in MISTAKES.iter().filter(|m| m.0 == class) {
            shown[wrong..wrong + n].fill(other);
            wrong += n;
        }
        examples.extend(shown.into_iter().map(|k| (class as i64, k)));
    }
    let mut rng = Rng::new(seed);
    for i in (1..examples.len()).rev() {
        examples.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut images = Vec::with_capacity(examples.len() * 784);
    for &(_, shown) in &examples {
        let mut image = rng.floats(784, 0.0, 0.5);
        image[EVIDENCE[shown]] = 1.0;
        images.extend(image);
    }
    let (labels, shown) = examples.into_iter().unzip();
    (images, labels, shown)
}

fn write_evidence_npz(path: &Path, images: &[f32], labels: &[i64]) {
    let n = labels.len();
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    npz.add_array(
        "x",
        &Array4::from_shape_vec((n, 1, 28, 28), images.to_vec()).unwrap(),
    )
    .unwrap();
    npz.add_array("y", &Array1::from_vec(labels.to_vec()))
        .unwrap();
    npz.finish().unwrap();
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole as f64
}

#[test]
fn eval_reports_the_known_overall_and_per_class_accuracy_of_a_designed_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("test.npz");
    let (images, labels, shown) = evidence_set(11);
    let n = labels.len();
    write_evidence_npz(&data, &images, &labels);
    let model_path = dir.path().join("evidence.onnx");
    save(&evidence_model(), None, &model_path, SaveOptions::default()).unwrap();

    // The model predicts the shown class for every example (checked once in
    // ONNX Runtime, so that a mistake in the construction is not blamed on eval).
    let logits = run(
        &evidence_model(),
        &[("input", Data::F32(vec![n as i64, 1, 28, 28], images))],
    )["logits"]
        .values_f64();
    for (i, row) in logits.chunks(CLASSES).enumerate() {
        let best = (0..CLASSES).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        assert_eq!(best, shown[i], "example {i}: logits {row:?}");
    }

    // Expected values, from the design alone: the confusion matrix of
    // (label, shown class), per-class accuracy = 100 (n_c - mistakes_c) / n_c.
    let mut confusion = vec![vec![0u64; CLASSES]; CLASSES];
    for (&label, &k) in labels.iter().zip(&shown) {
        confusion[label as usize][k] += 1;
    }
    let mistakes_of =
        |c: usize| -> usize { MISTAKES.iter().filter(|m| m.0 == c).map(|m| m.2).sum() };
    let per_class: Vec<f64> = (0..CLASSES)
        .map(|c| percent(TEST_COUNTS[c] - mistakes_of(c), TEST_COUNTS[c]))
        .collect();
    // The classes with mistakes have distinct accuracies, so no two of them can
    // trade places unseen.
    let mut imperfect: Vec<f64> = per_class.iter().copied().filter(|&a| a < 100.0).collect();
    imperfect.sort_by(f64::total_cmp);
    imperfect.dedup();
    assert_eq!(imperfect.len(), MISTAKES.len(), "{per_class:?}");
    let wrong: usize = MISTAKES.iter().map(|m| m.2).sum();
    let top1 = percent(n - wrong, n);
    // 193 of 215: far from the 10% of chance, and far from what predictions
    // paired with the wrong labels give (the labels shifted by one example).
    assert_eq!((n, wrong), (215, 22));
    let shifted = (0..n)
        .filter(|&i| labels[(i + 1) % n] as usize == shown[i])
        .count();
    assert!(percent(shifted, n) < 30.0, "shifted: {shifted}");
    // Shot groups by TRAIN_COUNTS: many 0-2 (> 100), medium 3-6, few 7-9 (< 20);
    // a group's value is the mean of its classes' accuracies.
    let mean =
        |r: std::ops::Range<usize>| per_class[r.clone()].iter().sum::<f64>() / r.len() as f64;
    let (many, medium, few) = (mean(0..3), mean(3..7), mean(7..10));
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;

    // The batch size must not matter: 7 leaves a last batch of 5, 256 is one batch.
    for batch_size in ["7", "256"] {
        let out = dir.path().join(format!("eval-{batch_size}"));
        let output = ldam(&[
            "eval",
            model_path.to_str().unwrap(),
            "--test",
            data.to_str().unwrap(),
            "--batch-size",
            batch_size,
            "--class-counts",
            TRAIN_COUNTS,
            "--out",
            out.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The text output: overall accuracy, error and the three groups.
        let line = format!(
            "top-1 accuracy {top1:.2}%  (error {:.2}%)  many {many:.2}  medium {medium:.2}  few {few:.2}",
            100.0 - top1
        );
        assert!(stdout.contains(&line), "expected {line:?} in: {stdout}");
        assert!(
            stdout.contains(&format!("on {n} test examples")),
            "{stdout}"
        );

        // The JSON report: every value against the design.
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert!(close(report["top1"].as_f64().unwrap(), top1), "{report}");
        assert!(close(report["top1_error"].as_f64().unwrap(), 100.0 - top1));
        let reported: Vec<f64> =
            serde_json::from_value(report["per_class_accuracy"].clone()).unwrap();
        assert_eq!(reported.len(), CLASSES);
        for c in 0..CLASSES {
            assert!(
                close(reported[c], per_class[c]),
                "batch {batch_size}, class {c}: reported {}, expected {}",
                reported[c],
                per_class[c]
            );
        }
        let reported: Vec<Vec<u64>> = serde_json::from_value(report["confusion"].clone()).unwrap();
        assert_eq!(reported, confusion, "confusion[true][predicted]");
        let test_counts: Vec<usize> =
            serde_json::from_value(report["class_counts"]["test"].clone()).unwrap();
        assert_eq!(test_counts, TEST_COUNTS);
        let train_counts: Vec<String> =
            serde_json::from_value::<Vec<u64>>(report["class_counts"]["train"].clone())
                .unwrap()
                .iter()
                .map(u64::to_string)
                .collect();
        assert_eq!(train_counts.join(","), TRAIN_COUNTS);
        for (group, value) in [("many", many), ("medium", medium), ("few", few)] {
            let got = report["groups"][group].as_f64().unwrap();
            assert!(
                close(got, value),
                "{group}: reported {got}, expected {value}"
            );
        }
        assert!(out.join("per_class.png").is_file());
    }
}

#[test]
fn eval_refuses_data_of_the_wrong_shape_naming_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("test.npz");
    write_npz(&data, 10, 1);
    let resnet = common::repo_dir().join("models/resnet32.onnx");
    let output = ldam(&[
        "eval",
        resnet.to_str().unwrap(),
        "--test",
        data.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("[1, 28, 28]") && stderr.contains("[N, 3, 32, 32]"),
        "{stderr}"
    );
}

#[test]
fn train_resume_with_settings_flags_is_refused() {
    let output = ldam(&["train", "--resume", "runs/x", "--epochs", "3"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--epochs") && stderr.contains("--resume"),
        "{stderr}"
    );
}
