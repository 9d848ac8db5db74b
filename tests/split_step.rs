//! The training step split for data-parallel training (`compile::split`):
//! the gradient graph followed by the apply graph computes the step, and the
//! data-parallel trainer in a world of one process trains as the ONNX Runtime
//! trainer does.

mod common;

use common::{run, Data, Rng};
use ldam_onnx::backend::distributed::DistributedTrainer;
use ldam_onnx::backend::onnxruntime::OrtTrainer;
use ldam_onnx::backend::{Batch, Device, Trainer};
use ldam_onnx::compile::split::{split, DENOMINATOR, DENOMINATOR_SUM, FUSED_GRADIENTS};
use ldam_onnx::compile::{compile, CompileOptions, StateKind, TrainStep};
use ldam_onnx::distributed::World;
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::tensor::f32_values;
use std::collections::HashMap;
use std::sync::Arc;

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
const LABELS: [i64; 6] = [0, 3, 9, 5, 1, 9];
const LR: f32 = 0.05;
/// DRW active: the class weights differ.
const EPOCH: i64 = 200;

fn step_of(name: &str) -> TrainStep {
    let patched = common::patch_with(
        &common::bundled(name),
        LossConfig::reference(COUNTS.to_vec()),
    );
    let options = CompileOptions {
        weight_decay: 5e-4,
        ..CompileOptions::default()
    };
    compile(&patched, &options).unwrap()
}

fn images(seed: u64) -> Vec<f32> {
    Rng::new(seed).floats(LABELS.len() * 28 * 28, -1.0, 1.0)
}

fn common_inputs(x: &[f32]) -> Vec<(&'static str, Data)> {
    vec![
        (
            "input",
            Data::F32(vec![LABELS.len() as i64, 1, 28, 28], x.to_vec()),
        ),
        (
            "labels",
            Data::I64(vec![LABELS.len() as i64], LABELS.to_vec()),
        ),
        ("epoch", Data::I64(vec![], vec![EPOCH])),
    ]
}

/// `||a - b|| / ||b||`.
fn relative(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (diff / norm.max(1e-300)).sqrt()
}

#[test]
fn gradient_then_apply_graph_compute_the_step_on_the_mlp_and_the_cnn() {
    for name in ["mlp", "cnn"] {
        let step = step_of(name);
        let parts = split(&step).unwrap();
        let initial = step.initial_values();
        let x = images(7);

        // The fused buffer carries exactly the trained parameters.
        let parameters: usize = step
            .state
            .iter()
            .filter(|s| s.kind == StateKind::Parameter)
            .map(|s| f32_values(&initial[&s.name]).unwrap().len())
            .sum();
        assert_eq!(parts.gradient_len(), parameters, "{name}");

        let state_input =
            |s: &str| Data::F32(initial[s].dims.clone(), f32_values(&initial[s]).unwrap());
        let mut whole_inputs = common_inputs(&x);
        whole_inputs.push(("lr", Data::F32(vec![], vec![LR])));
        for s in &step.state {
            whole_inputs.push((s.name.as_str(), state_input(&s.name)));
        }
        let whole = run(&step.model, &whole_inputs);

        // Denominators 1 compute exactly the step; any other denominator
        // scales the fused buffer and the apply graph divides it back (one
        // rounding each way).
        for (denominator, limit) in [(1.0f32, 1e-6), (2.5, 1e-6)] {
            let gradient_graph = parts.gradient.graph.as_ref().unwrap();
            let mut first_inputs = common_inputs(&x);
            first_inputs.push((DENOMINATOR, Data::F32(vec![], vec![denominator])));
            for input in &gradient_graph.input {
                if initial.contains_key(input.name()) {
                    first_inputs.push((input.name(), state_input(input.name())));
                }
            }
            let first = run(&parts.gradient, &first_inputs);
            let fused = first[FUSED_GRADIENTS].f32();
            assert_eq!(fused.len(), parameters, "{name}");

            let apply_graph = parts.apply.graph.as_ref().unwrap();
            let mut second_inputs = vec![
                ("lr", Data::F32(vec![], vec![LR])),
                (DENOMINATOR_SUM, Data::F32(vec![], vec![denominator])),
            ];
            for input in &apply_graph.input {
                if initial.contains_key(input.name()) {
                    second_inputs.push((input.name(), state_input(input.name())));
                } else if input.name() == FUSED_GRADIENTS {
                    second_inputs.push((input.name(), first[FUSED_GRADIENTS].clone()));
                }
            }
            let second = run(&parts.apply, &second_inputs);

            let record = &step.record;
            for output in [&record.loss_output, &record.logits_output] {
                assert_eq!(first[output].f32(), whole[output].f32(), "{name}: {output}");
            }
            for s in &step.state {
                let split_value = match s.kind {
                    StateKind::Parameter | StateKind::Momentum => second[&s.next].f32(),
                    StateKind::RunningMean | StateKind::RunningVar => first[&s.next].f32(),
                };
                let error = relative(split_value, whole[&s.next].f32());
                assert!(
                    error <= limit,
                    "{name}, denominator {denominator}: {} differs by {error:e}",
                    s.next
                );
                if denominator == 1.0 && s.kind == StateKind::Parameter {
                    assert_eq!(split_value, whole[&s.next].f32(), "{name}: {}", s.next);
                }
            }
        }
    }
}

#[test]
fn the_data_parallel_trainer_alone_trains_as_the_onnxruntime_trainer() {
    let step = step_of("mlp");
    let mut single = OrtTrainer::new(&step, Device::Cpu).unwrap();
    let mut parallel =
        DistributedTrainer::new(Arc::new(World::single()), &step, Device::Cpu).unwrap();
    for seed in 0..3 {
        let batch = Batch {
            shape: vec![LABELS.len() as i64, 1, 28, 28],
            data: images(seed),
            labels: LABELS.to_vec(),
        };
        let a = single.step(&batch, EPOCH, LR).unwrap();
        let b = parallel.step(&batch, EPOCH, LR).unwrap();
        assert!(
            (a.loss - b.loss).abs() <= 1e-6 * a.loss.abs(),
            "{} vs {}",
            a.loss,
            b.loss
        );
        if seed == 0 {
            // Same weights, same forward nodes: the same logits.
            assert_eq!(a.logits, b.logits);
        } else {
            let error = relative(&b.logits, &a.logits);
            assert!(error <= 1e-5, "step {seed}: logits differ by {error:e}");
        }
    }
    let (a, b): (HashMap<_, _>, HashMap<_, _>) =
        (single.state().unwrap(), parallel.state().unwrap());
    for (name, tensor) in &a {
        let error = relative(&f32_values(&b[name]).unwrap(), &f32_values(tensor).unwrap());
        assert!(error <= 1e-6, "{name} differs by {error:e}");
    }
}
