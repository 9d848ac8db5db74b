//! One compiled SGD step of a small MLP patched with LDAM-DRW, run in ONNX
//! Runtime, against the same step computed by hand in float64 from the formulas:
//! loss, gradients (through the cosine head) and updated weights, two steps so the
//! momentum buffer matters.

mod common;

use common::tolerance::Accumulation;
use common::{node, run, Data, Rng};
use ldam_onnx::compile::{compile, CompileOptions, StateKind};
use ldam_onnx::ldam::{effective_number_weights, margins, LossConfig};
use ldam_onnx::onnx::builder::attr_int;
use ldam_onnx::onnx::tensor::{f32_tensor, f32_values, FLOAT};
use ldam_onnx::onnx::types::{value_info, Dim};
use ldam_onnx::onnx::{GraphProto, ModelProto};
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use std::collections::HashMap;

const N: usize = 5;
const D: usize = 6;
const H: usize = 5;
const C: usize = 4;
const COUNTS: [u64; C] = [200, 60, 15, 4];
const LR: f64 = 0.1;
const MOMENTUM: f64 = 0.9;
const WEIGHT_DECAY: f64 = 2e-4;
const EPOCH: i64 = 3; // past the DRW epoch below, so class weights apply

fn mlp(w1: &[f32], b1: &[f32], w2: &[f32], b2: &[f32]) -> ModelProto {
    let n = Dim::Symbolic("N".into());
    let graph = GraphProto {
        name: Some("mlp".into()),
        node: vec![
            node(
                "Gemm",
                &["x", "fc1.weight", "fc1.bias"],
                &["h1"],
                vec![attr_int("transB", 1)],
            ),
            node("Relu", &["h1"], &["a1"], vec![]),
            node(
                "Gemm",
                &["a1", "fc2.weight", "fc2.bias"],
                &["scores"],
                vec![attr_int("transB", 1)],
            ),
        ],
        initializer: vec![
            f32_tensor("fc1.weight", &[H as i64, D as i64], w1),
            f32_tensor("fc1.bias", &[H as i64], b1),
            f32_tensor("fc2.weight", &[C as i64, H as i64], w2),
            f32_tensor("fc2.bias", &[C as i64], b2),
        ],
        input: vec![value_info("x", FLOAT, &[n.clone(), Dim::Fixed(D as i64)])],
        output: vec![value_info("scores", FLOAT, &[n, Dim::Fixed(C as i64)])],
        ..Default::default()
    };
    common::model_from_graph(graph, 17)
}

/// Parameters of the reference computation, row-major as in the file.
#[derive(Clone)]
struct Params {
    w1: Vec<f64>,
    b1: Vec<f64>,
    w2: Vec<f64>,
}

struct Step {
    loss: f64,
    grads: Params,
}

fn normalize_rows(v: &[f64], width: usize) -> (Vec<f64>, Vec<f64>) {
    let norms: Vec<f64> = v
        .chunks(width)
        .map(|r| r.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12))
        .collect();
    let unit = v
        .iter()
        .enumerate()
        .map(|(i, a)| a / norms[i / width])
        .collect();
    (unit, norms)
}

/// d/dv of u = v / ||v|| applied to du, row by row: (du - u (u . du)) / ||v||.
fn normalize_rows_backward(unit: &[f64], norms: &[f64], du: &[f64], width: usize) -> Vec<f64> {
    let mut dv = vec![0.0; du.len()];
    for r in 0..norms.len() {
        let row = r * width..(r + 1) * width;
        let dot: f64 = unit[row.clone()]
            .iter()
            .zip(&du[row.clone()])
            .map(|(a, b)| a * b)
            .sum();
        for i in row {
            dv[i] = (du[i] - unit[i] * dot) / norms[r];
        }
    }
    dv
}

/// Forward and backward of: relu(x W1^T + b1) -> cosine head with W2 -> LDAM-DRW loss.
fn reference_step(p: &Params, x: &[f64], labels: &[usize], config: &LossConfig) -> Step {
    let m = margins(&config.class_counts, config.max_m);
    let w = effective_number_weights(&config.class_counts, config.beta);
    let h1: Vec<f64> = (0..N * H)
        .map(|k| {
            let (i, j) = (k / H, k % H);
            p.b1[j] + (0..D).map(|d| x[i * D + d] * p.w1[j * D + d]).sum::<f64>()
        })
        .collect();
    let a1: Vec<f64> = h1.iter().map(|v| v.max(0.0)).collect();
    let (f, f_norm) = normalize_rows(&a1, H);
    let (wn, w_norm) = normalize_rows(&p.w2, H);
    let z: Vec<f64> = (0..N * C)
        .map(|k| {
            let (i, c) = (k / C, k % C);
            (0..H).map(|h| f[i * H + h] * wn[c * H + h]).sum::<f64>()
        })
        .collect();
    let total_weight: f64 = labels.iter().map(|&y| w[y]).sum();
    let mut loss = 0.0;
    let mut dz = vec![0.0; N * C];
    for i in 0..N {
        let y = labels[i];
        let s: Vec<f64> = (0..C)
            .map(|c| config.scale * (z[i * C + c] - if c == y { m[c] } else { 0.0 }))
            .collect();
        let top = s.iter().cloned().fold(f64::MIN, f64::max);
        let sum_exp: f64 = s.iter().map(|v| (v - top).exp()).sum();
        loss += w[y] * (top + sum_exp.ln() - s[y]) / total_weight;
        for c in 0..C {
            let softmax = (s[c] - top).exp() / sum_exp;
            let onehot = if c == y { 1.0 } else { 0.0 };
            dz[i * C + c] = config.scale * w[y] / total_weight * (softmax - onehot);
        }
    }
    let df: Vec<f64> = (0..N * H)
        .map(|k| {
            let (i, h) = (k / H, k % H);
            (0..C).map(|c| dz[i * C + c] * wn[c * H + h]).sum::<f64>()
        })
        .collect();
    let dwn: Vec<f64> = (0..C * H)
        .map(|k| {
            let (c, h) = (k / H, k % H);
            (0..N).map(|i| dz[i * C + c] * f[i * H + h]).sum::<f64>()
        })
        .collect();
    let da1 = normalize_rows_backward(&f, &f_norm, &df, H);
    let dw2 = normalize_rows_backward(&wn, &w_norm, &dwn, H);
    let dh1: Vec<f64> = da1
        .iter()
        .zip(&h1)
        .map(|(g, h)| if *h > 0.0 { *g } else { 0.0 })
        .collect();
    let dw1: Vec<f64> = (0..H * D)
        .map(|k| {
            let (j, d) = (k / D, k % D);
            (0..N).map(|i| dh1[i * H + j] * x[i * D + d]).sum::<f64>()
        })
        .collect();
    let db1: Vec<f64> = (0..H)
        .map(|j| (0..N).map(|i| dh1[i * H + j]).sum::<f64>())
        .collect();
    Step {
        loss,
        grads: Params {
            w1: dw1,
            b1: db1,
            w2: dw2,
        },
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}

/// Relative error of a whole tensor, ||actual - expected|| / ||expected||: float32
/// arithmetic in the graph against float64 here.
fn assert_all_close(actual: &[f32], expected: &[f64], rel: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let diff: f64 = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (*a as f64 - e).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = expected.iter().map(|e| e * e).sum::<f64>().sqrt();
    assert!(
        diff <= rel * norm,
        "{what}: relative error {:e} > {rel:e}\n got {actual:?}\n expected {expected:?}",
        diff / norm
    );
}

#[test]
fn two_compiled_sgd_steps_match_a_hand_computed_ldam_drw_step() {
    let mut rng = Rng::new(2024);
    let w1 = rng.floats(H * D, -0.6, 0.6);
    let b1 = rng.floats(H, -0.1, 0.1);
    let w2 = rng.floats(C * H, -0.6, 0.6);
    let b2 = rng.floats(C, -0.1, 0.1);
    let x = rng.floats(N * D, -1.0, 1.0);
    let labels: Vec<usize> = vec![0, 1, 2, 3, 1];

    let config = LossConfig {
        drw_epoch: 2,
        ..LossConfig::reference(COUNTS.to_vec())
    };
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: config.clone(),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    let (patched, _) = patch(&mlp(&w1, &b1, &w2, &b2), &options).unwrap();
    let step = compile(
        &patched,
        &CompileOptions {
            momentum: MOMENTUM,
            weight_decay: WEIGHT_DECAY,
            freeze: vec![],
            sam: None,
        },
    )
    .unwrap();
    if let Ok(path) = std::env::var("DUMP_STEP") {
        std::fs::write(path, ldam_onnx::onnx::io::to_bytes(&step.model)).unwrap();
    }
    let parameters: Vec<&str> = step
        .state
        .iter()
        .filter(|s| s.kind == StateKind::Parameter)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        parameters,
        ["fc1.weight", "fc1.bias", "fc2.weight"],
        "the cosine head drops fc2.bias"
    );

    // The initial state values, fed back step by step.
    let initial = step.initial_values();
    let mut state: HashMap<String, Vec<f32>> = step
        .state
        .iter()
        .map(|s| (s.name.clone(), f32_values(&initial[&s.name]).unwrap()))
        .collect();
    let mut reference = Params {
        w1: widen(&w1),
        b1: widen(&b1),
        w2: widen(&w2),
    };
    let mut velocity = Params {
        w1: vec![0.0; H * D],
        b1: vec![0.0; H],
        w2: vec![0.0; C * H],
    };

    // ONNX Runtime's float32 step against the float64 formulas: the network's
    // rounding bounds (`common::tolerance`, conservative by the factor 2 it takes
    // for two runtimes). Its one ReLU gate allowance is not needed when every
    // pre-activation lies farther from zero than the forward error, checked on
    // each round's reference below.
    let mut accumulation = Accumulation::of(&patched, N as i64);
    let forward_bound = accumulation.forward_bound();
    accumulation.gated = false;
    let gradient_bound = accumulation.gradient_bound();

    for round in 0..2 {
        let pre_activations: Vec<f64> = (0..N * H)
            .map(|i| {
                let (n, h) = (i / H, i % H);
                reference.b1[h]
                    + (0..D)
                        .map(|d| f64::from(x[n * D + d]) * reference.w1[h * D + d])
                        .sum::<f64>()
            })
            .collect();
        let scale = pre_activations.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let nearest = pre_activations.iter().fold(f64::MAX, |m, v| m.min(v.abs()));
        assert!(
            nearest > forward_bound * scale,
            "round {round}: a pre-activation ({nearest:e}) lies within rounding of the ReLU's kink"
        );
        let mut inputs = vec![
            ("x", Data::F32(vec![N as i64, D as i64], x.clone())),
            (
                "labels",
                Data::I64(vec![N as i64], labels.iter().map(|&y| y as i64).collect()),
            ),
            ("epoch", Data::I64(vec![], vec![EPOCH])),
            ("lr", Data::F32(vec![], vec![LR as f32])),
        ];
        for s in &step.state {
            let dims: Vec<i64> = initial[&s.name].dims.clone();
            inputs.push((s.name.as_str(), Data::F32(dims, state[&s.name].clone())));
        }
        let outputs = run(&step.model, &inputs);

        let expected = reference_step(&reference, &widen(&x), &labels, &config);
        let loss = outputs["loss"].f32()[0] as f64;
        assert!(
            (loss - expected.loss).abs() <= forward_bound * expected.loss,
            "round {round}: loss {loss} vs {}",
            expected.loss
        );

        // torch.optim.SGD: v = mu v + (g + wd p); p -= lr v.
        let update = |p: &mut Vec<f64>, v: &mut Vec<f64>, g: &[f64]| {
            for i in 0..p.len() {
                v[i] = MOMENTUM * v[i] + g[i] + WEIGHT_DECAY * p[i];
                p[i] -= LR * v[i];
            }
        };
        update(&mut reference.w1, &mut velocity.w1, &expected.grads.w1);
        update(&mut reference.b1, &mut velocity.b1, &expected.grads.b1);
        update(&mut reference.w2, &mut velocity.w2, &expected.grads.w2);

        let pairs = [
            ("fc1.weight", &reference.w1, &velocity.w1),
            ("fc1.bias", &reference.b1, &velocity.b1),
            ("fc2.weight", &reference.w2, &velocity.w2),
        ];
        for (name, value, buffer) in pairs {
            let next = outputs[&format!("{name}.next")].f32().to_vec();
            let momentum_next = outputs[&format!("{name}.momentum.next")].f32().to_vec();
            // Each round's float32 gradients differ from the float64 ones by the
            // gradient bound; the buffers and parameters carry every round's.
            let rounds = (round + 1) as f64;
            assert_all_close(
                &momentum_next,
                buffer,
                rounds * gradient_bound,
                &format!("round {round} {name}.momentum"),
            );
            assert_all_close(
                &next,
                value,
                rounds * gradient_bound,
                &format!("round {round} {name}"),
            );
            state.insert(name.to_string(), next);
            state.insert(format!("{name}.momentum"), momentum_next);
        }
    }
}
