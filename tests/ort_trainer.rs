//! The ONNX Runtime trainer keeps the state in the runtime between steps (an
//! IoBinding): three of its steps on the compiled MLP leave the same state as
//! running the step graph three times with every `S.next` fed back as `S`, and
//! its state reads back exactly what was set.

mod common;

use common::{run, Data, Rng};
use ldam_onnx::backend::onnxruntime::OrtTrainer;
use ldam_onnx::backend::{Batch, Device, Trainer};
use ldam_onnx::compile::{compile, CompileOptions, TrainStep};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::tensor::{f32_tensor, f32_values};
use ldam_onnx::onnx::TensorProto;
use std::collections::HashMap;

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
const BATCH: i64 = 4;
const LABELS: [i64; 4] = [0, 3, 9, 5];
const LR: f32 = 0.05;

fn mlp_step() -> TrainStep {
    let patched = common::patch_with(
        &common::bundled("mlp"),
        LossConfig::reference(COUNTS.to_vec()),
    );
    compile(&patched, &CompileOptions::default()).unwrap()
}

/// The state's initial values (the companion state file's), by name.
fn initial_state(step: &TrainStep) -> HashMap<String, (Vec<i64>, Vec<f32>)> {
    step.initial_values()
        .into_iter()
        .map(|(name, t)| (name, (t.dims.clone(), f32_values(&t).unwrap())))
        .collect()
}

/// One step of the graph itself, `S.next` read back into host arrays.
fn manual_step(
    step: &TrainStep,
    x: &[f32],
    epoch: i64,
    state: &HashMap<String, (Vec<i64>, Vec<f32>)>,
) -> HashMap<String, (Vec<i64>, Vec<f32>)> {
    let mut inputs = vec![
        ("input", Data::F32(vec![BATCH, 1, 28, 28], x.to_vec())),
        ("labels", Data::I64(vec![BATCH], LABELS.to_vec())),
        ("epoch", Data::I64(vec![], vec![epoch])),
        ("lr", Data::F32(vec![], vec![LR])),
    ];
    for s in &step.state {
        let (dims, values) = &state[&s.name];
        inputs.push((s.name.as_str(), Data::F32(dims.clone(), values.clone())));
    }
    let outputs = run(&step.model, &inputs);
    step.state
        .iter()
        .map(|s| {
            let dims = state[&s.name].0.clone();
            (s.name.clone(), (dims, outputs[&s.next].f32().to_vec()))
        })
        .collect()
}

fn batch(x: &[f32]) -> Batch {
    Batch {
        shape: vec![BATCH, 1, 28, 28],
        data: x.to_vec(),
        labels: LABELS.to_vec(),
    }
}

#[test]
fn three_trainer_steps_leave_the_state_of_three_steps_fed_back_by_hand() {
    let step = mlp_step();
    let mut rng = Rng::new(21);
    let batches: Vec<Vec<f32>> = (0..3)
        .map(|_| rng.floats((BATCH * 784) as usize, -1.0, 1.0))
        .collect();

    let mut expected = initial_state(&step);
    for (epoch, x) in batches.iter().enumerate() {
        expected = manual_step(&step, x, epoch as i64, &expected);
    }

    let mut trainer = OrtTrainer::new(&step, Device::Cpu).unwrap();
    for (epoch, x) in batches.iter().enumerate() {
        let out = trainer.step(&batch(x), epoch as i64, LR).unwrap();
        assert!(out.loss.is_finite());
        assert_eq!(out.logits.len(), (BATCH * 10) as usize);
    }
    let state = trainer.state().unwrap();
    assert_eq!(state.len(), step.state.len());
    for s in &step.state {
        let (dims, want) = &expected[&s.name];
        let got = &state[&s.name];
        assert_eq!(&got.dims, dims, "{}", s.name);
        let got = f32_values(got).unwrap();
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-6 * scale.max(f32::MIN_POSITIVE),
            "{}: differs by {diff} (largest value {scale})",
            s.name
        );
    }
}

#[test]
fn set_state_then_state_round_trips_and_the_next_step_starts_from_it() {
    let step = mlp_step();
    let mut trainer = OrtTrainer::new(&step, Device::Cpu).unwrap();
    let x = Rng::new(22).floats((BATCH * 784) as usize, -1.0, 1.0);
    trainer.step(&batch(&x), 0, LR).unwrap();

    // Every state tensor replaced by distinct values (momentum included).
    let mut rng = Rng::new(23);
    let chosen: HashMap<String, TensorProto> = initial_state(&step)
        .into_iter()
        .map(|(name, (dims, values))| {
            let values = rng.floats(values.len(), -0.5, 0.5);
            let tensor = f32_tensor(&name, &dims, &values);
            (name, tensor)
        })
        .collect();
    trainer.set_state(&chosen).unwrap();
    let read = trainer.state().unwrap();
    for (name, tensor) in &chosen {
        assert_eq!(read[name].dims, tensor.dims, "{name}");
        assert_eq!(
            f32_values(&read[name]).unwrap(),
            f32_values(tensor).unwrap(),
            "{name}"
        );
    }

    // The next step computes from the state that was set.
    let chosen_arrays: HashMap<String, (Vec<i64>, Vec<f32>)> = chosen
        .iter()
        .map(|(name, t)| (name.clone(), (t.dims.clone(), f32_values(t).unwrap())))
        .collect();
    let expected = manual_step(&step, &x, 1, &chosen_arrays);
    trainer.step(&batch(&x), 1, LR).unwrap();
    let state = trainer.state().unwrap();
    for (name, (_, want)) in &expected {
        let got = f32_values(&state[name]).unwrap();
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-6 * scale.max(f32::MIN_POSITIVE),
            "{name}: {diff}"
        );
    }

    // A checkpoint missing a tensor is refused, naming it.
    let mut partial = chosen.clone();
    let missing = step.state[0].name.clone();
    partial.remove(&missing);
    let err = trainer.set_state(&partial).unwrap_err().to_string();
    assert!(err.contains(&missing), "{err}");
}
