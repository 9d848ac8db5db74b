//! README claims of the libtorch backend checked end to end through the
//! `ldam-onnx` binary: `train --backend torch` exports a model whose ONNX Runtime
//! accuracy is the reported one and that matches the ONNX Runtime backend, and a
//! checkpoint of either backend resumes on the other.
#![cfg(feature = "torch")]

mod common;

use common::tolerance::{max_abs_diff, worst};
use common::{Data, Rng};
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::{metadata, ModelProto};
use ldam_onnx::train::checkpoint::Checkpoint;
use ndarray::{Array1, Array4};
use ndarray_npy::NpzWriter;
use serde_json::Value;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Training counts of the runs (175 images) and the balanced test set.
const TRAIN_COUNTS: [u64; 10] = [40, 32, 26, 20, 16, 12, 10, 8, 6, 5];
const TEST_COUNTS: [u64; 10] = [10; 10];

/// Runs the binary and requires success; returns stdout.
fn ldam_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(&args)
        .output()
        .expect("the binary starts");
    assert!(
        output.status.success(),
        "ldam-onnx {args:?} failed ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn join<T: ToString>(values: &[T]) -> String {
    values
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Grey 28x28 u8 images: noise below 80, two bright rows at `2 + 2c` for class
/// `c`, classes interleaved in a seeded order.
struct Images {
    pixels: Vec<u8>,
    labels: Vec<i64>,
}

impl Images {
    fn new(counts: &[u64], seed: u64) -> Images {
        let mut rng = Rng::new(seed);
        let mut labels: Vec<i64> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c as i64, n as usize))
            .collect();
        for i in (1..labels.len()).rev() {
            labels.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut pixels = Vec::with_capacity(labels.len() * 784);
        for &label in &labels {
            let band = 2 + 2 * label as usize;
            for row in 0..28 {
                for _ in 0..28 {
                    let bright = (band..band + 2).contains(&row);
                    let base = if bright { 180 } else { 0 };
                    pixels.push(base + rng.below(if bright { 75 } else { 80 }) as u8);
                }
            }
        }
        Images { pixels, labels }
    }

    fn write_npz(&self, path: &Path) {
        let n = self.labels.len();
        let mut npz = NpzWriter::new(std::fs::File::create(path).expect("create npz"));
        let x = Array4::from_shape_vec((n, 1, 28, 28), self.pixels.clone()).expect("x shape");
        npz.add_array("x", &x).expect("write x");
        npz.add_array("y", &Array1::from_vec(self.labels.clone()))
            .expect("write y");
        npz.finish().expect("finish npz");
    }

    /// `(pixels / 255 - mean) / std`, computed here, as `[N, 1, 28, 28]`.
    fn input(&self, mean: f32, std: f32) -> Data {
        let values = self
            .pixels
            .iter()
            .map(|&v| (f32::from(v) / 255.0 - mean) / std)
            .collect();
        Data::F32(vec![self.labels.len() as i64, 1, 28, 28], values)
    }
}

/// A data folder (`train.npz`, `test.npz`) and `models/mlp.onnx` patched for it.
fn setup(dir: &Path) -> (PathBuf, PathBuf, Images) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    Images::new(&TRAIN_COUNTS, 1).write_npz(&data.join("train.npz"));
    let test = Images::new(&TEST_COUNTS, 2);
    test.write_npz(&data.join("test.npz"));
    let model = dir.join("mlp.ldam.onnx");
    ldam_ok([
        "patch",
        &p(&common::repo_dir().join("models/mlp.onnx")),
        "--class-counts",
        &join(&TRAIN_COUNTS),
        "-o",
        &p(&model),
    ]);
    (data, model, test)
}

fn train(model: &Path, data: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "train".to_string(),
        p(model),
        "--train".into(),
        p(data),
        "--out".into(),
        p(out),
        "--quiet".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ldam_ok(&args);
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn model(path: &Path) -> ModelProto {
    load(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .model
}

fn float_initializers(model: &ModelProto) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> = model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter_map(|t| Some((t.name().to_string(), f32_values(t)?)))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// The largest difference between two checkpoints' state, over every tensor.
fn state_distance(a: &Checkpoint, b: &Checkpoint) -> f64 {
    let names = |c: &Checkpoint| c.state.keys().cloned().collect::<HashSet<_>>();
    assert_eq!(names(a), names(b), "the two states name different tensors");
    worst(a.state.iter().map(|(name, t)| {
        max_abs_diff(
            &f32_values(t).unwrap(),
            &f32_values(&b.state[name]).unwrap(),
        )
    }))
}

/// The training loss of each epoch in `metrics.csv`.
fn train_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn torch_backend_through_the_cli_exports_a_model_whose_onnx_runtime_accuracy_is_the_reported_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model_file, test) = setup(tmp.path());
    let flags = ["--epochs", "3", "--batch-size", "32", "--augment", "none"];
    let torch = tmp.path().join("torch");
    train(
        &model_file,
        &data,
        &torch,
        &[&flags[..], &["--backend", "torch"]].concat(),
    );
    let report = read_json(&torch.join("report.json"));
    assert_eq!(report["settings"]["backend"], "torch");
    let runtime = report["settings"]["resolved"]["runtime"].as_str().unwrap();
    assert!(runtime.starts_with("libtorch"), "{runtime}");
    assert_eq!(Checkpoint::load(&torch).unwrap().progress.epoch, 3);

    // model.onnx in ONNX Runtime, fed the recorded normalisation computed here.
    let exported = model(&torch.join("model.onnx"));
    let recorded = metadata(&exported, "ldam_onnx.input_normalization").unwrap();
    let (mean, std) = recorded.split_once('/').unwrap();
    let input = test.input(mean.parse().unwrap(), std.parse().unwrap());
    let logits = common::run(&exported, &[("input", input)])["logits"].clone();
    let correct = logits
        .f32()
        .chunks_exact(10)
        .zip(&test.labels)
        .filter(|(row, &label)| {
            let best = (0..10).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            best as i64 == label
        })
        .count();
    let accuracy = 100.0 * correct as f64 / test.labels.len() as f64;
    assert_eq!(accuracy, report["top1"].as_f64().unwrap());
    assert!(
        accuracy > 30.0,
        "the torch run learned too little: {accuracy}%"
    );

    // The same run on ONNX Runtime ends at nearly the same weights.
    let ort = tmp.path().join("ort");
    train(&model_file, &data, &ort, &flags);
    let ort_weights = float_initializers(&model(&ort.join("model.onnx")));
    let torch_weights = float_initializers(&exported);
    assert_eq!(
        ort_weights.iter().map(|w| &w.0).collect::<Vec<_>>(),
        torch_weights.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    for ((name, a), (_, b)) in ort_weights.iter().zip(&torch_weights) {
        let gap = max_abs_diff(a, b);
        assert!(gap < 1e-4, "{name}: torch and ort weights differ by {gap}");
    }
    for (a, b) in train_losses(&ort).iter().zip(train_losses(&torch)) {
        assert!((a - b).abs() < 1e-5 * a.abs(), "train loss {a} vs {b}");
    }
}

#[test]
fn a_checkpoint_of_either_backend_resumes_on_the_other_from_its_saved_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model_file, _) = setup(tmp.path());
    // A schedule that does not depend on --epochs, so a one-epoch run is the
    // first epoch of a two-epoch one.
    let flags = [
        "--batch-size",
        "32",
        "--augment",
        "none",
        "--lr",
        "0.05",
        "--warmup-epochs",
        "0",
        "--lr-steps",
        "100",
    ];
    for (first, second) in [("ort", "torch"), ("torch", "ort")] {
        let full = tmp.path().join(format!("{first}-full"));
        train(
            &model_file,
            &data,
            &full,
            &[&flags[..], &["--backend", first, "--epochs", "2"]].concat(),
        );
        let switched = tmp.path().join(format!("{first}-then-{second}"));
        train(
            &model_file,
            &data,
            &switched,
            &[&flags[..], &["--backend", first, "--epochs", "1"]].concat(),
        );
        // The one-epoch run's checkpoint is the first epoch of a two-epoch run
        // (the schedule does not depend on --epochs): its recorded epochs are
        // raised as if that run had been stopped there.
        let mut saved = Checkpoint::load(&switched).unwrap();
        assert_eq!((saved.progress.epoch, saved.progress.batch), (1, 0));
        saved.progress.settings["epochs"] = 2.into();
        saved.save(&switched).unwrap();

        ldam_ok([
            "train",
            "--quiet",
            "--resume",
            &p(&switched),
            "--backend",
            second,
        ]);
        let resumed = Checkpoint::load(&switched).unwrap();
        let report = read_json(&switched.join("report.json"));
        let runtime = report["settings"]["resolved"]["runtime"].as_str().unwrap();
        let expected = if second == "torch" {
            "libtorch"
        } else {
            "onnxruntime"
        };
        assert!(
            runtime.starts_with(expected),
            "{first} -> {second}: {runtime}"
        );

        // The saved epoch is kept, the next one trained from the saved state.
        assert_eq!(resumed.progress.epoch, 2);
        assert_eq!(resumed.progress.records.len(), 2);
        assert_eq!(
            resumed.progress.records[0], saved.progress.records[0],
            "{first} -> {second}: the first epoch's record changed"
        );
        let reference = Checkpoint::load(&full).unwrap();
        let moved = state_distance(&saved, &reference);
        let gap = state_distance(&resumed, &reference);
        assert!(
            moved > 0.1 && gap < 1e-4,
            "{first} -> {second}: the resumed run ends {gap} from an uninterrupted {first} run, \
             the checkpoint was {moved} from it"
        );
        let (a, b) = (
            reference.progress.records[1].train_loss,
            resumed.progress.records[1].train_loss,
        );
        assert!(
            (a - b).abs() < 1e-5 * a.abs(),
            "{first} -> {second}: second-epoch loss {b} vs {a}"
        );
        assert!(switched.join("model.onnx").is_file());
    }
}
