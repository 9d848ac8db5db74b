//! `adjust` on deployable models, run in ONNX Runtime, against float64 formulas
//! written here: post-hoc logit adjustment `z_j - tau log(n_j / sum n)` and
//! tau-normalisation `w_j / ||w_j||^p`; `eval` of an adjusted model reports the
//! accuracy its predictions give.

mod common;

use common::tolerance::{normwise_error, Accumulation};
use common::{bundled, image_linear_model, linear_model, run, Data, Rng};
use ldam_onnx::adjust::{adjust, AdjustOptions};
use ldam_onnx::counts::CountsSource;
use ldam_onnx::ldam::contract::{self, keys};
use ldam_onnx::onnx::io::{save, SaveOptions};
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::ModelProto;
use ndarray::{Array1, Array4};
use ndarray_npy::NpzWriter;
use std::process::Command;

const FEATURES: usize = 6;
const CLASSES: usize = 4;
const COUNTS: [u64; CLASSES] = [400, 90, 25, 5];

fn counts_text(counts: &[u64]) -> String {
    counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A linear classifier `scores = x W^T + b` with seeded weights, recording its
/// training counts as `train` does.
fn trained_linear(seed: u64) -> (ModelProto, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let weight = rng.floats(CLASSES * FEATURES, -1.5, 1.5);
    let bias = rng.floats(CLASSES, -0.2, 0.2);
    let mut model = linear_model(&weight, &bias, FEATURES as i64, CLASSES as i64, 17);
    contract::set(&mut model, keys::TRAIN_CLASS_COUNTS, counts_text(&COUNTS));
    (model, weight, bias)
}

/// Float64 reference: `x (w_j / ||w_j||^p)^T + b_j - tau log(n_j / sum n)`.
fn expected_scores(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    tau_norm: Option<f64>,
    logit_adjust: Option<f64>,
) -> Vec<f64> {
    let total: f64 = COUNTS.iter().map(|&n| n as f64).sum();
    let mut scores = Vec::new();
    for row in x.chunks(FEATURES) {
        for j in 0..CLASSES {
            let w = &weight[j * FEATURES..(j + 1) * FEATURES];
            let norm: f64 = w.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            let divisor = tau_norm.map_or(1.0, |p| norm.powf(p));
            let dot: f64 = row
                .iter()
                .zip(w)
                .map(|(&a, &b)| a as f64 * b as f64 / divisor)
                .sum();
            let offset = logit_adjust.map_or(0.0, |tau| tau * (COUNTS[j] as f64 / total).ln());
            scores.push(dot + bias[j] as f64 - offset);
        }
    }
    scores
}

fn scores_of(model: &ModelProto, x: &[f32]) -> Vec<f32> {
    let n = (x.len() / FEATURES) as i64;
    run(
        model,
        &[("x", Data::F32(vec![n, FEATURES as i64], x.to_vec()))],
    )["scores"]
        .f32()
        .to_vec()
}

fn options(logit_adjust: Option<f64>, tau_norm: Option<f64>) -> AdjustOptions {
    AdjustOptions {
        logit_adjust,
        tau_norm,
        ..AdjustOptions::default()
    }
}

#[test]
fn adjusted_scores_match_the_formulas_in_onnx_runtime() {
    let batch = 32;
    let cases = [
        (Some(1.0), None),
        (Some(0.6), None),
        (None, Some(1.0)),
        (None, Some(0.5)),
        (Some(1.3), Some(0.8)),
    ];
    for (seed, (logit_adjust, tau_norm)) in cases.into_iter().enumerate() {
        let (model, weight, bias) = trained_linear(seed as u64);
        // Counts come from the model's metadata, as train writes them.
        let (adjusted, summary) = adjust(&model, &options(logit_adjust, tau_norm)).unwrap();
        assert_eq!(summary.logits, "scores");
        let x = Rng::new(100 + seed as u64).floats(batch * FEATURES, -1.0, 1.0);
        let expected = expected_scores(&x, &weight, &bias, tau_norm, logit_adjust);
        let actual = scores_of(&adjusted, &x);
        let expected32: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
        let bound = Accumulation::of(&adjusted, batch as i64).forward_bound();
        let error = normwise_error(&actual, &expected32, 0.0);
        assert!(
            error <= bound,
            "logit_adjust {logit_adjust:?} tau_norm {tau_norm:?}: error {error:e} > {bound:e}"
        );
        // The change is real: the unadjusted model differs by far more.
        let plain = scores_of(&model, &x);
        assert!(normwise_error(&plain, &expected32, 0.0) > 100.0 * bound);
        // The rewrite is recorded.
        let recorded = |key| ldam_onnx::onnx::metadata(&adjusted, key).map(str::to_string);
        assert_eq!(
            recorded(keys::ADJUST_LOGIT_TAU),
            logit_adjust.map(|t| t.to_string())
        );
        assert_eq!(
            recorded(keys::ADJUST_TAU_NORM),
            tau_norm.map(|p| p.to_string())
        );
    }
}

#[test]
fn tau_normalisation_rewrites_each_class_of_the_bundled_mlp_and_keeps_its_outputs() {
    let mlp = bundled("mlp");
    let graph = mlp.graph.as_ref().unwrap();
    let head = ldam_onnx::patch::head::detect(graph, None).unwrap();
    let layer = head.linear.clone().expect("the MLP ends in a linear layer");
    let before = graph
        .initializer
        .iter()
        .find(|t| t.name() == layer.weight)
        .map(|t| f32_values(t).unwrap())
        .unwrap();
    let counts = CountsSource::List("5000,2997,1796,1077,645,387,232,139,83,50".into());
    let (adjusted, summary) = adjust(
        &mlp,
        &AdjustOptions {
            class_counts: Some(counts),
            ..options(Some(1.0), Some(1.0))
        },
    )
    .unwrap();
    let after = adjusted
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name() == layer.weight)
        .map(|t| f32_values(t).unwrap())
        .unwrap();
    let features = layer.weight_dims[layer.feature_axis] as usize;
    let at = |class: usize, f: usize| {
        if layer.transposed() {
            class * features + f
        } else {
            f * head.classes + class
        }
    };
    let (_, norms) = summary.normalized.unwrap();
    for class in 0..head.classes {
        let norm = (0..features)
            .map(|f| (before[at(class, f)] as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norms[class] - norm).abs() <= 1e-12 * norm);
        // p = 1: unit rows, in the direction of the old ones.
        let new_norm = (0..features)
            .map(|f| (after[at(class, f)] as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((new_norm - 1.0).abs() < 1e-5, "class {class}: {new_norm}");
        for f in 0..features {
            let want = before[at(class, f)] as f64 / norm;
            assert!((after[at(class, f)] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3));
        }
    }
    let outputs = |m: &ModelProto| -> Vec<String> {
        let g = m.graph.as_ref().unwrap();
        g.output.iter().map(|o| o.name().to_string()).collect()
    };
    assert_eq!(outputs(&adjusted), outputs(&mlp));
    // It still runs: one batch through ONNX Runtime gives finite logits.
    let x = Rng::new(3).floats(2 * 784, 0.0, 1.0);
    let result = run(&adjusted, &[("input", Data::F32(vec![2, 1, 28, 28], x))]);
    assert!(result
        .values()
        .all(|v| v.f32().iter().all(|x| x.is_finite())));
}

#[test]
fn settings_that_cannot_apply_are_errors_naming_them() {
    let (model, _, _) = trained_linear(7);
    let error = adjust(&model, &options(None, None))
        .unwrap_err()
        .to_string();
    assert!(error.contains("nothing to adjust"), "{error}");

    let mut unrecorded = model.clone();
    unrecorded.metadata_props.clear();
    let error = adjust(&unrecorded, &options(Some(1.0), None)).unwrap_err();
    assert_eq!(
        error.naming_settings(ldam_onnx::error::SettingNames::Flags),
        "--class-counts is needed: the model records no training class counts"
    );
    let wrong = AdjustOptions {
        class_counts: Some(CountsSource::List("3,2,1".into())),
        ..options(Some(1.0), None)
    };
    let error = adjust(&model, &wrong).unwrap_err().to_string();
    assert!(error.contains("3 class counts"), "{error}");

    // A patched model still computes its training loss: adjust wants the deployable one.
    let patched = common::patch_with(
        &bundled("mlp"),
        ldam_onnx::ldam::LossConfig::reference(vec![100; 10]),
    );
    let error = adjust(&patched, &options(None, Some(1.0)))
        .unwrap_err()
        .to_string();
    assert!(error.contains("training loss"), "{error}");
}

/// `Flatten(input) W^T` with W's row j one-hot at pixel `8 j`: logit j is that pixel.
fn pixel_model() -> ModelProto {
    let pixels = 28 * 28;
    let mut weight = vec![0f32; 10 * pixels];
    for class in 0..10 {
        weight[class * pixels + 8 * class] = 1.0;
    }
    image_linear_model("pixels", &weight, &[0.0; 10])
}

fn top1_line(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("top-1 accuracy"))
        .unwrap_or_else(|| panic!("no top-1 line in {stdout}"));
    line["top-1 accuracy ".len()..]
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn eval_of_the_adjusted_model_reports_the_accuracy_of_its_adjusted_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let train_counts = [500u64, 300, 200, 100, 80, 50, 30, 19, 10, 5];
    let mut model = pixel_model();
    contract::set(
        &mut model,
        keys::TRAIN_CLASS_COUNTS,
        counts_text(&train_counts),
    );
    let model_path = dir.path().join("model.onnx");
    save(&model, None, &model_path, SaveOptions::default()).unwrap();

    // Test images: pixel 8 y is bright for label y, every evidence pixel noisy.
    let n = 200;
    let mut rng = Rng::new(5);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    let mut images = rng.floats(n * 784, 0.0, 1.0);
    for (i, &y) in labels.iter().enumerate() {
        images[i * 784 + 8 * y as usize] += 0.4;
    }
    let data = dir.path().join("test.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&data).unwrap());
    npz.add_array(
        "x",
        &Array4::from_shape_vec((n, 1, 28, 28), images.clone()).unwrap(),
    )
    .unwrap();
    npz.add_array("y", &Array1::from_vec(labels.clone()))
        .unwrap();
    npz.finish().unwrap();

    // Expected top-1, in float64: argmax_j (x_{8j} - tau log pi_j).
    let tau = 0.5;
    let total: f64 = train_counts.iter().map(|&c| c as f64).sum();
    let accuracy = |tau: f64| {
        let right = (0..n)
            .filter(|&i| {
                let score = |j: usize| {
                    images[i * 784 + 8 * j] as f64 - tau * (train_counts[j] as f64 / total).ln()
                };
                let best = (0..10).fold(0, |b, j| if score(j) > score(b) { j } else { b });
                best as i64 == labels[i]
            })
            .count();
        100.0 * right as f64 / n as f64
    };
    assert_ne!(
        accuracy(0.0),
        accuracy(tau),
        "the adjustment must change predictions"
    );

    let bin = env!("CARGO_BIN_EXE_ldam-onnx");
    let adjusted = dir.path().join("adjusted.onnx");
    let out = Command::new(bin)
        .args(["adjust", model_path.to_str().unwrap(), "-o"])
        .arg(&adjusted)
        .args(["--logit-adjust", &tau.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("minus 0.5 * log(pi)"), "{stdout}");

    for (path, expected) in [(&model_path, accuracy(0.0)), (&adjusted, accuracy(tau))] {
        let out = Command::new(bin)
            .arg("eval")
            .arg(path)
            .arg("--test")
            .arg(&data)
            .args(["--normalize", "none"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reported = top1_line(&String::from_utf8_lossy(&out.stdout));
        assert!(
            (reported - expected).abs() < 0.006,
            "{path:?}: {reported} vs {expected}"
        );
    }

    // Nothing asked: clap names the flags.
    let out = Command::new(bin)
        .args(["adjust", model_path.to_str().unwrap(), "-o"])
        .arg(dir.path().join("none.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--logit-adjust") && stderr.contains("--tau-norm"),
        "{stderr}"
    );
}
