//! On an NVIDIA GPU: the compiled step in ONNX Runtime's CUDA execution provider,
//! and the libtorch backend on CUDA, train every bundled model as ONNX Runtime does
//! on the CPU; and the training throughput of ResNet-32 at batch 128 on the GPU.
//!
//! Built only with the `cuda` feature (`.ci/gpu-check.sh` runs it on a GPU machine
//! with `--features cuda` and `--features torch,cuda`); without a usable GPU every
//! test here fails, saying why. The device is `LDAM_TEST_DEVICE` (default `cuda:0`).
//!
//! Each step starts from the CPU's state (the initial state, then the CPU's after
//! the previous step), at epoch 0 and at the DRW epoch, so each is compared alone.
//! cuDNN and cuBLAS may compute float32 convolutions and products in TF32 (a 10-bit
//! mantissa), so the bounds of `common::tolerance` take TF32's unit roundoff: they
//! are loose (above 1 for ResNet-32: there they only catch a broken step), and the
//! measured differences are printed for the record.
#![cfg(feature = "cuda")]

mod common;
mod runtimes;

use common::tolerance::{normwise_error, Accumulation, TF32_UNIT_ROUNDOFF};
use ldam_onnx::backend::onnxruntime::OrtTrainer;
use ldam_onnx::backend::{Batch, Device, Trainer};
#[cfg(feature = "torch")]
use ldam_onnx::compile::CompileOptions;
use runtimes::{assert_state_close, relative, Compiled, DRW_EPOCH};
use std::time::Instant;

const BATCH: i64 = 16;
const LR: f32 = 0.1;
const STEPS: [(i64, f32); 2] = [(0, LR), (DRW_EPOCH, LR)];

/// `LDAM_TEST_DEVICE`, `cuda:0` when unset.
fn device() -> Device {
    let text = std::env::var("LDAM_TEST_DEVICE").unwrap_or_else(|_| "cuda:0".into());
    text.parse()
        .unwrap_or_else(|e| panic!("LDAM_TEST_DEVICE={text}: {e}"))
}

fn bundled_names() -> Vec<String> {
    common::model_files()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Two steps of `gpu` against ONNX Runtime on the CPU, each from the CPU's state.
fn agrees_with_the_cpu(what: &str, compiled: &Compiled, gpu: &mut dyn Trainer, seed: u64) {
    let step = &compiled.step;
    let scratch = tempfile::tempdir().unwrap();
    let (_, batches) =
        runtimes::write_batches(scratch.path(), &compiled.patched, BATCH, seed, &STEPS);
    let mut cpu = OrtTrainer::new(step, Device::Cpu).expect("ONNX Runtime on the CPU");
    let mut accumulation = Accumulation::of(&compiled.patched, BATCH);
    accumulation.unit_roundoff = TF32_UNIT_ROUNDOFF;
    let forward = accumulation.forward_bound();
    for (k, &(epoch, lr)) in STEPS.iter().enumerate() {
        gpu.set_state(&cpu.state().unwrap()).unwrap();
        let on_gpu = gpu.step(&batches[k], epoch, lr).unwrap();
        let on_cpu = cpu.step(&batches[k], epoch, lr).unwrap();
        let what = format!("{what}, step {k} (epoch {epoch})");
        let loss_err = relative(f64::from(on_gpu.loss), f64::from(on_cpu.loss));
        let logits_err = normwise_error(&on_gpu.logits, &on_cpu.logits, 0.0);
        assert!(on_gpu.loss.is_finite(), "{what}: loss {}", on_gpu.loss);
        assert!(
            loss_err <= forward && logits_err <= forward,
            "{what}: loss {} vs {} ({loss_err:e}), logits {logits_err:e} (forward bound {forward:e})",
            on_gpu.loss,
            on_cpu.loss
        );
        let expected = runtimes::values_of(&cpu.state().unwrap());
        let actual = runtimes::values_of(&gpu.state().unwrap());
        let bounds = runtimes::derived_bounds(step, &accumulation, lr, &expected);
        let worst = assert_state_close(&what, step, &actual, &expected, bounds);
        let largest = step
            .state
            .iter()
            .map(|s| normwise_error(&actual[&s.name], &expected[&s.name], f64::MIN_POSITIVE))
            .fold(0.0f64, f64::max);
        eprintln!(
            "{what}: loss {loss_err:.1e}, logits {logits_err:.1e} (bound {forward:.1e}); \
             largest state difference {largest:.1e}, within {worst:.1e} of its bounds"
        );
    }
}

#[test]
fn every_bundled_step_trains_on_the_gpu_in_onnx_runtime_as_on_the_cpu() {
    ldam_onnx::runtime::init().expect("ONNX Runtime loads (the onnxruntime-gpu library)");
    let device = device();
    for (seed, name) in bundled_names().iter().enumerate() {
        let compiled = runtimes::compile_bundled(name);
        let mut gpu = OrtTrainer::new(&compiled.step, device)
            .unwrap_or_else(|e| panic!("{name}: ONNX Runtime on {device}: {e}"));
        agrees_with_the_cpu(
            &format!("{name}, ONNX Runtime on {device}"),
            &compiled,
            &mut gpu,
            60 + seed as u64,
        );
    }
}

#[cfg(feature = "torch")]
#[test]
fn every_bundled_model_trains_on_the_gpu_with_libtorch_as_onnx_runtime_on_the_cpu() {
    use ldam_onnx::backend::torch::TorchTrainer;
    ldam_onnx::runtime::init().expect("ONNX Runtime loads");
    let device = device();
    for (seed, name) in bundled_names().iter().enumerate() {
        let compiled = runtimes::compile_bundled(name);
        let mut gpu = TorchTrainer::new(&compiled.patched, &CompileOptions::default(), device)
            .unwrap_or_else(|e| panic!("{name}: libtorch on {device}: {e}"));
        agrees_with_the_cpu(
            &format!("{name}, libtorch on {device}"),
            &compiled,
            &mut gpu,
            70 + seed as u64,
        );
    }
}

/// Images per second of `steps` steps after two warm-up steps; every step reads
/// its loss and logits back, as training does.
fn images_per_second(trainer: &mut dyn Trainer, batch: &Batch, steps: usize) -> f64 {
    for _ in 0..2 {
        trainer.step(batch, 0, LR).unwrap();
    }
    let started = Instant::now();
    for _ in 0..steps {
        let loss = trainer.step(batch, 0, LR).unwrap().loss;
        assert!(loss.is_finite(), "loss {loss}");
    }
    (batch.shape[0] as usize * steps) as f64 / started.elapsed().as_secs_f64()
}

/// Prints `result IMPLEMENTATION resnet32 128 IMAGES_PER_S` lines, which
/// `.ci/gpu-check.sh` gathers into its table.
#[test]
#[ignore = "a measurement, not a check: .ci/gpu-check.sh runs it"]
fn throughput_of_resnet32_at_batch_128() {
    const SIZE: i64 = 128;
    const STEPS_TIMED: usize = 20;
    ldam_onnx::runtime::init().expect("ONNX Runtime loads");
    let device = device();
    let compiled = runtimes::compile_bundled("resnet32");
    let scratch = tempfile::tempdir().unwrap();
    let (_, batches) =
        runtimes::write_batches(scratch.path(), &compiled.patched, SIZE, 7, &[(0, LR)]);
    let mut ort = OrtTrainer::new(&compiled.step, device).unwrap();
    let rate = images_per_second(&mut ort, &batches[0], STEPS_TIMED);
    println!("result ort-cuda resnet32 {SIZE} {rate:.1}");
    drop(ort);
    #[cfg(feature = "torch")]
    {
        let mut torch = ldam_onnx::backend::torch::TorchTrainer::new(
            &compiled.patched,
            &CompileOptions::default(),
            device,
        )
        .unwrap();
        let rate = images_per_second(&mut torch, &batches[0], STEPS_TIMED);
        println!("result torch-backend-cuda resnet32 {SIZE} {rate:.1}");
    }
}
