//! Real exports against PyTorch: the networks in `tests/exports/`, exported by
//! `tests/exports/make.py` with torch 2.13 in four ways (the default dynamo
//! exporter, the legacy exporter in training and in eval mode, and
//! `python/ldam_onnx_export.py`), each with the PyTorch values of two SGD steps
//! (lr 0.1, momentum 0.9, weight decay 5e-4, plain cross-entropy, train mode)
//! on one batch of 6. Every file is patched, compiled and stepped twice in ONNX
//! Runtime; the losses and every parameter PyTorch names the same must agree.

mod common;

use common::Data;
use ldam_onnx::compile::{compile, CompileOptions, StateKind};
use ldam_onnx::ldam::{LossConfig, LossKind, Reweight};
use ldam_onnx::onnx::io;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::ModelProto;
use ldam_onnx::patch::{patch, HeadMode, PatchOptions};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzReader;
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

const LR: f32 = 0.1;
const CLASSES: usize = 5;

fn exports_dir() -> PathBuf {
    common::repo_dir().join("tests/exports")
}

/// A fixture's PyTorch values.
struct Reference {
    input: Data,
    labels: Vec<i64>,
    loss: Vec<f64>,
    /// `param/NAME` and `buffer/NAME` after two steps, `initial/NAME` before.
    tensors: HashMap<String, Vec<f32>>,
}

fn read_reference(name: &str) -> Reference {
    let path = exports_dir().join(format!("{name}.npz"));
    let mut npz = NpzReader::new(File::open(&path).unwrap()).unwrap();
    let names = npz.names().unwrap();
    let input = match npz.by_name::<ndarray::OwnedRepr<f32>, IxDyn>("input") {
        Ok(a) => Data::F32(
            a.shape().iter().map(|&d| d as i64).collect(),
            a.iter().copied().collect(),
        ),
        Err(_) => {
            let a: ArrayD<i64> = npz.by_name("input").unwrap();
            Data::I64(
                a.shape().iter().map(|&d| d as i64).collect(),
                a.iter().copied().collect(),
            )
        }
    };
    let labels: ArrayD<i64> = npz.by_name("labels").unwrap();
    let loss: ArrayD<f64> = npz.by_name("loss").unwrap();
    let mut tensors = HashMap::new();
    for key in names {
        let key = key.trim_end_matches(".npy").to_string();
        if key.starts_with("param/") || key.starts_with("buffer/") || key.starts_with("initial/") {
            let a: ArrayD<f32> = npz.by_name(&key).unwrap();
            tensors.insert(key, a.iter().copied().collect());
        }
    }
    Reference {
        input,
        labels: labels.iter().copied().collect(),
        loss: loss.iter().copied().collect(),
        tensors,
    }
}

fn options() -> PatchOptions {
    let config = LossConfig {
        loss: LossKind::Ce,
        reweight: Reweight::None,
        ..LossConfig::reference(vec![1; CLASSES])
    };
    PatchOptions {
        head: HeadMode::Keep,
        ..PatchOptions::new(config)
    }
}

fn data_input(model: &ModelProto) -> String {
    let graph = model.graph.as_ref().unwrap();
    graph
        .input
        .iter()
        .find(|i| !graph.initializer.iter().any(|t| t.name() == i.name()))
        .unwrap()
        .name()
        .to_string()
}

/// What two compiled steps gave, next to PyTorch's.
#[derive(Debug, Clone)]
struct Outcome {
    losses: Vec<f32>,
    /// Per compared tensor: (name, normwise error of the values, of the update).
    tensors: Vec<(String, f64, f64)>,
}

/// How a step is perturbed for the negative controls.
#[derive(Debug, Clone, Copy)]
struct Variant {
    lr: f32,
    momentum: f64,
}

const EXACT: Variant = Variant {
    lr: LR,
    momentum: 0.9,
};

/// Normwise error of `got` against `want`, with the tensor's norm floored at
/// `floor * sqrt(n)`: elements that small count as zero in exact arithmetic (a
/// bias whose gradient vanishes behind a training-mode BatchNorm moves by
/// rounding noise, 1e-9, in both PyTorch and here). NaN or infinity is an error.
fn floored_error(got: &[f32], want: &[f32], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len());
    if got.iter().chain(want).any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = common::tolerance::norm(want).max(floor * (want.len() as f64).sqrt());
    diff / norm
}

/// The parameters PyTorch names the same, compared after two steps:
/// (name, values error, update error), from each state tensor's value before
/// (`initial`) and after (`after`).
fn compare_state(
    reference: &Reference,
    state: &[(String, StateKind)],
    initial: &HashMap<String, Vec<f32>>,
    after: &HashMap<String, Vec<f32>>,
) -> Vec<(String, f64, f64)> {
    let mut tensors = Vec::new();
    for (name, kind) in state {
        let key = match kind {
            StateKind::Parameter => format!("param/{name}"),
            StateKind::RunningMean | StateKind::RunningVar => format!("buffer/{name}"),
            _ => continue,
        };
        let (Some(want), Some(torch_initial)) = (
            reference.tensors.get(&key),
            reference.tensors.get(&format!("initial/{name}")),
        ) else {
            continue;
        };
        let ours_initial = &initial[name];
        if ours_initial != torch_initial {
            // The file does not start where PyTorch did (folded, or moved by
            // the exporter's own forward pass): only the losses can be compared.
            continue;
        }
        let got = &after[name];
        let delta =
            |a: &[f32]| -> Vec<f32> { a.iter().zip(ours_initial).map(|(x, x0)| x - x0).collect() };
        tensors.push((
            name.clone(),
            floored_error(got, want, VALUE_FLOOR),
            floored_error(&delta(got), &delta(want), LR as f64 * UPDATE_FLOOR),
        ));
    }
    tensors
}

fn two_steps(name: &str, variant: Variant) -> Result<Outcome, String> {
    let path = exports_dir().join(format!("{name}.onnx"));
    let reference = read_reference(name);
    let loaded = io::load_with_data(&path).map_err(|e| format!("load: {e}"))?;
    let input_name = data_input(&loaded.model);
    let (patched, _) = patch(&loaded.model, &options()).map_err(|e| format!("patch: {e}"))?;
    let compile_options = CompileOptions {
        momentum: variant.momentum,
        weight_decay: 5e-4,
        ..CompileOptions::default()
    };
    let step = compile(&patched, &compile_options).map_err(|e| format!("compile: {e}"))?;
    let batch = reference.labels.len() as i64;
    let initial: HashMap<String, (Vec<i64>, Vec<f32>)> = step
        .initial_values()
        .into_iter()
        .map(|(n, t)| (n, (t.dims.clone(), f32_values(&t).unwrap())))
        .collect();
    let bytes = io::to_bytes(&step.model);
    let mut session = ldam_onnx::runtime::session_from_bytes(&bytes)
        .map_err(|e| format!("ONNX Runtime refused the step: {e}"))?;
    let mut state = initial.clone();
    let mut losses = Vec::new();
    for _ in 0..2 {
        let mut inputs = vec![
            (input_name.as_str(), reference.input.clone()),
            ("labels", Data::I64(vec![batch], reference.labels.clone())),
            ("epoch", Data::I64(vec![], vec![0])),
            ("lr", Data::F32(vec![], vec![variant.lr])),
        ];
        for s in &step.state {
            let (dims, values) = &state[&s.name];
            inputs.push((s.name.as_str(), Data::F32(dims.clone(), values.clone())));
        }
        let outputs = common::run_session(&mut session, &inputs);
        losses.push(outputs[&step.record.loss_output].f32()[0]);
        for s in &step.state {
            let dims = state[&s.name].0.clone();
            state.insert(s.name.clone(), (dims, outputs[&s.next].f32().to_vec()));
        }
    }
    let kinds: Vec<(String, StateKind)> = step
        .state
        .iter()
        .map(|s| (s.name.clone(), s.kind))
        .collect();
    let values = |m: &HashMap<String, (Vec<i64>, Vec<f32>)>| -> HashMap<String, Vec<f32>> {
        m.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect()
    };
    let tensors = compare_state(&reference, &kinds, &values(&initial), &values(&state));
    Ok(Outcome { losses, tensors })
}

/// Values below this (RMS) count as zero when a parameter's values are compared.
const VALUE_FLOOR: f64 = 1e-3;
/// Updates below `lr` times this (RMS) count as zero.
const UPDATE_FLOOR: f64 = 1e-3;
/// The parity the exports must reach, per tensor: the values after two steps
/// within 2e-3 of PyTorch's normwise, and the two steps' update itself within
/// 1e-3, so that a 1% error in any update fails. The float32 differences seen
/// are 1e-5 (updates) and 1e-6 (values); the bounds leave room for other
/// instruction sets' summation orders.
const VALUE_BOUND: f64 = 2e-3;
const UPDATE_BOUND: f64 = 1e-3;
/// The losses: float32 cross-entropy of 6 examples, read twice.
const LOSS_BOUND: f64 = 1e-5;

fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(exports_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".npz").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// Why a fixture cannot match PyTorch, when it cannot.
fn expected_gap(name: &str) -> Option<&'static str> {
    let (arch, mode) = name.split_once("__")?;
    match (arch, mode) {
        ("resnet" | "mobilenet" | "densenet", "dynamo" | "legacy_eval") => {
            Some("BatchNorm folded into the convolutions at export")
        }
        ("text" | "vit", "dynamo") => {
            Some("the exporter drops zero-initialised parameters (attention out_proj.bias, the head's bias)")
        }
        ("convnext", "dynamo") => Some("refused: the exporter's as_strided gathers along the fixed batch"),
        _ => None,
    }
}

fn check(name: &str, outcome: &Outcome, reference: &Reference) -> Result<(), String> {
    for (got, want) in outcome.losses.iter().zip(&reference.loss) {
        let err = (*got as f64 - want).abs() / want.abs().max(1.0);
        if !(err <= LOSS_BOUND) {
            return Err(format!("{name}: loss {got} against PyTorch's {want}"));
        }
    }
    if outcome.tensors.is_empty() {
        return Err(format!("{name}: no tensor compared"));
    }
    for (tensor, value, update) in &outcome.tensors {
        if !(*value <= VALUE_BOUND && *update <= UPDATE_BOUND) {
            return Err(format!(
                "{name}: '{tensor}' off by {value:.2e} (values), {update:.2e} (update)"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_export_steps_as_pytorch_does_or_is_a_known_exporter_gap() {
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for name in fixtures() {
        let reference = read_reference(&name);
        let outcome = two_steps(&name, EXACT);
        let row = match (&outcome, expected_gap(&name)) {
            (Ok(o), None) => match check(&name, o, &reference) {
                Ok(()) => format!(
                    "parity: {} tensors, worst update {:.1e}",
                    o.tensors.len(),
                    o.tensors.iter().map(|t| t.2).fold(0.0, f64::max)
                ),
                Err(e) => {
                    failures.push(e.clone());
                    e
                }
            },
            (Err(e), None) => {
                failures.push(format!("{name}: {e}"));
                e.clone()
            }
            (Ok(o), Some(gap)) => {
                // Trains, but not PyTorch's network; the first loss still
                // shows the forward pass is the export's own.
                format!(
                    "trains (first loss {:.6} vs {:.6}); {gap}",
                    o.losses[0], reference.loss[0]
                )
            }
            (Err(e), Some(gap)) => {
                if !(e.starts_with("patch:") && e.contains("dynamic_shapes")) {
                    failures.push(format!("{name}: {e}"));
                }
                format!("{gap}: {}", e.chars().take(120).collect::<String>())
            }
        };
        table.push(format!("{name:30} {row}"));
    }
    println!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_parity_check_rejects_a_one_percent_learning_rate_and_a_dropped_momentum() {
    for name in ["resnet__helper", "lstm__dynamo", "vit__legacy_train"] {
        let reference = read_reference(name);
        let exact = two_steps(name, EXACT).unwrap();
        check(name, &exact, &reference).unwrap();
        let off = two_steps(
            name,
            Variant {
                lr: LR * 1.01,
                ..EXACT
            },
        )
        .unwrap();
        assert!(
            check(name, &off, &reference).is_err(),
            "{name}: lr x 1.01 passed"
        );
        let no_momentum = two_steps(
            name,
            Variant {
                momentum: 0.0,
                ..EXACT
            },
        )
        .unwrap();
        assert!(
            check(name, &no_momentum, &reference).is_err(),
            "{name}: momentum 0 passed"
        );
    }
}

/// The same two steps on libtorch (`--backend torch`), which interprets the
/// patched graph with autograd: every export that reaches parity in ONNX
/// Runtime reaches it here too (float inputs; the trainer's batches are float).
#[cfg(feature = "torch")]
#[test]
fn the_torch_backend_steps_the_patched_exports_as_pytorch_does() {
    use ldam_onnx::backend::torch::TorchTrainer;
    use ldam_onnx::backend::{Batch, Device, Trainer};
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in fixtures() {
        let reference = read_reference(&name);
        let Data::F32(shape, data) = reference.input.clone() else {
            continue;
        };
        if expected_gap(&name).is_some() {
            continue;
        }
        let loaded = io::load_with_data(&exports_dir().join(format!("{name}.onnx"))).unwrap();
        let (patched, _) = patch(&loaded.model, &options()).unwrap();
        let options = CompileOptions {
            momentum: 0.9,
            weight_decay: 5e-4,
            ..CompileOptions::default()
        };
        let mut trainer = match TorchTrainer::new(&patched, &options, Device::Cpu) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let plan = ldam_onnx::compile::state::plan(&patched, &options).unwrap();
        let kinds: Vec<(String, StateKind)> =
            plan.iter().map(|s| (s.name.clone(), s.kind)).collect();
        let read = |trainer: &TorchTrainer| -> HashMap<String, Vec<f32>> {
            trainer
                .state()
                .unwrap()
                .into_iter()
                .map(|(k, t)| (k, f32_values(&t).unwrap()))
                .collect()
        };
        let initial = read(&trainer);
        let batch = Batch {
            shape,
            data,
            labels: reference.labels.clone(),
        };
        let mut losses = Vec::new();
        for _ in 0..2 {
            match trainer.step(&batch, 0, LR) {
                Ok(out) => losses.push(out.loss),
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    break;
                }
            }
        }
        if losses.len() < 2 {
            continue;
        }
        let outcome = Outcome {
            losses,
            tensors: compare_state(&reference, &kinds, &initial, &read(&trainer)),
        };
        if let Err(e) = check(&name, &outcome, &reference) {
            failures.push(e);
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} exports stepped on libtorch");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
