//! The compiled step trains, unmodified, in the JavaScript ONNX runtimes:
//! onnxruntime-web (WASM) and onnxruntime-node, under Node, driven by
//! web/lib/step.mjs (the module the browser trainer uses), give native ONNX
//! Runtime's numbers on the bundled mlp, cnn and resnet32.
//!
//! The packages are pinned in tests/js/package.json and installed on first use into
//! the git-ignored `.deps/npm` (tests/runtimes). Each model is patched with the
//! CIFAR-10-LT counts and compiled with the default options through the library,
//! its step and companion state file written as `compile` writes them; native ONNX
//! Runtime (the library's `OrtTrainer`) runs three steps on seeded batches at
//! epochs 0, 1 and the DRW epoch (so both class weightings run), and so does each
//! JavaScript runtime (tests/js/run_step.mjs), twice:
//! - **anchored**: step K from native's state before step K, so that each step is
//!   compared alone. Its loss is within 1e-5 relative of native's. A runtime that
//!   ignored the state it is fed (onnxruntime-node did, with the state in
//!   initializers) fails at step 1.
//! - **chained**: from the companion's initial state with each `S.next` fed back as
//!   `S`, as a trainer runs. Chains drift apart as the updates amplify rounding
//!   differences, so the chained losses are held to the forward bound of
//!   `common::tolerance`, still far below the difference (asserted) between a
//!   step from the trained state and one from the initial state, which a chain
//!   not feeding its state back would give.
//!
//! The state after an anchored step is compared tensor by tensor, normwise
//! relative (floored for tensors zero in exact arithmetic, see
//! `runtimes::assert_state_close`), on each network twice:
//! - with its kinks smoothed (ReLU to Tanh, MaxPool to AveragePool): within 1e-4;
//! - as bundled: within the bounds `common::tolerance` derives for one step, which
//!   allow for flipped gates. A ReLU whose input lies within rounding of zero can
//!   fall on either side in two runtimes, and ResNet-32 has 2.4 million of them
//!   at batch 8: one flip moves the gradients of every layer below it by ~1e-3
//!   (measured: onnxruntime-web against native, one step from a trained state).

mod common;
mod runtimes;

use common::tolerance::Accumulation;
use ldam_onnx::backend::onnxruntime::OrtTrainer;
use ldam_onnx::backend::{Device, Trainer};
use runtimes::{assert_state_close, relative, run_checked, Slot, DRW_EPOCH};
use serde::Deserialize;

const BATCH: i64 = 8;
const LR: f32 = 0.05;
const STEPS: [(i64, f32); 3] = [(0, LR), (1, LR), (DRW_EPOCH, LR)];
/// The agreement for one step from the same state (the state's for
/// networks without gates).
const LOSS_BOUND: f64 = 1e-5;
const STATE_BOUND: f64 = 1e-4;

#[derive(Deserialize)]
struct JsResult {
    version: String,
    chain_losses: Vec<f64>,
    anchored_losses: Vec<f64>,
    state: Vec<Slot>,
}

/// How closely the state after an anchored step must agree with native's.
#[derive(Clone, Copy)]
enum StateBound {
    /// The 1e-4, for networks without gates.
    Fixed,
    /// `runtimes::derived_bounds`, for networks as bundled.
    Derived,
}

fn trains_as_native_onnx_runtime(name: &str, seed: u64) {
    runtimes::node();
    let bundled = common::bundled(name);
    check(
        name,
        &runtimes::compile_model(name, &bundled),
        seed,
        StateBound::Derived,
    );
    let smooth = runtimes::compile_model(name, &runtimes::smoothed(&bundled));
    check(
        &format!("{name} (smoothed)"),
        &smooth,
        seed,
        StateBound::Fixed,
    );
}

fn check(name: &str, compiled: &runtimes::Compiled, seed: u64, state_bound: StateBound) {
    let npm = runtimes::npm_packages();
    let dir = compiled.dir.path();
    let step = &compiled.step;
    let (batch_path, batches) =
        runtimes::write_batches(dir, &compiled.patched, BATCH, seed, &STEPS);

    // Native ONNX Runtime: its losses and its state after every step; the state
    // before step K is written for the anchored runs.
    ldam_onnx::runtime::init().expect("ONNX Runtime loads");
    let mut native = OrtTrainer::new(step, Device::Cpu).expect("the native trainer starts");
    let anchors = dir.join("anchors");
    std::fs::create_dir_all(&anchors).unwrap();
    let (mut losses, mut states) = (Vec::new(), Vec::new());
    for (k, &(epoch, lr)) in STEPS.iter().enumerate() {
        losses.push(f64::from(native.step(&batches[k], epoch, lr).unwrap().loss));
        let state = native.state().unwrap();
        if k + 1 < STEPS.len() {
            runtimes::write_state(&anchors.join(format!("state-{}.bin", k + 1)), step, &state);
        }
        states.push(runtimes::values_of(&state));
    }
    // What a chain that does not feed its state back computes: every step from
    // the initial state. The chained check must be able to tell it apart.
    let accumulation = Accumulation::of(&compiled.patched, BATCH);
    let forward = accumulation.forward_bound();
    for (k, &(epoch, lr)) in STEPS.iter().enumerate().skip(1) {
        native.set_state(&step.initial_values()).unwrap();
        let stale = f64::from(native.step(&batches[k], epoch, lr).unwrap().loss);
        assert!(
            relative(stale, losses[k]) > forward,
            "{name}: step {k} from the initial state gives loss {stale}, from the trained state {}: \
             closer than the chained check's bound {forward:e}, which could not tell them apart",
            losses[k]
        );
    }

    for runtime in ["web", "node"] {
        let out = dir.join(runtime);
        let what = format!("{name} in onnxruntime-{runtime}");
        run_checked(
            runtimes::node()
                .arg(common::repo_dir().join("tests/js/run_step.mjs"))
                .args(["--runtime", runtime, "--npm"])
                .arg(npm)
                .arg("--step")
                .arg(&compiled.step_path)
                .arg("--batch")
                .arg(&batch_path)
                .arg("--anchors")
                .arg(&anchors)
                .arg("--out")
                .arg(&out),
            &format!("node tests/js/run_step.mjs ({what})"),
            "this test needs Node.js on PATH (Debian: apt-get install nodejs npm)",
        );
        let result: JsResult =
            serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap())
                .expect("run_step.mjs writes result.json");
        assert_eq!(result.anchored_losses.len(), STEPS.len(), "{what}");
        assert_eq!(result.chain_losses.len(), STEPS.len(), "{what}");
        for k in 0..STEPS.len() {
            let what = format!("{what} ({}), step {k}", result.version);
            let err = relative(result.anchored_losses[k], losses[k]);
            eprintln!(
                "{what}: anchored loss {} vs native {} ({err:.1e})",
                result.anchored_losses[k], losses[k]
            );
            assert!(
                err <= LOSS_BOUND,
                "{what}: loss {} from native's state, native {} (relative {err:e} > {LOSS_BOUND:e})",
                result.anchored_losses[k],
                losses[k]
            );
            let state =
                runtimes::read_state(&out.join(format!("anchored-{k}.bin")), &result.state, step);
            let worst = match state_bound {
                StateBound::Fixed => {
                    assert_state_close(&what, step, &state, &states[k], |_, _| STATE_BOUND)
                }
                StateBound::Derived => {
                    let bounds =
                        runtimes::derived_bounds(step, &accumulation, STEPS[k].1, &states[k]);
                    assert_state_close(&what, step, &state, &states[k], bounds)
                }
            };
            eprintln!("{what}: state within {worst:.1e} of its bounds");
            let err = relative(result.chain_losses[k], losses[k]);
            eprintln!(
                "{what}: chained loss {} vs native {} ({err:.1e})",
                result.chain_losses[k], losses[k]
            );
            assert!(
                err <= forward,
                "{what}: chained loss {} differs from native's {} by {err:e} relative (forward bound {forward:e})",
                result.chain_losses[k],
                losses[k]
            );
        }
    }
}

#[test]
fn mlp_trains_in_onnxruntime_web_and_node_as_in_native_onnx_runtime() {
    trains_as_native_onnx_runtime("mlp", 1);
}

#[test]
fn cnn_trains_in_onnxruntime_web_and_node_as_in_native_onnx_runtime() {
    trains_as_native_onnx_runtime("cnn", 2);
}

#[test]
fn resnet32_trains_in_onnxruntime_web_and_node_as_in_native_onnx_runtime() {
    trains_as_native_onnx_runtime("resnet32", 3);
}
