//! Spec conformance: the graphs the tool emits are valid ONNX and mean what ONNX
//! Runtime computes, by the specification's own implementation.
//!
//! - Every bundled model's step (models/*.onnx patched with the CIFAR-10-LT counts,
//!   compiled with the default options, written as `compile` writes it) runs two
//!   steps in `onnx.reference.ReferenceEvaluator` and in ONNX Runtime
//!   (tests/py/conformance.py), each step from the same state (the companion's,
//!   then ONNX Runtime's after the first step), at epoch 0 and at the DRW epoch.
//!   The two agree within the bounds `common::tolerance` derives for two float32
//!   runtimes computing one step: loss, logits and running statistics within the
//!   forward bound, momentum buffers within the gradient bound, parameters within
//!   what the momentum's difference moves them (as tests/torch_backend.rs).
//! - `onnx.checker.check_model(full_check=True)` accepts every emitted graph: the
//!   patched model, the step, its companion state file and the deployable model.
//!
//! The Python packages are pinned in tests/py/requirements.txt and installed on
//! first use into the git-ignored `.deps/python` (tests/runtimes).

mod common;
mod runtimes;

use common::tolerance::{normwise_error, Accumulation};
use ldam_onnx::onnx::io::{self, SaveOptions};
use runtimes::{assert_state_close, relative, run_checked, Compiled, Slot, DRW_EPOCH};
use serde::Deserialize;
use std::path::PathBuf;

const BATCH: i64 = 4;
const LR: f32 = 0.1;
const STEPS: [(i64, f32); 2] = [(0, LR), (DRW_EPOCH, LR)];

fn bundled_names() -> Vec<String> {
    common::model_files()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[derive(Deserialize)]
struct Outputs {
    loss: f64,
    logits: Vec<f32>,
}

#[derive(Deserialize)]
struct StepResult {
    ort: Outputs,
    reference: Outputs,
}

#[derive(Deserialize)]
struct Conformance {
    versions: serde_json::Value,
    state: Vec<Slot>,
    steps: Vec<StepResult>,
}

/// Runs the step of `compiled` in both runtimes and compares them; returns a line
/// per step for the log.
fn conforms(name: &str, compiled: &Compiled, seed: u64) -> Vec<String> {
    let dir = compiled.dir.path();
    let step = &compiled.step;
    let (batch_path, _) = runtimes::write_batches(dir, &compiled.patched, BATCH, seed, &STEPS);
    let out = dir.join("conformance");
    run_checked(
        runtimes::python()
            .arg(common::repo_dir().join("tests/py/conformance.py"))
            .arg("steps")
            .arg(&compiled.step_path)
            .arg(&batch_path)
            .arg(&out),
        &format!(
            "{name}: tests/py/conformance.py steps (ONNX Runtime and the reference evaluator)"
        ),
        "this test needs python3 on PATH",
    );
    let result: Conformance =
        serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(result.steps.len(), STEPS.len(), "{name}");
    let acc = Accumulation::of(&compiled.patched, BATCH);
    let forward = acc.forward_bound();
    let mut log = Vec::new();
    for (k, outputs) in result.steps.iter().enumerate() {
        let what = format!(
            "{name} step {k} (reference evaluator against ONNX Runtime, {})",
            result.versions
        );
        let loss_err = relative(outputs.reference.loss, outputs.ort.loss);
        assert!(
            loss_err <= forward,
            "{what}: loss {} vs {} (relative {loss_err:e}, forward bound {forward:e})",
            outputs.reference.loss,
            outputs.ort.loss
        );
        let logits_err = normwise_error(&outputs.reference.logits, &outputs.ort.logits, 0.0);
        assert!(
            logits_err <= forward,
            "{what}: logits differ by {logits_err:e} (forward bound {forward:e})"
        );
        let ort = runtimes::read_state(&out.join(format!("ort-{k}.bin")), &result.state, step);
        let reference =
            runtimes::read_state(&out.join(format!("reference-{k}.bin")), &result.state, step);
        let bounds = runtimes::derived_bounds(step, &acc, LR, &ort);
        let worst = assert_state_close(&what, step, &reference, &ort, bounds);
        log.push(format!(
            "{what}: loss {loss_err:.1e}, logits {logits_err:.1e} of {forward:.1e}; state within {worst:.1e} of its bounds"
        ));
    }
    log
}

#[test]
fn every_bundled_step_runs_in_the_reference_evaluator_as_in_onnx_runtime() {
    runtimes::python();
    let mut failures = Vec::new();
    for (seed, name) in bundled_names().iter().enumerate() {
        let compiled = runtimes::compile_bundled(name);
        match std::panic::catch_unwind(|| conforms(name, &compiled, 40 + seed as u64)) {
            Ok(log) => log.iter().for_each(|line| eprintln!("{line}")),
            Err(panic) => failures.push(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_full_onnx_checker_accepts_every_emitted_graph() {
    let mut kept = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for name in bundled_names() {
        let compiled = runtimes::compile_bundled(&name);
        let deployable = ldam_onnx::compile::inference_model(
            &compiled.step.model,
            &compiled.step.initial_values(),
        )
        .unwrap_or_else(|e| panic!("{name}: inference model: {e}"));
        let deployable_path = compiled.dir.path().join(format!("{name}.deploy.onnx"));
        io::save(
            &deployable,
            None,
            &deployable_path,
            SaveOptions::overwriting(false),
        )
        .unwrap();
        files.extend([
            compiled.patched_path.clone(),
            compiled.step_path.clone(),
            compiled.companion_path.clone(),
            deployable_path,
        ]);
        kept.push(compiled);
    }
    let output = run_checked(
        runtimes::python()
            .arg(common::repo_dir().join("tests/py/conformance.py"))
            .arg("check")
            .args(&files),
        "tests/py/conformance.py check (onnx.checker, full check)",
        "this test needs python3 on PATH",
    );
    let accepted = String::from_utf8_lossy(&output.stdout).lines().count();
    assert_eq!(accepted, files.len(), "every file is reported");
}
