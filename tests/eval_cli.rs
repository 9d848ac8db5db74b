//! `ldam-onnx eval` on data the test writes: its accuracy equals an independent
//! arg-max over ONNX Runtime logits, its report holds per-class accuracy and
//! groups, and bad input fails with one line naming the problem.

mod common;

use common::{run, Data, Rng};
use ldam_onnx::onnx::io::load;
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

#[test]
fn eval_accuracy_is_the_arg_max_of_onnx_runtime_logits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("test.npz");
    let n = 200;
    let (x, y) = write_npz(&data, n, 11);
    let model_path = common::repo_dir().join("models/mlp.onnx");

    // Reference: run the model once on the whole set; float data is used as is.
    let model = load(&model_path).unwrap().model;
    let outputs = run(
        &model,
        &[("input", Data::F32(vec![n as i64, 1, 28, 28], x))],
    );
    let logits = outputs["logits"].values_f64();
    let correct = logits
        .chunks(10)
        .zip(&y)
        .filter(|(row, &label)| {
            let best = (0..10).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            best as i64 == label
        })
        .count();
    let expected = 100.0 * correct as f64 / n as f64;

    let counts = "500,300,200,100,80,50,30,19,10,5";
    let out = dir.path().join("eval");
    let output = ldam(&[
        "eval",
        model_path.to_str().unwrap(),
        "--test",
        data.to_str().unwrap(),
        "--batch-size",
        "64",
        "--class-counts",
        counts,
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("top-1 accuracy {expected:.2}%")),
        "expected {expected:.2}%: {stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["top1"].as_f64().unwrap(), expected);
    let per_class: Vec<f64> = serde_json::from_value(report["per_class_accuracy"].clone()).unwrap();
    assert_eq!(per_class.len(), 10);
    // Groups by the given counts: classes 0-2 many (> 100), 3-6 medium
    // (20..=100), 7-9 few (< 20).
    let mean =
        |r: std::ops::Range<usize>| per_class[r.clone()].iter().sum::<f64>() / r.len() as f64;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(
        report["groups"]["many"].as_f64().unwrap(),
        mean(0..3)
    ));
    assert!(close(
        report["groups"]["medium"].as_f64().unwrap(),
        mean(3..7)
    ));
    assert!(close(
        report["groups"]["few"].as_f64().unwrap(),
        mean(7..10)
    ));
    assert!(out.join("per_class.png").is_file());
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
