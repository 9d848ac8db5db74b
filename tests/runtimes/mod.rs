//! Running compiled steps in runtimes outside this process (tests/js_runtimes.rs,
//! tests/reference_evaluator.rs): installing them into git-ignored folders of the
//! repository, the files they read and write, and comparing their state with
//! native ONNX Runtime's.
//!
//! Files exchanged (the formats tests/js/run_step.mjs and tests/py/conformance.py
//! read and write): the batches of the steps as `batch.json` (`input_dims`,
//! `steps`: `[{epoch, lr, input, labels}]`, `input` a file of float32 little-endian
//! values beside it), and
//! state as one file of float32 little-endian values, the tensors in the step's
//! state order at the offsets a JSON layout lists.

#![allow(dead_code)]

use crate::common::tolerance::{norm, normwise_error, within, Accumulation};
use crate::common::{self, Rng};
use ldam_onnx::backend::Batch;
use ldam_onnx::compile::{compile, CompileOptions, StateKind, TrainStep};
use ldam_onnx::ldam::{contract, LossConfig};
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::types::{tensor_type, Dim};
use ldam_onnx::onnx::{ModelProto, TensorProto};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// CIFAR-10-LT counts at imbalance ratio 100, patched into every model.
pub const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
/// The DRW epoch of `LossConfig::reference` (the paper's 160): a step at this
/// epoch uses the effective-number class weights.
pub const DRW_EPOCH: i64 = 160;

/// Runs `command`, panicking with its stderr when it cannot start or fails.
/// `missing` says what to install when the program is not there.
pub fn run_checked(command: &mut Command, what: &str, missing: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?} ({e}); {missing}",
            command.get_program()
        )
    });
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

const NODE_MISSING: &str =
    "this test needs Node.js and npm on PATH (Debian: apt-get install nodejs npm)";
const PYTHON_MISSING: &str =
    "this test needs python3 with pip on PATH (Debian: apt-get install python3 python3-pip)";

/// `node`, checked to run.
pub fn node() -> Command {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        run_checked(
            Command::new("node").arg("--version"),
            "node --version",
            NODE_MISSING,
        );
    });
    Command::new("node")
}

/// The folder holding `node_modules` with the packages `tests/js/package.json`
/// pins, installed on first use into `.deps/npm` (`npm ci --ignore-scripts`:
/// onnxruntime-node's install script would fetch GPU binaries from a host CI cannot
/// reach; its CPU library is inside the package). A folder installed from another
/// package.json is replaced. The install goes to a scratch folder renamed into
/// place, so an interrupted one leaves nothing that looks installed.
pub fn npm_packages() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let repo = common::repo_dir();
        let pins = repo.join("tests/js");
        let manifest = std::fs::read(pins.join("package.json")).expect("tests/js/package.json");
        let dir = repo.join(".deps/npm");
        let installed = |dir: &Path| {
            std::fs::read(dir.join("package.json")).is_ok_and(|m| m == manifest)
                && dir.join("node_modules/.package-lock.json").is_file()
        };
        if installed(&dir) {
            return dir;
        }
        node();
        let scratch = repo.join(format!(".deps/npm.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).expect("create the npm scratch folder");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(pins.join(file), scratch.join(file))
                .unwrap_or_else(|e| panic!("copy tests/js/{file}: {e}"));
        }
        eprintln!(
            "installing tests/js/package.json's packages into {}",
            dir.display()
        );
        run_checked(
            Command::new("npm")
                .args([
                    "ci",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ])
                .current_dir(&scratch),
            "npm ci --ignore-scripts (installing onnxruntime-web and onnxruntime-node)",
            NODE_MISSING,
        );
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&scratch, &dir).is_err() {
            // Another test process installed it meanwhile.
            let _ = std::fs::remove_dir_all(&scratch);
            assert!(
                installed(&dir),
                "could not move the npm install into {}",
                dir.display()
            );
        }
        dir
    })
}

/// `python3` with the packages `tests/py/requirements.txt` pins on its path,
/// installed on first use into `.deps/python` when the versions found there differ.
pub fn python() -> Command {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let repo = common::repo_dir();
        let requirements = repo.join("tests/py/requirements.txt");
        let pins: Vec<(String, String)> = std::fs::read_to_string(&requirements)
            .expect("tests/py/requirements.txt")
            .lines()
            .filter_map(|line| line.split_once("=="))
            .map(|(name, version)| (name.trim().to_string(), version.trim().to_string()))
            .collect();
        let dir = repo.join(".deps/python");
        let probe = format!(
            "import importlib.metadata as m\nfor name in {:?}:\n    try: print(name, m.version(name))\n    except m.PackageNotFoundError: print(name, 'missing')",
            pins.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>()
        );
        let found = |dir: &Path| -> Vec<(String, String)> {
            let output = run_checked(
                Command::new("python3").args(["-c", &probe]).env("PYTHONPATH", dir),
                "python3 (finding the installed onnx, onnxruntime, numpy)",
                PYTHON_MISSING,
            );
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        if found(&dir) != pins {
            eprintln!("installing tests/py/requirements.txt into {}", dir.display());
            run_checked(
                Command::new("python3")
                    .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                    .args(["--no-compile", "--root-user-action=ignore", "--upgrade"])
                    .arg("--target")
                    .arg(&dir)
                    .arg("-r")
                    .arg(&requirements),
                "python3 -m pip install --target .deps/python -r tests/py/requirements.txt",
                PYTHON_MISSING,
            );
            let now = found(&dir);
            assert_eq!(now, pins, "{} holds other versions than the pins", dir.display());
        }
        dir
    });
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", dir);
    command
}

/// A bundled model patched with [`COUNTS`] (the reference LDAM-DRW settings) and
/// compiled with the default options, and the files written for it: the patched
/// model, the step and its companion state file.
pub struct Compiled {
    pub dir: tempfile::TempDir,
    pub patched: ModelProto,
    pub patched_path: PathBuf,
    pub step: TrainStep,
    pub step_path: PathBuf,
    pub companion_path: PathBuf,
}

pub fn compile_bundled(name: &str) -> Compiled {
    compile_model(name, &common::bundled(name))
}

/// `original` patched, compiled and written as [`compile_bundled`] does, its files
/// named after `name`.
pub fn compile_model(name: &str, original: &ModelProto) -> Compiled {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let patched = common::patch_with(original, LossConfig::reference(COUNTS.to_vec()));
    let patched_path = dir.path().join(format!("{name}.ldam.onnx"));
    io::save(
        &patched,
        None,
        &patched_path,
        SaveOptions::overwriting(false),
    )
    .expect("the patched model is written");
    let step = compile(&patched, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{name}: compile: {e}"));
    let step_path = dir.path().join(format!("{name}.train.onnx"));
    let companion_path = step
        .save(&step_path, None, SaveOptions::overwriting(false))
        .expect("the step and its state file are written");
    Compiled {
        dir,
        patched,
        patched_path,
        step,
        step_path,
        companion_path,
    }
}

/// `model` with its kinks smoothed (as tests/grad_models.rs does): Relu becomes
/// Tanh and MaxPool the AveragePool of the same window, so that no gate of the
/// network can flip between two runtimes' roundings.
pub fn smoothed(model: &ModelProto) -> ModelProto {
    let mut model = model.clone();
    let mut replaced = 0;
    for node in &mut model.graph.as_mut().expect("the model has a graph").node {
        match node.op_type() {
            "Relu" => node.op_type = Some("Tanh".into()),
            "MaxPool" => {
                node.op_type = Some("AveragePool".into());
                node.attribute.retain(|a| {
                    matches!(a.name(), "kernel_shape" | "strides" | "pads" | "auto_pad")
                });
                node.output.truncate(1);
            }
            _ => continue,
        }
        replaced += 1;
    }
    assert!(replaced > 0, "the model has kinks to smooth");
    model
}

/// One seeded batch per entry of `steps` (`(epoch, lr)`) for `model`'s data input
/// (its first input; the symbolic batch dim becomes `size`), written as
/// `batch.json` and `input-K.bin` in `dir`. Returns the path of `batch.json` and
/// the batches. A new batch each step keeps the loss away from zero, where its
/// relative rounding error would grow without bound, as it does when a network
/// fits one small batch.
pub fn write_batches(
    dir: &Path,
    model: &ModelProto,
    size: i64,
    seed: u64,
    steps: &[(i64, f32)],
) -> (PathBuf, Vec<Batch>) {
    let graph = model.graph.as_ref().expect("the model has a graph");
    let shape: Vec<i64> = tensor_type(&graph.input[0])
        .and_then(|t| t.shape)
        .expect("the data input has a shape")
        .iter()
        .map(|d| if let Dim::Fixed(v) = d { *v } else { size })
        .collect();
    let mut rng = Rng::new(seed);
    let count = shape.iter().product::<i64>() as usize;
    let mut batches = Vec::new();
    let mut entries = Vec::new();
    for (k, (epoch, lr)) in steps.iter().enumerate() {
        let batch = Batch {
            data: rng.floats(count, -1.0, 1.0),
            labels: (0..shape[0])
                .map(|_| rng.below(COUNTS.len() as u64) as i64)
                .collect(),
            shape: shape.clone(),
        };
        let file = format!("input-{k}.bin");
        let bytes: Vec<u8> = batch.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join(&file), bytes).expect("write a batch");
        entries.push(serde_json::json!({
            "epoch": epoch, "lr": lr, "input": file, "labels": batch.labels,
        }));
        batches.push(batch);
    }
    let description = serde_json::json!({ "input_dims": shape, "steps": entries });
    let path = dir.join("batch.json");
    std::fs::write(&path, description.to_string()).expect("write batch.json");
    (path, batches)
}

/// Where one state tensor sits in a state file.
#[derive(Debug, Clone, Deserialize)]
pub struct Slot {
    pub name: String,
    pub dims: Vec<i64>,
    pub offset: usize,
    pub length: usize,
}

/// The state as the step's state tensors in order, by name, as float32 values.
pub type State = HashMap<String, Vec<f32>>;

/// The state file of `state` in `step`'s state order.
pub fn write_state(path: &Path, step: &TrainStep, state: &HashMap<String, TensorProto>) {
    let mut bytes = Vec::new();
    for s in &step.state {
        let values = f32_values(&state[&s.name]).expect("float32 state");
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A state file read with its layout; every state tensor of `step` must be in it
/// with its dims.
pub fn read_state(path: &Path, layout: &[Slot], step: &TrainStep) -> State {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let initial = step.initial_values();
    let state: State = layout
        .iter()
        .map(|slot| {
            assert_eq!(
                slot.dims,
                initial[&slot.name].dims,
                "{}: {} has other dims than the step's",
                path.display(),
                slot.name
            );
            let end = slot.offset + slot.length;
            assert!(
                end <= values.len(),
                "{}: {} is cut short",
                path.display(),
                slot.name
            );
            (slot.name.clone(), values[slot.offset..end].to_vec())
        })
        .collect();
    for s in &step.state {
        assert!(
            state.contains_key(&s.name),
            "{}: {} is missing",
            path.display(),
            s.name
        );
    }
    state
}

/// A state held as tensors, as float32 values by name.
pub fn values_of(state: &HashMap<String, TensorProto>) -> State {
    state
        .iter()
        .map(|(name, t)| (name.clone(), f32_values(t).expect("float32 state")))
        .collect()
}

/// Normwise relative error of every state tensor of `actual` against `expected`,
/// each asserted to be within `bound(kind)`. A tensor that is zero in exact
/// arithmetic (the momentum of a bias feeding a training-mode BatchNorm, whose
/// gradient the normalisation cancels) holds only rounding noise, so each norm is
/// floored at its kind's root-mean-square element times the square root of the
/// tensor's size, as tests/torch_backend.rs does.
pub fn assert_state_close(
    what: &str,
    step: &TrainStep,
    actual: &State,
    expected: &State,
    bound: impl Fn(StateKind, &str) -> f64,
) -> f64 {
    let rms_of_kind = |kind: StateKind| {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for s in step.state.iter().filter(|s| s.kind == kind) {
            sum += norm(&expected[&s.name]).powi(2);
            count += expected[&s.name].len();
        }
        (sum / count.max(1) as f64).sqrt()
    };
    let mut worst = 0.0f64;
    let mut beyond = Vec::new();
    for s in &step.state {
        let (a, e) = (&actual[&s.name], &expected[&s.name]);
        let floor = rms_of_kind(s.kind) * (e.len() as f64).sqrt();
        let err = normwise_error(a, e, floor);
        let limit = bound(s.kind, &s.name);
        if !within(err, limit) {
            beyond.push(format!(
                "{} ({}) differs by {err:.3e} normwise relative (bound {limit:.1e})",
                s.name,
                s.kind.as_str()
            ));
        }
        worst = crate::common::tolerance::worst([worst, err / limit]);
    }
    assert!(
        beyond.is_empty(),
        "{what}: {} of {} state tensors beyond their bounds:\n  {}",
        beyond.len(),
        step.state.len(),
        beyond.join("\n  ")
    );
    worst
}

/// The bounds `common::tolerance` derives for the state of two float32 runtimes
/// after one step at learning rate `lr` from the same state, `expected` being one
/// runtime's (as tests/torch_backend.rs compares libtorch with ONNX Runtime):
/// - momentum buffers hold `v = mu v0 + g + wd w` with `v0` and `w` shared, so they
///   differ as the gradients do: the gradient bound (with the flipped gates'
///   allowance in a network with ReLU or MaxPool);
/// - parameters `w' = w - lr v` differ by `lr ||dv||` (`||dv||` bounded as the
///   buffers are, floor included) relative to `||w'||`, plus the update's own two
///   roundings in each runtime;
/// - running statistics are forward values: the forward bound.
pub fn derived_bounds<'a>(
    step: &'a TrainStep,
    acc: &'a Accumulation,
    lr: f32,
    expected: &'a State,
) -> impl Fn(StateKind, &str) -> f64 + 'a {
    let buffers: Vec<&Vec<f32>> = step
        .state
        .iter()
        .filter(|s| s.kind == StateKind::Momentum)
        .map(|s| &expected[&s.name])
        .collect();
    let count: usize = buffers.iter().map(|b| b.len()).sum();
    let momentum_rms =
        (buffers.iter().map(|b| norm(b).powi(2)).sum::<f64>() / count.max(1) as f64).sqrt();
    let lr = f64::from(lr);
    move |kind, name| match kind {
        StateKind::Parameter => {
            let parameter = &expected[name];
            let momentum = &expected[&contract::momentum_name(name)];
            let scale = norm(parameter).max(f64::MIN_POSITIVE);
            let momentum_scale = norm(momentum).max(momentum_rms * (momentum.len() as f64).sqrt());
            let step_share = lr * norm(momentum) / scale;
            lr * acc.gradient_bound() * momentum_scale / scale
                + 2.0 * acc.unit_roundoff * (1.0 + step_share)
        }
        StateKind::Momentum => acc.gradient_bound(),
        StateKind::RunningMean | StateKind::RunningVar => acc.forward_bound(),
    }
}

/// `|actual - expected| / |expected|`.
pub fn relative(actual: f64, expected: f64) -> f64 {
    (actual - expected).abs() / expected.abs().max(f64::MIN_POSITIVE)
}
