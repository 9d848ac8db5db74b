//! The compiled SAM step (`compile --sam RHO`) in ONNX Runtime against a float64
//! two-pass step derived by hand in this file: the MLP's forward and backward
//! pass written out, `e = rho g / (||g|| + 1e-12)` over all parameters, the
//! gradient at `w + e`, then SGD with momentum and weight decay at `w`. The
//! first pass alone updates BatchNorm's running statistics; with the `torch`
//! feature, the libtorch backend's SAM step agrees with the compiled one.

mod common;

use common::tolerance::{normwise_error, Accumulation};
use common::Rng;
use ldam_onnx::backend::onnxruntime::OrtTrainer;
use ldam_onnx::backend::{Batch, Device, Trainer};
use ldam_onnx::compile::{compile, CompileOptions, StateKind};
use ldam_onnx::ldam::contract;
use ldam_onnx::ldam::{LossConfig, LossKind, Reweight};
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::{ModelProto, TensorProto};
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use std::collections::HashMap;

const COUNTS: [u64; 10] = [500, 300, 180, 110, 65, 40, 23, 14, 8, 5];
const BATCH: usize = 12;
const RHO: f64 = 0.5;
const LR: f32 = 0.1;
const MOMENTUM: f64 = 0.9;
const WEIGHT_DECAY: f64 = 5e-3;
const LA_TAU: f64 = 0.8;

/// The MLP with the logit-adjusted loss, effective-number weights and its ReLUs
/// as Tanh (smooth, so float32 and float64 take the same branches).
fn smooth_mlp() -> ModelProto {
    let mut mlp = common::bundled("mlp");
    for node in &mut mlp.graph.as_mut().unwrap().node {
        if node.op_type() == "Relu" {
            node.op_type = Some("Tanh".into());
        }
    }
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig {
            loss: LossKind::La,
            reweight: Reweight::Rw,
            la_tau: LA_TAU,
            ..LossConfig::reference(COUNTS.to_vec())
        },
        head: HeadMode::Keep,
        logits: None,
        names: ContractNames::default(),
    };
    patch(&mlp, &options).unwrap().0
}

fn batch(seed: u64) -> Batch {
    let mut rng = Rng::new(seed);
    Batch {
        shape: vec![BATCH as i64, 1, 28, 28],
        data: rng.floats(BATCH * 784, 0.0, 1.0),
        labels: (0..BATCH).map(|_| rng.below(10) as i64).collect(),
    }
}

/// One dense layer `y = x W^T + b`, W stored [out, in].
struct Layer {
    weight: Vec<f64>,
    bias: Vec<f64>,
    inputs: usize,
    outputs: usize,
}

fn dense(x: &[f64], layer: &Layer) -> Vec<f64> {
    let n = x.len() / layer.inputs;
    let mut y = vec![0.0; n * layer.outputs];
    for i in 0..n {
        for o in 0..layer.outputs {
            let row = &layer.weight[o * layer.inputs..(o + 1) * layer.inputs];
            let xi = &x[i * layer.inputs..(i + 1) * layer.inputs];
            y[i * layer.outputs + o] =
                layer.bias[o] + row.iter().zip(xi).map(|(w, v)| w * v).sum::<f64>();
        }
    }
    y
}

/// Loss and gradients (weight, bias per layer) of
/// `CE(tanh(tanh(x W1 + b1) W2 + b2) W3 + b3 + tau log pi, y)`, mean weighted by
/// the effective-number class weights, all in float64.
fn loss_and_gradients(layers: &[Layer], x: &[f64], labels: &[i64]) -> (f64, Vec<Vec<f64>>) {
    let total: f64 = COUNTS.iter().map(|&n| n as f64).sum();
    let beta: f64 = 0.9999;
    let raw: Vec<f64> = COUNTS
        .iter()
        .map(|&n| (1.0 - beta) / (1.0 - beta.powf(n as f64)))
        .collect();
    let raw_sum: f64 = raw.iter().sum();
    let class_weight: Vec<f64> = raw.iter().map(|w| w * 10.0 / raw_sum).collect();

    let mut activations = vec![x.to_vec()];
    for (k, layer) in layers.iter().enumerate() {
        let mut y = dense(activations.last().unwrap(), layer);
        if k + 1 < layers.len() {
            y.iter_mut().for_each(|v| *v = v.tanh());
        }
        activations.push(y);
    }
    let z = activations.last().unwrap();
    let weight_sum: f64 = labels.iter().map(|&y| class_weight[y as usize]).sum();
    let mut loss = 0.0;
    let mut dz = vec![0.0; z.len()];
    for (i, &y) in labels.iter().enumerate() {
        let y = y as usize;
        let scores: Vec<f64> = (0..10)
            .map(|j| z[i * 10 + j] + LA_TAU * (COUNTS[j] as f64 / total).ln())
            .collect();
        let top = scores.iter().cloned().fold(f64::MIN, f64::max);
        let exp: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
        let sum: f64 = exp.iter().sum();
        let w = class_weight[y] / weight_sum;
        loss += w * (top + sum.ln() - scores[y]);
        for j in 0..10 {
            let onehot = if j == y { 1.0 } else { 0.0 };
            dz[i * 10 + j] = w * (exp[j] / sum - onehot);
        }
    }
    // Backward through the layers, last first.
    let mut grads = vec![Vec::new(); 2 * layers.len()];
    let mut delta = dz;
    for k in (0..layers.len()).rev() {
        let layer = &layers[k];
        let input = &activations[k];
        let n = input.len() / layer.inputs;
        let mut dw = vec![0.0; layer.weight.len()];
        let mut db = vec![0.0; layer.outputs];
        let mut dx = vec![0.0; input.len()];
        for i in 0..n {
            for o in 0..layer.outputs {
                let d = delta[i * layer.outputs + o];
                db[o] += d;
                for f in 0..layer.inputs {
                    dw[o * layer.inputs + f] += d * input[i * layer.inputs + f];
                    dx[i * layer.inputs + f] += d * layer.weight[o * layer.inputs + f];
                }
            }
        }
        grads[2 * k] = dw;
        grads[2 * k + 1] = db;
        if k > 0 {
            // Through the tanh that produced this layer's input.
            for (d, a) in dx.iter_mut().zip(input) {
                *d *= 1.0 - a * a;
            }
        }
        delta = dx;
    }
    (loss, grads)
}

/// The parameter names in layer order: (weight, bias) of each Gemm.
fn parameter_names(model: &ModelProto) -> Vec<String> {
    model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type() == "Gemm")
        .flat_map(|n| [n.input[1].clone(), n.input[2].clone()])
        .collect()
}

fn values(state: &HashMap<String, TensorProto>, name: &str) -> Vec<f32> {
    f32_values(&state[name]).unwrap()
}

#[test]
fn sam_step_on_the_mlp_matches_a_hand_derived_float64_two_pass_step() {
    let model = smooth_mlp();
    let options = CompileOptions {
        momentum: MOMENTUM,
        weight_decay: WEIGHT_DECAY,
        sam: Some(RHO),
        ..CompileOptions::default()
    };
    let step = compile(&model, &options).unwrap();
    assert_eq!(
        ldam_onnx::onnx::metadata(&step.model, contract::keys::SAM_RHO),
        Some("0.5")
    );
    ldam_onnx::runtime::init().unwrap();
    let mut ort = OrtTrainer::new(&step, Device::Cpu).unwrap();
    let before = ort.state().unwrap();
    let batch = batch(3);
    let output = ort.step(&batch, 0, LR).unwrap();
    let after = ort.state().unwrap();

    // The hand-derived step in float64 from the same weights.
    let names = parameter_names(&model);
    let layer_of = |state: &HashMap<String, TensorProto>, k: usize| -> Layer {
        let weight = &state[&names[2 * k]];
        Layer {
            weight: values(state, &names[2 * k])
                .iter()
                .map(|&v| v as f64)
                .collect(),
            bias: values(state, &names[2 * k + 1])
                .iter()
                .map(|&v| v as f64)
                .collect(),
            inputs: weight.dims[1] as usize,
            outputs: weight.dims[0] as usize,
        }
    };
    let layers: Vec<Layer> = (0..3).map(|k| layer_of(&before, k)).collect();
    let x: Vec<f64> = batch.data.iter().map(|&v| v as f64).collect();
    let (loss, first) = loss_and_gradients(&layers, &x, &batch.labels);
    let norm = first.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    let scale = RHO / (norm + 1e-12);
    let perturbed: Vec<Layer> = layers
        .iter()
        .enumerate()
        .map(|(k, l)| Layer {
            weight: l
                .weight
                .iter()
                .zip(&first[2 * k])
                .map(|(w, g)| w + scale * g)
                .collect(),
            bias: l
                .bias
                .iter()
                .zip(&first[2 * k + 1])
                .map(|(b, g)| b + scale * g)
                .collect(),
            inputs: l.inputs,
            outputs: l.outputs,
        })
        .collect();
    let (_, second) = loss_and_gradients(&perturbed, &x, &batch.labels);

    let acc = Accumulation::of(&model, BATCH as i64);
    // The reported loss is the first pass's.
    let loss_err = ((output.loss as f64 - loss) / loss).abs();
    assert!(
        loss_err <= acc.forward_bound(),
        "loss {} vs {loss}",
        output.loss
    );
    // Each buffer holds v = g(w + e) + wd w (first step from zero). The second
    // gradient is a gradient of the same network, so its rounding bound applies;
    // the first gradient reaches it only through e, whose error moves the
    // evaluation point by rho times that bound (relative), a second-order change.
    let bound = acc.gradient_bound() * (1.0 + RHO);
    for (i, name) in names.iter().enumerate() {
        let w: Vec<f64> = values(&before, name).iter().map(|&v| v as f64).collect();
        let v_expected: Vec<f32> = second[i]
            .iter()
            .zip(&w)
            .map(|(g, w)| (g + WEIGHT_DECAY * w) as f32)
            .collect();
        let v = values(&after, &contract::momentum_name(name));
        let err = normwise_error(&v, &v_expected, 0.0);
        eprintln!("{name}: momentum {err:.2e} of {bound:.2e}");
        assert!(
            err <= bound,
            "{name}: momentum differs by {err:e} (bound {bound:e})"
        );
        // Plain SGD's direction (the gradient at w) is far from it: the test
        // sees the second pass.
        let plain: Vec<f32> = first[i]
            .iter()
            .zip(&w)
            .map(|(g, w)| (g + WEIGHT_DECAY * w) as f32)
            .collect();
        assert!(
            normwise_error(&plain, &v_expected, 0.0) > 10.0 * bound,
            "{name}"
        );
        // w' = w - lr v at w, not at w + e.
        let w_expected: Vec<f32> = w
            .iter()
            .zip(&v_expected)
            .map(|(w, v)| (w - LR as f64 * *v as f64) as f32)
            .collect();
        let w_next = values(&after, name);
        let scale =
            LR as f64 * common::tolerance::norm(&v_expected) / common::tolerance::norm(&w_expected);
        let w_bound = bound * scale + 4.0 * acc.unit_roundoff;
        let err = normwise_error(&w_next, &w_expected, 0.0);
        assert!(
            err <= w_bound,
            "{name}: weight differs by {err:e} (bound {w_bound:e})"
        );
    }
}

#[test]
fn running_statistics_come_from_the_first_pass_only() {
    // The CNN has BatchNorm: the SAM step and the plain step share the first
    // pass, so their running statistics after one step are the same values.
    let model = common::patch_with(
        &common::bundled("cnn"),
        LossConfig::reference(COUNTS.to_vec()),
    );
    ldam_onnx::runtime::init().unwrap();
    let batch = batch(8);
    let mut states = Vec::new();
    for sam in [None, Some(RHO)] {
        let options = CompileOptions {
            sam,
            ..CompileOptions::default()
        };
        let step = compile(&model, &options).unwrap();
        let mut ort = OrtTrainer::new(&step, Device::Cpu).unwrap();
        ort.step(&batch, 0, LR).unwrap();
        states.push((step, ort.state().unwrap()));
    }
    let (plain_step, plain) = &states[0];
    let (_, sam) = &states[1];
    let mut statistics = 0;
    let mut parameters_differ = false;
    for s in &plain_step.state {
        let (a, b) = (values(plain, &s.name), values(sam, &s.name));
        match s.kind {
            StateKind::RunningMean | StateKind::RunningVar => {
                statistics += 1;
                assert_eq!(a, b, "{}: running statistics differ", s.name);
            }
            StateKind::Parameter => parameters_differ |= a != b,
            StateKind::Momentum => {}
        }
    }
    assert!(statistics > 0, "the CNN has BatchNorm");
    assert!(parameters_differ, "SAM changes the update");
}

#[test]
fn a_radius_that_is_not_positive_is_refused_naming_the_setting() {
    let model = smooth_mlp();
    for rho in [0.0, -0.1, f64::NAN] {
        let options = CompileOptions {
            sam: Some(rho),
            ..CompileOptions::default()
        };
        let error = compile(&model, &options).unwrap_err();
        let flags = error.naming_settings(ldam_onnx::error::SettingNames::Flags);
        assert!(
            flags.starts_with("--sam must be a positive radius"),
            "{flags}"
        );
    }
}

/// The libtorch backend's SAM step (autograd, two passes) against the compiled
/// one, from the same weights and batch, on the MLP (smooth) and the CNN
/// (BatchNorm in both passes).
#[cfg(feature = "torch")]
#[test]
fn the_libtorch_sam_step_agrees_with_the_compiled_one() {
    use ldam_onnx::backend::torch::TorchTrainer;
    let cnn = common::patch_with(
        &common::bundled("cnn"),
        LossConfig::reference(COUNTS.to_vec()),
    );
    ldam_onnx::runtime::init().unwrap();
    for (name, model) in [("mlp", smooth_mlp()), ("cnn", cnn)] {
        let options = CompileOptions {
            sam: Some(RHO),
            ..CompileOptions::default()
        };
        let step = compile(&model, &options).unwrap();
        let mut ort = OrtTrainer::new(&step, Device::Cpu).unwrap();
        let mut torch = TorchTrainer::new(&model, &options, Device::Cpu).unwrap();
        let batch = batch(21);
        let o = ort.step(&batch, 0, LR).unwrap();
        let t = torch.step(&batch, 0, LR).unwrap();
        let acc = Accumulation::of(&model, BATCH as i64);
        let loss_err = ((t.loss as f64 - o.loss as f64) / o.loss as f64).abs();
        assert!(
            loss_err <= acc.forward_bound(),
            "{name}: loss {} vs {}",
            t.loss,
            o.loss
        );
        let (ort_state, torch_state) = (ort.state().unwrap(), torch.state().unwrap());
        // Two gradient computations in sequence, as above; with ReLU gates the
        // flipped-gate allowance is inside gradient_bound already.
        let bound = acc.gradient_bound() * (1.0 + RHO);
        for s in &step.state {
            let (a, b) = (values(&torch_state, &s.name), values(&ort_state, &s.name));
            // A bias feeding a training-mode BatchNorm has a zero gradient in
            // exact arithmetic; its buffer holds rounding noise, measured
            // against the parameters' own scale.
            let floor = common::tolerance::norm(&b).max(1e-3);
            let err = normwise_error(&a, &b, floor);
            let bound = match s.kind {
                StateKind::RunningMean | StateKind::RunningVar => acc.forward_bound(),
                _ => bound,
            };
            eprintln!("{name}: {} {err:.2e} of {bound:.2e}", s.name);
            assert!(
                err <= bound,
                "{name}: {} differs by {err:e} (bound {bound:e})",
                s.name
            );
        }
    }
}
