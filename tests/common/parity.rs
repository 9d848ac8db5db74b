//! One export against PyTorch's values of two SGD steps (lr 0.1, momentum 0.9,
//! weight decay 5e-4, plain cross-entropy, train mode), as
//! `tests/exports/make.py` writes them: the file is patched, compiled and
//! stepped twice in ONNX Runtime, and the losses and every parameter PyTorch
//! names the same are compared. Used by `tests/export_parity.rs` and by
//! `examples/step_parity.rs` (the timm sweep, `benches/timm_sweep.py`).

use super::Data;
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
use std::path::Path;

pub const LR: f32 = 0.1;

/// A fixture's PyTorch values.
pub struct Reference {
    pub input: Data,
    pub labels: Vec<i64>,
    pub loss: Vec<f64>,
    /// `param/NAME` and `buffer/NAME` after two steps, `initial/NAME` before.
    pub tensors: HashMap<String, Vec<f32>>,
}

pub fn read_reference(path: &Path) -> Reference {
    let mut npz = NpzReader::new(File::open(path).unwrap()).unwrap();
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

/// Plain cross-entropy, no re-weighting, the head as exported: PyTorch's
/// `F.cross_entropy` step.
pub fn options(classes: usize) -> PatchOptions {
    let config = LossConfig {
        loss: LossKind::Ce,
        reweight: Reweight::None,
        ..LossConfig::reference(vec![1; classes])
    };
    PatchOptions {
        head: HeadMode::Keep,
        ..PatchOptions::new(config)
    }
}

pub fn data_input(model: &ModelProto) -> String {
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
pub struct Outcome {
    pub losses: Vec<f32>,
    /// Per compared tensor: (name, normwise error of the values, of the update).
    pub tensors: Vec<(String, f64, f64)>,
}

/// How a step is perturbed for the negative controls.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub lr: f32,
    pub momentum: f64,
}

pub const EXACT: Variant = Variant {
    lr: LR,
    momentum: 0.9,
};

/// Normwise error of `got` against `want`, with the tensor's norm floored at
/// `floor * sqrt(n)`: elements that small count as zero in exact arithmetic (a
/// bias whose gradient vanishes behind a training-mode BatchNorm moves by
/// rounding noise, 1e-9, in both PyTorch and here). NaN or infinity is an error.
pub fn floored_error(got: &[f32], want: &[f32], floor: f64) -> f64 {
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
    let norm = super::tolerance::norm(want).max(floor * (want.len() as f64).sqrt());
    diff / norm
}

/// The parameters PyTorch names the same, compared after two steps:
/// (name, values error, update error), from each state tensor's value before
/// (`initial`) and after (`after`).
pub fn compare_state(
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

pub fn two_steps(path: &Path, reference: &Reference, variant: Variant) -> Result<Outcome, String> {
    let loaded = io::load_with_data(&path).map_err(|e| format!("load: {e}"))?;
    let input_name = data_input(&loaded.model);
    let classes = ldam_onnx::patch::head::detect(loaded.graph(), None)
        .map_err(|e| format!("patch: {e}"))?
        .classes;
    let (patched, _) =
        patch(&loaded.model, &options(classes)).map_err(|e| format!("patch: {e}"))?;
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
        let outputs = super::run_session(&mut session, &inputs);
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
    let tensors = compare_state(reference, &kinds, &values(&initial), &values(&state));
    Ok(Outcome { losses, tensors })
}

/// Values below this (RMS) count as zero when a parameter's values are compared.
pub const VALUE_FLOOR: f64 = 1e-3;
/// Updates below `lr` times this (RMS) count as zero.
pub const UPDATE_FLOOR: f64 = 1e-3;
/// The parity the exports must reach, per tensor: the values after two steps
/// within 2e-3 of PyTorch's normwise, and the two steps' update itself within
/// 1e-3, so that a 1% error in any update fails. The float32 differences seen
/// are 1e-5 (updates) and 1e-6 (values); the bounds leave room for other
/// instruction sets' summation orders.
pub const VALUE_BOUND: f64 = 2e-3;
pub const UPDATE_BOUND: f64 = 1e-3;
/// The losses: float32 cross-entropy of 6 examples, read twice.
pub const LOSS_BOUND: f64 = 1e-5;

/// Both losses within `LOSS_BOUND`, and every compared tensor within the
/// value and update bounds; NaN fails.
pub fn check(name: &str, outcome: &Outcome, reference: &Reference) -> Result<(), String> {
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
