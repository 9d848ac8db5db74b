//! README claims checked end to end through the `ldam-onnx` binary, each against
//! an independent computation: `train --force`, a SIGKILL during checkpoint
//! writes, `inspect --format json|dot`, counts from files, the contract name
//! flags, the input and schedule flags of `train`, `eval` with the recorded
//! normalisation, and `compile --freeze`. Data are small sets written here, so
//! every run lasts seconds.

mod common;

use common::tolerance::{max_abs_diff, worst};
use common::{Data, Rng};
use ldam_onnx::onnx::builder::attr_int;
use ldam_onnx::onnx::io::{load, save, SaveOptions};
use ldam_onnx::onnx::tensor::{f32_tensor, f32_values, is_float_type, FLOAT};
use ldam_onnx::onnx::types::{value_info, Dim};
use ldam_onnx::onnx::{metadata, GraphProto, ModelProto, ValueInfoProto};
use ldam_onnx::train::checkpoint::Checkpoint;
use ndarray::{Array1, Array2, Array4};
use ndarray_npy::NpzWriter;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Running the binary

fn ldam<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(args)
        .output()
        .expect("the binary starts")
}

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
    let output = ldam(&args);
    assert!(
        output.status.success(),
        "ldam-onnx {args:?} failed ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

/// Runs the binary and requires failure; returns stderr.
fn ldam_fails<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = ldam(args);
    assert!(!output.status.success(), "expected a failure");
    String::from_utf8(output.stderr).expect("stderr is UTF-8")
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn mlp() -> PathBuf {
    common::repo_dir().join("models/mlp.onnx")
}

/// `ldam-onnx patch MODEL --class-counts COUNTS -o OUT EXTRA...`.
fn patch(model: &Path, counts: &[u64], out: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "patch".to_string(),
        p(model),
        "--class-counts".into(),
        join(counts),
        "-o".into(),
        p(out),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ldam_ok(&args);
    out.to_path_buf()
}

/// `ldam-onnx train MODEL --train DATA --out OUT --quiet EXTRA...`.
fn train(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> String {
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
    ldam_ok(&args)
}

fn join<T: ToString>(values: &[T]) -> String {
    values
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------
// Data written by the tests

/// Grey u8 images `[N, 1, side, side]` and their labels: noise below 80, and
/// for class `c` two bright rows starting at row `2 + 2c`, so a small network
/// learns them in a few epochs. Classes are interleaved in a seeded order.
struct Images {
    side: usize,
    pixels: Vec<u8>,
    labels: Vec<i64>,
}

impl Images {
    fn new(counts: &[u64], side: usize, seed: u64) -> Images {
        let mut rng = Rng::new(seed);
        let mut labels: Vec<i64> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c as i64, n as usize))
            .collect();
        for i in (1..labels.len()).rev() {
            labels.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let plane = side * side;
        let mut pixels = Vec::with_capacity(labels.len() * plane);
        for &label in &labels {
            let band = 2 + 2 * label as usize;
            for row in 0..side {
                for _ in 0..side {
                    let bright = (band..band + 2).contains(&row);
                    let base = if bright { 180 } else { 0 };
                    pixels.push(base + rng.below(if bright { 75 } else { 80 }) as u8);
                }
            }
        }
        Images {
            side,
            pixels,
            labels,
        }
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn write_npz(&self, path: &Path) {
        let mut npz = NpzWriter::new(std::fs::File::create(path).expect("create npz"));
        let x = Array4::from_shape_vec((self.len(), 1, self.side, self.side), self.pixels.clone())
            .expect("pixels fill the shape");
        npz.add_array("x", &x).expect("write x");
        npz.add_array("y", &Array1::from_vec(self.labels.clone()))
            .expect("write y");
        npz.finish().expect("finish npz");
    }

    /// The network input `[N, channels, side, side]`: pixels / 255, the grey
    /// plane repeated into every channel, channel `c` normalised with
    /// `(v - means[c]) / stds[c]` (computed here, not by the crate).
    fn input(&self, channels: usize, means: &[f32], stds: &[f32]) -> Data {
        let plane = self.side * self.side;
        let mut values = Vec::with_capacity(self.len() * channels * plane);
        for example in self.pixels.chunks_exact(plane) {
            for c in 0..channels {
                values.extend(
                    example
                        .iter()
                        .map(|&v| (f32::from(v) / 255.0 - means[c]) / stds[c]),
                );
            }
        }
        let s = self.side as i64;
        Data::F32(vec![self.len() as i64, channels as i64, s, s], values)
    }
}

/// A run's data folder: `train.npz` and `test.npz` of [`Images`].
fn image_folder(dir: &Path, train: &[u64], test: &[u64], side: usize) -> (Images, Images) {
    std::fs::create_dir_all(dir).expect("data folder");
    let train = Images::new(train, side, 1);
    let test = Images::new(test, side, 2);
    train.write_npz(&dir.join("train.npz"));
    test.write_npz(&dir.join("test.npz"));
    (train, test)
}

/// Float feature vectors `x` (N, F) and labels as an NPZ.
fn write_features_npz(path: &Path, x: &[f32], features: usize, labels: &[i64]) {
    let mut npz = NpzWriter::new(std::fs::File::create(path).expect("create npz"));
    let array = Array2::from_shape_vec((labels.len(), features), x.to_vec()).expect("x shape");
    npz.add_array("x", &array).expect("write x");
    npz.add_array("y", &Array1::from_vec(labels.to_vec()))
        .expect("write y");
    npz.finish().expect("finish npz");
}

/// Training counts of the MLP runs (175 images) and the balanced test set.
const MLP_TRAIN: [u64; 10] = [40, 32, 26, 20, 16, 12, 10, 8, 6, 5];
const MLP_TEST: [u64; 10] = [10; 10];

// ---------------------------------------------------------------------------
// Reading results

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn model(path: &Path) -> ModelProto {
    load(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .model
}

fn meta(model: &ModelProto, key: &str) -> String {
    metadata(model, key)
        .unwrap_or_else(|| panic!("no metadata '{key}'"))
        .to_string()
}

/// The state list of a training step: a JSON array of names under
/// `ldam_onnx.train.state`.
/// The step file `path` with the initial values of its companion state file as
/// initializers behind its state inputs: runnable in native ONNX Runtime with
/// the batch inputs alone, and readable with [`initializer`].
fn step_with_initial_state(path: &Path) -> ModelProto {
    let loaded = ldam_onnx::onnx::io::load(path).unwrap();
    let initial = ldam_onnx::compile::files::initial_state(&loaded).unwrap();
    let mut step = loaded.model;
    let graph = step.graph.as_mut().unwrap();
    assert!(
        graph
            .initializer
            .iter()
            .all(|t| !initial.contains_key(t.name())),
        "the step keeps its state inputs plain"
    );
    graph.initializer.extend(initial.into_values());
    step
}

fn state_list(step: &ModelProto) -> Vec<String> {
    serde_json::from_str(&meta(step, "ldam_onnx.train.state")).expect("a JSON list of names")
}

fn initializer(model: &ModelProto, name: &str) -> Vec<f32> {
    let tensor = model
        .graph
        .as_ref()
        .expect("graph")
        .initializer
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no initializer '{name}'"));
    f32_values(tensor).expect("inline float initializer")
}

/// `metrics.csv` as rows of fields, without the header.
fn metrics_rows(run: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).expect("metrics.csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,lr,train_loss,train_acc,test_acc,many,medium,few,images_per_s,seconds")
    );
    lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// Top-1 accuracy (%) of `model_file` in ONNX Runtime on `input`, by arg-max of
/// its `logits` output, as `100 * correct / n`.
fn onnx_accuracy(model_file: &Path, input_name: &str, input: Data, labels: &[i64]) -> f64 {
    let outputs = common::run(&model(model_file), &[(input_name, input)]);
    let logits = outputs["logits"].f32();
    let classes = logits.len() / labels.len();
    let correct = logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = (0..classes).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            best as i64 == label
        })
        .count();
    100.0 * correct as f64 / labels.len() as f64
}

/// Every file of a folder (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("readable folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("readable file");
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

fn assert_same_state(a: &Checkpoint, b: &Checkpoint, what: &str) {
    let names = |c: &Checkpoint| c.state.keys().cloned().collect::<HashSet<_>>();
    assert_eq!(names(a), names(b), "{what}: state names");
    for (name, tensor) in &a.state {
        let x = f32_values(tensor).expect("float state");
        let y = f32_values(&b.state[name]).expect("float state");
        assert!(
            x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{what}: state tensor {name} differs"
        );
    }
}

/// The paper's margins, computed here: `m_j ~ n_j^(-1/4)`, the largest `max_m`.
fn reference_margins(counts: &[u64], max_m: f64) -> Vec<f64> {
    let raw: Vec<f64> = counts.iter().map(|&n| (n as f64).powf(-0.25)).collect();
    let largest = raw.iter().cloned().fold(0.0, f64::max);
    raw.iter().map(|m| m * max_m / largest).collect()
}

// ---------------------------------------------------------------------------
// train --force

#[test]
fn train_force_starts_over_in_a_run_folder_and_without_it_leaves_the_folder_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data, &MLP_TRAIN, &MLP_TEST, 28);
    let model = patch(&mlp(), &MLP_TRAIN, &tmp.path().join("mlp.ldam.onnx"), &[]);
    let out = tmp.path().join("run");
    let quick = ["--augment", "none", "--batch-size", "64"];
    train(
        &model,
        &data,
        &out,
        &[&quick[..], &["--epochs", "1"]].concat(),
    );
    let before = snapshot(&out);
    assert!(before.contains_key(Path::new("model.onnx")));

    let second = [&quick[..], &["--epochs", "2", "--seed", "3"]].concat();
    let mut args = vec![
        "train".to_string(),
        p(&model),
        "--train".into(),
        p(&data),
        "--out".into(),
        p(&out),
        "--quiet".into(),
    ];
    args.extend(second.iter().map(|s| s.to_string()));
    let stderr = ldam_fails(&args);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in ["already holds a run", "--resume", "--force"] {
        assert!(stderr.contains(needle), "missing '{needle}': {stderr}");
    }
    assert!(
        snapshot(&out) == before,
        "a refused run changed the folder's files"
    );

    args.push("--force".into());
    ldam_ok(&args);
    // The folder now holds the second run: two epochs, seed 3, new weights.
    assert_eq!(metrics_rows(&out).len(), 2);
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["settings"]["epochs"], 2);
    assert_eq!(report["settings"]["seed"], 3);
    let checkpoint = Checkpoint::load(&out).unwrap();
    assert_eq!(checkpoint.progress.epoch, 2);
    assert_eq!(checkpoint.progress.records.len(), 2);
    assert_ne!(
        std::fs::read(out.join("model.onnx")).unwrap(),
        before[Path::new("model.onnx")],
        "model.onnx was not replaced"
    );
    let stray: Vec<_> = snapshot(&out)
        .into_keys()
        .filter(|k| k.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
/// A forced restart that stops early must not present the replaced run's model
/// and reports as the folder's.
fn train_force_removes_the_old_runs_results_before_training_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data, &MLP_TRAIN, &MLP_TEST, 28);
    let model = patch(&mlp(), &MLP_TRAIN, &tmp.path().join("mlp.ldam.onnx"), &[]);
    let out = tmp.path().join("run");
    train(
        &model,
        &data,
        &out,
        &["--epochs", "1", "--batch-size", "64"],
    );
    assert!(out.join("model.onnx").is_file());

    // Start over with a long run and stop it once it has begun.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(["train", &p(&model), "--train", &p(&data), "--out", &p(&out)])
        .args([
            "--quiet",
            "--force",
            "--epochs",
            "400",
            "--batch-size",
            "64",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Checkpoint::load(&out).map_or(true, |c| c.progress.settings["epochs"] != 400) {
        assert!(child.try_wait().unwrap().is_none(), "the forced run ended");
        assert!(Instant::now() < deadline, "the forced run did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for stale in ["model.onnx", "report.json", "curves.png", "per_class.png"] {
        assert!(
            !out.join(stale).exists(),
            "{stale} of the replaced run is still in the folder"
        );
    }
}

// ---------------------------------------------------------------------------
// SIGKILL during checkpoint writes

/// Waits until the checkpoint in `run` is past `epochs_done` epochs; false when
/// the process ended first.
fn wait_for_epoch(child: &mut std::process::Child, run: &Path, epochs_done: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if let Ok(c) = Checkpoint::load(run) {
            if c.progress.epoch > epochs_done {
                return true;
            }
        }
        assert!(Instant::now() < deadline, "no progress within 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigkill_during_frequent_checkpoint_writes_keeps_a_loadable_checkpoint_and_resume_ends_at_the_uninterrupted_weights(
) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // 64 images in one batch: a step and a checkpoint write every epoch, so
    // much of the run is spent writing checkpoints.
    let counts = [10, 9, 8, 7, 6, 6, 5, 5, 4, 4];
    image_folder(&data, &counts, &[2; 10], 28);
    let model = patch(&mlp(), &counts, &tmp.path().join("mlp.ldam.onnx"), &[]);
    let epochs = 40;
    let settings = [
        "--epochs".to_string(),
        epochs.to_string(),
        "--batch-size".into(),
        "64".into(),
        "--eval-every".into(),
        "1000".into(),
        "--lr".into(),
        "0.05".into(),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let whole = tmp.path().join("whole");
    train(&model, &data, &whole, &settings);

    let killed = tmp.path().join("killed");
    let mut args = vec![
        "train".to_string(),
        p(&model),
        "--train".into(),
        p(&data),
        "--out".into(),
        p(&killed),
        "--quiet".into(),
    ];
    args.extend(settings.iter().map(|s| s.to_string()));
    let mut epoch_at_kill = 0;
    let mut kills = 0;
    // Kill at staggered moments after an epoch's checkpoint, so some kills
    // land inside the next write (checkpoint or metrics.csv).
    for delay_us in [0u64, 700, 1500, 3000, 5000, 8000, 12000, 200, 2500, 6500] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if !wait_for_epoch(&mut child, &killed, epoch_at_kill) {
            child.wait().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_micros(delay_us));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let checkpoint = Checkpoint::load(&killed)
            .unwrap_or_else(|e| panic!("kill {kills}: the checkpoint does not load: {e}"));
        assert!(
            checkpoint.progress.epoch > epoch_at_kill,
            "kill {kills}: the checkpoint went back to epoch {}",
            checkpoint.progress.epoch
        );
        assert_eq!(checkpoint.progress.records.len(), checkpoint.progress.epoch);
        epoch_at_kill = checkpoint.progress.epoch;
        if epoch_at_kill >= epochs {
            break;
        }
        args = vec![
            "train".into(),
            "--quiet".into(),
            "--resume".into(),
            p(&killed),
        ];
    }
    assert!(kills >= 3, "only {kills} kills before the run ended");
    // Kills inside a write leave its temporary file (named after the target).
    let leftovers = snapshot(&killed)
        .into_keys()
        .filter(|k| k.to_string_lossy().ends_with(".tmp"))
        .count();
    eprintln!("{kills} kills, last at epoch {epoch_at_kill}; {leftovers} temporary files left");

    // A half-written temporary checkpoint beside the real one does not matter.
    let partial = std::fs::read(Checkpoint::path(&killed)).unwrap();
    std::fs::write(
        killed.join(".checkpoint.onnx.zz9x7q.tmp"),
        &partial[..partial.len() / 3],
    )
    .unwrap();
    ldam_ok(["train", "--quiet", "--resume", &p(&killed)]);
    let (a, b) = (
        Checkpoint::load(&whole).unwrap(),
        Checkpoint::load(&killed).unwrap(),
    );
    assert_eq!(b.progress.epoch, epochs);
    assert_same_state(&a, &b, "killed and resumed vs whole");
    let losses = |c: &Checkpoint| -> Vec<(u64, u64)> {
        c.progress
            .records
            .iter()
            .map(|r| (r.train_loss.to_bits(), r.train_acc.to_bits()))
            .collect()
    };
    assert_eq!(losses(&a), losses(&b), "per-epoch training records differ");
    assert_eq!(
        std::fs::read(whole.join("model.onnx")).unwrap(),
        std::fs::read(killed.join("model.onnx")).unwrap()
    );
}

// ---------------------------------------------------------------------------
// inspect

/// Op type -> count over `graph`, counted here.
fn op_histogram(graph: &GraphProto) -> BTreeMap<String, u64> {
    let mut ops = BTreeMap::new();
    for node in &graph.node {
        *ops.entry(node.op_type().to_string()).or_insert(0) += 1;
    }
    ops
}

fn pairs(value: &Value) -> Vec<(String, Value)> {
    value
        .as_array()
        .expect("an array of pairs")
        .iter()
        .map(|pair| (pair[0].as_str().expect("name").to_string(), pair[1].clone()))
        .collect()
}

fn inspect_json(path: &Path) -> Value {
    let stdout = ldam_ok(["inspect", &p(path), "--format", "json"]);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("inspect JSON: {e}\n{stdout}"))
}

/// `float32 [N, 1, 28, 28]`: a value's declared element type and dims, read
/// here from the proto.
fn declared_type(value: &ValueInfoProto) -> String {
    use ldam_onnx::onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
    use ldam_onnx::onnx::proto::type_proto::Value as TypeValue;
    let Some(TypeValue::TensorType(tensor)) = value.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        panic!("{} is not a tensor", value.name());
    };
    let element = match tensor.elem_type() {
        1 => "float32",
        7 => "int64",
        other => panic!("element type {other} of {}", value.name()),
    };
    let dims: Vec<String> = tensor
        .shape
        .as_ref()
        .expect("a declared shape")
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(DimValue::DimValue(v)) => v.to_string(),
            Some(DimValue::DimParam(name)) => name.clone(),
            None => "?".to_string(),
        })
        .collect();
    format!("{element} [{}]", dims.join(", "))
}

/// The fields of `inspect --format json` that any model has, against the file.
fn check_common_fields(json: &Value, file: &Path) {
    let model = model(file);
    let graph = model.graph.as_ref().unwrap();
    assert_eq!(json["ir_version"], model.ir_version());
    assert_eq!(json["file"], file.file_name().unwrap().to_str().unwrap());
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let described = |values: &[&ValueInfoProto]| -> Vec<(String, Value)> {
        values
            .iter()
            .map(|v| (v.name().to_string(), Value::from(declared_type(v))))
            .collect()
    };
    let inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name()))
        .collect();
    assert_eq!(pairs(&json["inputs"]), described(&inputs));
    let outputs: Vec<&ValueInfoProto> = graph.output.iter().collect();
    assert_eq!(pairs(&json["outputs"]), described(&outputs));
    assert_eq!(json["nodes"], graph.node.len());
    let ops: BTreeMap<String, u64> = pairs(&json["ops"])
        .into_iter()
        .map(|(op, n)| (op, n.as_u64().unwrap()))
        .collect();
    assert_eq!(ops, op_histogram(graph));
    let float: Vec<_> = graph
        .initializer
        .iter()
        .filter(|t| is_float_type(t.data_type()))
        .collect();
    let elements: i64 = float.iter().map(|t| t.dims.iter().product::<i64>()).sum();
    assert_eq!(json["parameters"]["tensors"], float.len());
    assert_eq!(json["parameters"]["elements"], elements);
    assert_eq!(json["parameters"]["bytes"], 4 * elements);
    assert_eq!(json["head"]["status"], "found");
    assert_eq!(json["head"]["classes"], 10);
}

#[test]
fn inspect_json_reports_the_models_inputs_ops_parameters_head_and_patch() {
    let tmp = tempfile::tempdir().unwrap();
    let json = inspect_json(&mlp());
    check_common_fields(&json, &mlp());
    assert_eq!(
        json["ops"],
        serde_json::json!([["Gemm", 3], ["Relu", 2], ["Flatten", 1]])
    );
    assert_eq!(json["parameters"]["elements"], 109_386);
    assert_eq!(json["opsets"], serde_json::json!([["ai.onnx", 17]]));
    assert_eq!(json["head"]["logits"], "logits");
    assert!(json["ldam"].is_null());

    let counts = [500, 300, 200, 100, 80, 50, 30, 19, 10, 5];
    let patched = patch(
        &mlp(),
        &counts,
        &tmp.path().join("mlp.ldam.onnx"),
        &["--max-m", "0.4", "--drw-epoch", "7", "--beta", "0.999"],
    );
    let json = inspect_json(&patched);
    check_common_fields(&json, &patched);
    // The contract's additions, as the README's table states them.
    let types = |key: &str| -> Vec<(String, String)> {
        pairs(&json[key])
            .into_iter()
            .map(|(n, t)| (n, t.as_str().unwrap().to_string()))
            .collect()
    };
    let owned = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    assert_eq!(
        types("inputs"),
        owned(&[
            ("input", "float32 [N, 1, 28, 28]"),
            ("labels", "int64 [N]"),
            ("epoch", "int64 []")
        ])
    );
    assert_eq!(
        types("outputs"),
        owned(&[("logits", "float32 [N, 10]"), ("loss", "float32 []")])
    );
    let ldam = &json["ldam"];
    assert_eq!(ldam["class_counts"], serde_json::json!(counts));
    assert_eq!(ldam["loss"], "ldam");
    assert_eq!(ldam["reweight"], "drw");
    assert_eq!(ldam["drw_epoch"], 7);
    assert_eq!(ldam["max_m"], 0.4);
    assert_eq!(ldam["beta"], 0.999);
    assert_eq!(ldam["head"], "cosine");
    let margins: Vec<f64> = serde_json::from_value(ldam["margins"].clone()).unwrap();
    for (got, want) in margins.iter().zip(reference_margins(&counts, 0.4)) {
        assert!((got - want).abs() < 1e-12, "margin {got} vs {want}");
    }
    // Effective-number weights (1 - beta) / (1 - beta^n), normalised to sum to C.
    let raw: Vec<f64> = counts
        .iter()
        .map(|&n| (1.0 - 0.999) / (1.0 - 0.999f64.powf(n as f64)))
        .collect();
    let total: f64 = raw.iter().sum();
    let weights: Vec<f64> = serde_json::from_value(ldam["drw_weights"].clone()).unwrap();
    for (got, raw) in weights.iter().zip(&raw) {
        let want = raw / total * 10.0;
        assert!((got - want).abs() < 1e-9, "weight {got} vs {want}");
    }
    let graph = model(&patched).graph.unwrap();
    let appended = graph
        .node
        .iter()
        .filter(|n| n.name().starts_with("ldam/"))
        .count();
    assert!(appended > 0);
    assert_eq!(ldam["appended_nodes"], appended);
}

#[test]
fn inspect_dot_is_a_well_formed_graph_naming_every_node_and_highlighting_the_patch() {
    let tmp = tempfile::tempdir().unwrap();
    let patched = patch(&mlp(), &MLP_TRAIN, &tmp.path().join("mlp.ldam.onnx"), &[]);
    let graph = model(&patched).graph.unwrap();
    let dot = ldam_ok(["inspect", &p(&patched), "--format", "dot"]);
    let lines: Vec<&str> = dot.lines().collect();
    assert!(lines[0].starts_with("digraph "), "{}", lines[0]);
    assert!(lines[0].ends_with('{'));
    assert_eq!(*lines.last().unwrap(), "}");
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());

    // Every statement is a graph attribute `key=value;`, a declaration
    // `id [attrs];` or an edge `a -> b;` between declared ids; quotes balance.
    let mut labels: HashMap<String, String> = HashMap::new();
    let mut filled: HashSet<String> = HashSet::new();
    let mut edges: Vec<(String, String)> = Vec::new();
    for line in &lines[1..lines.len() - 1] {
        let line = line.trim();
        assert!(line.ends_with(';'), "statement without ';': {line}");
        let body = &line[..line.len() - 1];
        if let Some((from, to)) = body.split_once(" -> ") {
            edges.push((from.to_string(), to.to_string()));
            continue;
        }
        let Some((id, attrs)) = body.split_once(" [") else {
            // A graph attribute such as `rankdir=TB`.
            let (key, value) = body.split_once('=').expect("a declaration or attribute");
            assert!(!key.contains(' ') && !value.is_empty(), "{line}");
            continue;
        };
        assert!(attrs.ends_with(']'), "{line}");
        let unescaped = attrs.matches('"').count() - attrs.matches("\\\"").count();
        assert_eq!(unescaped % 2, 0, "unbalanced quotes: {line}");
        if let Some(start) = attrs.find("label=\"") {
            let rest = &attrs[start + 7..];
            let end = rest.find('"').expect("closed label");
            labels.insert(id.to_string(), rest[..end].to_string());
        }
        if attrs.contains("style=filled") {
            filled.insert(id.to_string());
        }
    }
    for (from, to) in &edges {
        assert!(
            labels.contains_key(from) && labels.contains_key(to),
            "edge {from} -> {to} between undeclared nodes"
        );
    }
    // One box per graph node, labelled "op\nname"; the appended ones filled.
    for (i, node) in graph.node.iter().enumerate() {
        let id = format!("n{i}");
        assert_eq!(
            labels.get(&id),
            Some(&format!("{}\\n{}", node.op_type(), node.name())),
            "node {i}"
        );
        assert_eq!(filled.contains(&id), node.name().starts_with("ldam/"));
    }
    // Every data edge appears: from the producing node (or graph input) to its
    // consumer.
    let mut producer: HashMap<&str, String> = HashMap::new();
    for (id, label) in &labels {
        if id.starts_with("in_") {
            producer.insert(
                graph
                    .input
                    .iter()
                    .find(|i| i.name() == label)
                    .unwrap()
                    .name(),
                id.clone(),
            );
        }
    }
    let edge_set: HashSet<(String, String)> = edges.iter().cloned().collect();
    for (i, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            if let Some(src) = producer.get(input.as_str()) {
                assert!(
                    edge_set.contains(&(src.clone(), format!("n{i}"))),
                    "no edge for '{input}' into node {i}"
                );
            }
        }
        for output in &node.output {
            producer.insert(output, format!("n{i}"));
        }
    }
    let output_labels: HashSet<&String> = labels
        .iter()
        .filter(|(id, _)| id.starts_with("out_"))
        .map(|(_, l)| l)
        .collect();
    for output in &graph.output {
        assert!(output_labels.contains(&output.name().to_string()));
    }
    assert!(!filled.is_empty());
}

// ---------------------------------------------------------------------------
// Counts from files

#[test]
fn class_counts_file_and_labels_file_set_the_recorded_counts_and_the_margins() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let check = |patched: &Path, counts: &[u64]| {
        let m = model(patched);
        assert_eq!(meta(&m, "ldam_onnx.class_counts"), join(counts));
        let margins = initializer(&m, "ldam.margins");
        let reference = reference_margins(counts, 0.5);
        assert_eq!(margins.len(), 10);
        for (got, want) in margins.iter().zip(&reference) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    };

    let counts = [7, 5, 30, 2, 2, 1, 9, 1, 4, 1];
    std::fs::write(dir.join("counts.json"), format!("[{}]\n", join(&counts))).unwrap();
    let text: String = counts.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(dir.join("counts.txt"), format!("# per class\n{text}")).unwrap();
    for file in ["counts.json", "counts.txt"] {
        let out = dir.join(format!("{file}.onnx"));
        ldam_ok([
            "patch",
            &p(&mlp()),
            "--class-counts-file",
            &p(&dir.join(file)),
            "-o",
            &p(&out),
        ]);
        check(&out, &counts);
    }

    // Labels: their histogram, computed here.
    let mut rng = Rng::new(9);
    let labels: Vec<i64> = (0..500)
        .map(|i| {
            if i < 10 {
                i
            } else {
                (rng.below(100) as i64).min(rng.below(10) as i64)
            }
        })
        .collect();
    let mut histogram = [0u64; 10];
    for &l in &labels {
        histogram[l as usize] += 1;
    }
    let text: String = labels.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("labels.txt"), text).unwrap();
    let mut npz = NpzWriter::new(std::fs::File::create(dir.join("labels.npz")).unwrap());
    npz.add_array("y", &Array1::from_vec(labels.clone()))
        .unwrap();
    npz.finish().unwrap();
    for file in ["labels.txt", "labels.npz"] {
        let out = dir.join(format!("{file}.onnx"));
        ldam_ok([
            "patch",
            &p(&mlp()),
            "--labels-file",
            &p(&dir.join(file)),
            "-o",
            &p(&out),
        ]);
        check(&out, &histogram);
    }
}

// ---------------------------------------------------------------------------
// Contract name flags

#[test]
fn contract_name_flags_name_the_new_inputs_and_outputs_and_the_graph_runs_and_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let renamed = patch(
        &mlp(),
        &MLP_TRAIN,
        &tmp.path().join("renamed.onnx"),
        &[
            "--labels-name",
            "y_true",
            "--epoch-name",
            "ep",
            "--loss-name",
            "L",
            "--logits-output-name",
            "scores",
            "--drw-epoch",
            "1",
        ],
    );
    let default = patch(
        &mlp(),
        &MLP_TRAIN,
        &tmp.path().join("default.onnx"),
        &["--drw-epoch", "1"],
    );
    let m = model(&renamed);
    let graph = m.graph.as_ref().unwrap();
    let inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name()).collect();
    assert_eq!(inputs, ["input", "y_true", "ep"]);
    assert_eq!(outputs, ["logits", "L", "scores"]);
    for (key, name) in [
        ("labels_input", "y_true"),
        ("epoch_input", "ep"),
        ("loss_output", "L"),
        ("logits_output", "scores"),
    ] {
        assert_eq!(meta(&m, &format!("ldam_onnx.{key}")), name);
    }

    // Same loss as the default names on the same batch, before and after the
    // DRW epoch (so `ep` really reaches the weights).
    let n = 16;
    let mut rng = Rng::new(4);
    let x = Data::F32(vec![n, 1, 28, 28], rng.floats(n as usize * 784, -1.0, 1.0));
    let labels: Vec<i64> = (0..n).map(|i| i % 10).collect();
    let mut losses = Vec::new();
    for epoch in [0, 1] {
        let ours = common::run(
            &m,
            &[
                ("input", x.clone()),
                ("y_true", Data::I64(vec![n], labels.clone())),
                ("ep", Data::I64(vec![], vec![epoch])),
            ],
        );
        let theirs = common::run(
            &model(&default),
            &[
                ("input", x.clone()),
                ("labels", Data::I64(vec![n], labels.clone())),
                ("epoch", Data::I64(vec![], vec![epoch])),
            ],
        );
        assert_eq!(ours["L"].f32(), theirs["loss"].f32(), "epoch {epoch}");
        assert_eq!(ours["scores"].f32(), theirs["logits"].f32());
        assert_eq!(ours["scores"].f32(), ours["logits"].f32());
        losses.push(ours["L"].f32()[0]);
    }
    assert_ne!(losses[0], losses[1], "the epoch input changes nothing");

    // train reads the names from the model: a run succeeds and model.onnx
    // drops the loss and the new inputs.
    let data = tmp.path().join("data");
    image_folder(&data, &MLP_TRAIN, &MLP_TEST, 28);
    let out = tmp.path().join("run");
    train(
        &renamed,
        &data,
        &out,
        &["--epochs", "2", "--batch-size", "64"],
    );
    let exported = model(&out.join("model.onnx"));
    let graph = exported.graph.as_ref().unwrap();
    let inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
    assert_eq!(inputs, ["input"]);
    assert!(graph.output.iter().all(|o| o.name() != "L"));
    assert!(
        read_json(&out.join("report.json"))["top1"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

// ---------------------------------------------------------------------------
// train: input flags

/// `x [N, 3, side, side] -> Flatten -> Gemm -> logits [N, classes]`, seeded weights.
fn rgb_linear_model(side: i64, classes: i64) -> ModelProto {
    let features = 3 * side * side;
    let mut rng = Rng::new(17);
    let batch = Dim::Symbolic("N".into());
    let graph = GraphProto {
        name: Some("rgb_linear".into()),
        node: vec![
            common::node("Flatten", &["x"], &["flat"], vec![attr_int("axis", 1)]),
            common::node(
                "Gemm",
                &["flat", "fc.weight", "fc.bias"],
                &["logits"],
                vec![attr_int("transB", 1)],
            ),
        ],
        initializer: vec![
            f32_tensor(
                "fc.weight",
                &[classes, features],
                &rng.floats((classes * features) as usize, -0.1, 0.1),
            ),
            f32_tensor("fc.bias", &[classes], &vec![0.0; classes as usize]),
        ],
        input: vec![value_info(
            "x",
            FLOAT,
            &[
                batch.clone(),
                Dim::Fixed(3),
                Dim::Fixed(side),
                Dim::Fixed(side),
            ],
        )],
        output: vec![value_info("logits", FLOAT, &[batch, Dim::Fixed(classes)])],
        ..Default::default()
    };
    common::model_from_graph(graph, 17)
}

#[test]
fn grey_to_rgb_and_normalize_means_stds_give_the_network_the_input_computed_here() {
    let tmp = tempfile::tempdir().unwrap();
    let side = 12;
    let counts = [12, 10, 8, 6];
    let data = tmp.path().join("data");
    let (_, test) = image_folder(&data, &counts, &[6; 4], side);
    let original = tmp.path().join("rgb.onnx");
    save(
        &rgb_linear_model(side as i64, 4),
        None,
        &original,
        SaveOptions::default(),
    )
    .unwrap();
    let model_file = patch(&original, &counts, &tmp.path().join("rgb.ldam.onnx"), &[]);
    let normalize = "0.1,0.2,0.3/0.5,0.6,0.7";
    let flags = [
        "--epochs",
        "3",
        "--batch-size",
        "12",
        "--augment",
        "none",
        "--normalize",
        normalize,
    ];

    let mut args = vec![
        "train".to_string(),
        p(&model_file),
        "--train".into(),
        p(&data),
        "--out".into(),
        p(&tmp.path().join("refused")),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    let stderr = ldam_fails(&args);
    assert!(stderr.contains("--grey-to-rgb"), "{stderr}");

    let out = tmp.path().join("run");
    train(
        &model_file,
        &data,
        &out,
        &[&flags[..], &["--grey-to-rgb"]].concat(),
    );
    let report = read_json(&out.join("report.json"));
    let resolved = &report["settings"]["resolved"]["normalization"];
    let floats = |v: &Value| -> Vec<f32> { serde_json::from_value(v.clone()).unwrap() };
    assert_eq!(floats(&resolved["mean"]), [0.1, 0.2, 0.3]);
    assert_eq!(floats(&resolved["std"]), [0.5, 0.6, 0.7]);
    let exported = out.join("model.onnx");
    assert_eq!(
        meta(&model(&exported), "ldam_onnx.input_normalization"),
        normalize
    );
    // The exported model on grey images repeated into three channels, each
    // normalised with its own mean and std, scores what the run reports.
    let input = test.input(3, &[0.1, 0.2, 0.3], &[0.5, 0.6, 0.7]);
    let accuracy = onnx_accuracy(&exported, "x", input, &test.labels);
    assert_eq!(accuracy, report["top1"].as_f64().unwrap());
    assert!(accuracy > 25.0, "the run learned nothing: {accuracy}%");
}

// ---------------------------------------------------------------------------
// train: schedule flags

#[test]
fn eval_every_writes_test_accuracy_only_at_the_evaluated_epochs_and_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    image_folder(&data, &MLP_TRAIN, &MLP_TEST, 28);
    let model_file = patch(&mlp(), &MLP_TRAIN, &tmp.path().join("mlp.ldam.onnx"), &[]);
    let out = tmp.path().join("run");
    train(
        &model_file,
        &data,
        &out,
        &[
            "--epochs",
            "5",
            "--eval-every",
            "2",
            "--batch-size",
            "64",
            "--augment",
            "none",
        ],
    );
    let rows = metrics_rows(&out);
    assert_eq!(rows.len(), 5);
    for (epoch, row) in rows.iter().enumerate() {
        assert_eq!(row[0], epoch.to_string());
        let evaluated = epoch == 1 || epoch == 3 || epoch == 4;
        // test_acc, and the medium and few groups (no class has over 100
        // training images, so `many` stays empty).
        for column in [4, 6, 7] {
            assert_eq!(
                !row[column].is_empty(),
                evaluated,
                "epoch {epoch}, column {column}: {row:?}"
            );
        }
        assert!(row[5].is_empty(), "{row:?}");
        assert!(!row[2].is_empty() && !row[3].is_empty());
    }
    let report = read_json(&out.join("report.json"));
    let last: f64 = rows[4][4].parse().unwrap();
    assert_eq!(last, report["top1"].as_f64().unwrap());
    assert_eq!(report["settings"]["eval_every"], 2);
}

/// Train accuracy of each epoch from `metrics.csv`.
fn train_accuracies(run: &Path) -> Vec<(f64, f64)> {
    metrics_rows(run)
        .iter()
        .map(|r| (r[2].parse().unwrap(), r[3].parse().unwrap()))
        .collect()
}

#[test]
fn sampler_choice_sets_the_class_mix_of_each_epoch() {
    // A linear model that always predicts class 0 (zero weights, bias [4, 0],
    // a learning rate too small to change that): the training accuracy of an
    // epoch is the share of class-0 examples it visited, and its loss follows.
    let tmp = tempfile::tempdir().unwrap();
    let (n0, n1) = (180, 20);
    let mut rng = Rng::new(21);
    let mut labels: Vec<i64> = [vec![0; n0], vec![1; n1]].concat();
    for i in (1..labels.len()).rev() {
        labels.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_features_npz(
        &data.join("train.npz"),
        &rng.floats(labels.len() * 4, -1.0, 1.0),
        4,
        &labels,
    );
    write_features_npz(
        &data.join("test.npz"),
        &rng.floats(40, -1.0, 1.0),
        4,
        &[0, 1].repeat(5),
    );
    let original = tmp.path().join("linear.onnx");
    save(
        &common::linear_model(&[0.0; 8], &[4.0, 0.0], 4, 2, 17),
        None,
        &original,
        SaveOptions::default(),
    )
    .unwrap();
    let model_file = patch(
        &original,
        &[n0 as u64, n1 as u64],
        &tmp.path().join("linear.ldam.onnx"),
        &[
            "--loss",
            "ce",
            "--reweight",
            "none",
            "--head",
            "keep",
            "--drw-epoch",
            "1",
        ],
    );
    let run = |sampler: &str| -> Vec<(f64, f64)> {
        let out = tmp.path().join(sampler);
        train(
            &model_file,
            &data,
            &out,
            &[
                "--sampler",
                sampler,
                "--epochs",
                "2",
                "--batch-size",
                "50",
                "--augment",
                "none",
                "--lr",
                "1e-9",
            ],
        );
        train_accuracies(&out)
    };
    // CE of logits [4, 0]: log(1 + e^-4) for class 0, 4 more for class 1.
    let ce0 = (1.0 + (-4.0f64).exp()).ln();
    let check_loss = |(loss, accuracy): (f64, f64)| {
        let expected = ce0 + 4.0 * (1.0 - accuracy / 100.0);
        assert!((loss - expected).abs() < 1e-4, "loss {loss} vs {expected}");
    };
    let balanced = |accuracy: f64| (35.0..65.0).contains(&accuracy);

    let instance = run("instance");
    assert_eq!(
        instance.iter().map(|e| e.1).collect::<Vec<_>>(),
        [90.0, 90.0]
    );
    let rs = run("class-balanced");
    assert!(rs.iter().all(|e| balanced(e.1)), "{rs:?}");
    let drs = run("deferred");
    assert_eq!(drs[0].1, 90.0, "{drs:?}");
    assert!(balanced(drs[1].1), "{drs:?}");
    for epoch in instance.into_iter().chain(rs).chain(drs) {
        check_loss(epoch);
    }
}

#[test]
fn no_shuffle_trains_in_file_order_exactly_as_the_compiled_step_fed_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let (features, classes, n, batch) = (6usize, 3usize, 12usize, 4usize);
    let mut rng = Rng::new(33);
    let labels: Vec<i64> = vec![0, 1, 2, 0, 0, 1, 2, 1, 0, 2, 1, 0];
    let x = rng.floats(n * features, -1.0, 1.0);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_features_npz(&data.join("train.npz"), &x, features, &labels);
    write_features_npz(&data.join("test.npz"), &x, features, &labels);
    let original = tmp.path().join("linear.onnx");
    let weights = rng.floats(classes * features, -0.5, 0.5);
    save(
        &common::linear_model(&weights, &[0.0; 3], features as i64, classes as i64, 17),
        None,
        &original,
        SaveOptions::default(),
    )
    .unwrap();
    let model_file = patch(
        &original,
        &[5, 4, 3],
        &tmp.path().join("linear.ldam.onnx"),
        &[],
    );
    let flags = |seed: &str, no_shuffle: bool| -> Vec<String> {
        let mut f: Vec<String> = [
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--lr",
            "0.5",
            "--warmup-epochs",
            "0",
            "--lr-steps",
            "10",
            "--augment",
            "none",
            "--seed",
            seed,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if no_shuffle {
            f.push("--no-shuffle".into());
        }
        f
    };
    let run = |name: &str, seed: &str, no_shuffle: bool| -> Checkpoint {
        let out = tmp.path().join(name);
        let f = flags(seed, no_shuffle);
        train(
            &model_file,
            &data,
            &out,
            &f.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        Checkpoint::load(&out).unwrap()
    };
    let ordered = run("ordered1", "1", true);
    assert_same_state(
        &ordered,
        &run("ordered2", "2", true),
        "--no-shuffle, seeds 1 and 2",
    );
    let (s1, s2) = (run("shuffled1", "1", false), run("shuffled2", "2", false));
    let differs = s1
        .state
        .iter()
        .any(|(name, t)| f32_values(t).unwrap() != f32_values(&s2.state[name]).unwrap());
    assert!(
        differs,
        "shuffled runs with other seeds trained identically"
    );

    // The same three steps by hand: the compiled step, fed the batches in
    // file order at lr 0.5, epoch 0.
    let step_file = tmp.path().join("linear.train.onnx");
    ldam_ok(["compile", &p(&model_file), "-o", &p(&step_file)]);
    let step = model(&step_file);
    let names: Vec<String> = state_list(&step);
    let by_hand = |order: &[usize]| -> HashMap<String, Vec<f32>> {
        // The initial state: the companion file the step names.
        let initial = ldam_onnx::compile::files::initial_state(
            &ldam_onnx::onnx::io::load(&step_file).unwrap(),
        )
        .unwrap();
        let mut state: HashMap<String, Vec<f32>> = names
            .iter()
            .map(|s| (s.clone(), f32_values(&initial[s]).unwrap()))
            .collect();
        let dims: HashMap<String, Vec<i64>> = initial
            .iter()
            .map(|(name, t)| (name.clone(), t.dims.clone()))
            .collect();
        for &b in order {
            let rows = b * batch..(b + 1) * batch;
            let mut inputs: Vec<(&str, Data)> = vec![
                (
                    "x",
                    Data::F32(
                        vec![batch as i64, features as i64],
                        x[rows.start * features..rows.end * features].to_vec(),
                    ),
                ),
                (
                    "labels",
                    Data::I64(vec![batch as i64], labels[rows].to_vec()),
                ),
                ("epoch", Data::I64(vec![], vec![0])),
                ("lr", Data::F32(vec![], vec![0.5])),
            ];
            for name in &names {
                inputs.push((name, Data::F32(dims[name].clone(), state[name].clone())));
            }
            let outputs = common::run(&step, &inputs);
            for name in &names {
                state.insert(
                    name.clone(),
                    outputs[&format!("{name}.next")].f32().to_vec(),
                );
            }
        }
        state
    };
    let in_order = by_hand(&[0, 1, 2]);
    let reversed = by_hand(&[2, 1, 0]);
    assert_eq!(ordered.state.len(), names.len());
    let mut reversed_gap = 0.0f64;
    for name in &names {
        let trained = f32_values(&ordered.state[name]).unwrap();
        let gap = max_abs_diff(&trained, &in_order[name]);
        assert!(
            gap <= 1e-6,
            "{name}: the run and the steps by hand differ by {gap}"
        );
        reversed_gap = worst([reversed_gap, max_abs_diff(&trained, &reversed[name])]);
    }
    assert!(
        reversed_gap > 1e-4,
        "the order of the batches changes nothing"
    );
}

// ---------------------------------------------------------------------------
// eval with the recorded normalisation

#[test]
fn eval_without_flags_uses_the_recorded_normalization_and_reproduces_the_runs_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (train_set, _) = image_folder(&data, &MLP_TRAIN, &MLP_TEST, 28);
    let model_file = patch(&mlp(), &MLP_TRAIN, &tmp.path().join("mlp.ldam.onnx"), &[]);
    let out = tmp.path().join("run");
    train(
        &model_file,
        &data,
        &out,
        &["--epochs", "4", "--batch-size", "32", "--augment", "none"],
    );
    let reported = read_json(&out.join("report.json"))["top1"]
        .as_f64()
        .unwrap();
    assert!(reported > 50.0, "the run learned too little: {reported}%");

    // The recorded normalisation is the training set's mean and population
    // std of pixels / 255, computed here.
    let exported = out.join("model.onnx");
    let values: Vec<f64> = train_set
        .pixels
        .iter()
        .map(|&v| f64::from(f32::from(v) / 255.0))
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
    let recorded = meta(&model(&exported), "ldam_onnx.input_normalization");
    let (m, s) = recorded.split_once('/').unwrap();
    assert!(
        (m.parse::<f64>().unwrap() - mean).abs() < 1e-5,
        "{recorded} vs mean {mean}"
    );
    assert!(
        (s.parse::<f64>().unwrap() - std).abs() < 1e-5,
        "{recorded} vs std {std}"
    );

    let eval_dir = tmp.path().join("eval");
    let stdout = ldam_ok([
        "eval",
        &p(&exported),
        "--test",
        &p(&data),
        "--out",
        &p(&eval_dir),
    ]);
    assert!(
        stdout.contains(&format!("top-1 accuracy {reported:.2}%")),
        "{stdout}"
    );
    let evaluated = read_json(&eval_dir.join("report.json"));
    assert_eq!(evaluated["top1"].as_f64().unwrap(), reported);
    let used = &evaluated["settings"]["normalization"];
    let first = |v: &Value| v[0].as_f64().unwrap() as f32;
    assert_eq!(
        format!("{}/{}", first(&used["mean"]), first(&used["std"])),
        recorded
    );
    assert_eq!(
        evaluated["class_counts"]["train"],
        serde_json::json!(MLP_TRAIN),
        "the recorded training counts"
    );

    let wrong_dir = tmp.path().join("wrong");
    ldam_ok([
        "eval",
        &p(&exported),
        "--test",
        &p(&data),
        "--normalize",
        "0/1000",
        "--out",
        &p(&wrong_dir),
    ]);
    // Inputs shrunk a thousandfold leave the biases to decide: the accuracy
    // falls, so the recorded normalisation is what made eval match.
    let wrong = read_json(&wrong_dir.join("report.json"));
    assert_eq!(
        wrong["settings"]["normalization"],
        serde_json::json!({"mean": [0.0], "std": [1000.0]})
    );
    let wrong = wrong["top1"].as_f64().unwrap();
    assert!(
        wrong < reported - 20.0,
        "--normalize 0/1000 scored {wrong}%, recorded {reported}%"
    );
}

// ---------------------------------------------------------------------------
// compile --freeze

#[test]
fn compile_freeze_leaves_frozen_parameters_out_of_the_step_and_updates_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let patched = patch(&mlp(), &MLP_TRAIN, &tmp.path().join("mlp.ldam.onnx"), &[]);
    let frozen_names = ["net.1.weight", "net.3.bias"];
    let frozen_file = tmp.path().join("frozen.train.onnx");
    let free_file = tmp.path().join("free.train.onnx");
    ldam_ok([
        "compile",
        &p(&patched),
        "-o",
        &p(&frozen_file),
        "--freeze",
        &frozen_names.join(","),
    ]);
    ldam_ok(["compile", &p(&patched), "-o", &p(&free_file)]);
    let (frozen, free) = (
        step_with_initial_state(&frozen_file),
        step_with_initial_state(&free_file),
    );
    assert_eq!(
        meta(&frozen, "ldam_onnx.train.frozen"),
        frozen_names.join(",")
    );
    let state_of = state_list;
    let frozen_state = state_of(&frozen);
    for name in frozen_names {
        assert!(state_of(&free).iter().any(|s| s == name));
        assert!(
            !frozen_state.iter().any(|s| s.starts_with(name)),
            "{name} is still state: {frozen_state:?}"
        );
        assert_eq!(
            initializer(&frozen, name),
            initializer(&model(&mlp()), name)
        );
    }

    // One step of each in ONNX Runtime on the same batch.
    let n = 32;
    let mut rng = Rng::new(8);
    let inputs = [
        (
            "input",
            Data::F32(vec![n, 1, 28, 28], rng.floats(n as usize * 784, 0.0, 1.0)),
        ),
        (
            "labels",
            Data::I64(vec![n], (0..n).map(|i| i % 10).collect()),
        ),
        ("epoch", Data::I64(vec![], vec![0])),
        ("lr", Data::F32(vec![], vec![0.1])),
    ];
    let frozen_out = common::run(&frozen, &inputs);
    let free_out = common::run(&free, &inputs);
    for name in frozen_names {
        assert!(!frozen_out.contains_key(&format!("{name}.next")));
        // Frozen: the step keeps the initial value; free: it moves.
        let moved = max_abs_diff(
            free_out[&format!("{name}.next")].f32(),
            &initializer(&free, name),
        );
        assert!(moved > 0.0, "{name} does not move even when free");
    }
    for name in frozen_state.iter().filter(|s| !s.ends_with(".momentum")) {
        let next = frozen_out[&format!("{name}.next")].f32();
        assert!(
            max_abs_diff(next, &initializer(&frozen, name)) > 0.0,
            "{name} did not change"
        );
        // Its gradient does not depend on whether other parameters are frozen.
        let gap = max_abs_diff(next, free_out[&format!("{name}.next")].f32());
        assert!(gap <= 1e-6, "{name}: frozen and free steps differ by {gap}");
    }

    // train --freeze: the exported weights keep the frozen values exactly.
    let data = tmp.path().join("data");
    image_folder(&data, &MLP_TRAIN, &MLP_TEST, 28);
    let out = tmp.path().join("run");
    train(
        &patched,
        &data,
        &out,
        &[
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--freeze",
            &frozen_names.join(","),
        ],
    );
    let (exported, original) = (model(&out.join("model.onnx")), model(&mlp()));
    for name in frozen_names {
        assert_eq!(
            initializer(&exported, name),
            initializer(&original, name),
            "{name}"
        );
    }
    for name in ["net.1.bias", "net.3.weight"] {
        assert!(
            max_abs_diff(&initializer(&exported, name), &initializer(&original, name)) > 0.0,
            "{name} was not trained"
        );
    }
}

#[test]
fn inspect_names_the_settings_of_the_la_and_vs_losses() {
    let tmp = tempfile::tempdir().unwrap();
    for (flags, text, key, value) in [
        (
            vec!["--loss", "la", "--la-tau", "0.5"],
            "loss: la (tau 0.5)",
            "la_tau",
            0.5,
        ),
        (
            vec!["--loss", "vs", "--vs-gamma", "0.3", "--vs-tau", "1.5"],
            "loss: vs (gamma 0.3, tau 1.5)",
            "vs_gamma",
            0.3,
        ),
    ] {
        let out = tmp.path().join(format!("{}.onnx", flags[1]));
        let patched = patch(&mlp(), &MLP_TRAIN, &out, &flags);
        let shown = ldam_ok(["inspect", &p(&patched)]);
        assert!(shown.contains(text), "{shown}");
        let json: Value =
            serde_json::from_str(&ldam_ok(["inspect", &p(&patched), "--format", "json"])).unwrap();
        assert_eq!(json["ldam"][key], value);
    }
}
