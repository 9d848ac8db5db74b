//! The libtorch backend against the compiled ONNX training step in ONNX Runtime:
//! two independent implementations of the forward pass, the gradients (libtorch's
//! autograd vs our ONNX backward graph), the SGD update and the BatchNorm running
//! statistics, on every network in `models/`.
#![cfg(feature = "torch")]

mod common;

use common::tolerance::{self, Accumulation};
use common::{run, Data, Rng};
use ldam_onnx::backend::onnxruntime::OrtTrainer;
use ldam_onnx::backend::torch::TorchTrainer;
use ldam_onnx::backend::{Batch, Device, Trainer};
use ldam_onnx::compile::{compile, CompileOptions, StateKind};
use ldam_onnx::ldam::contract;
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::types::{tensor_type, Dim};
use ldam_onnx::onnx::{ModelProto, TensorProto};
use std::collections::HashMap;
use std::path::Path;

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
const BATCH: i64 = 8;
const LR: f32 = 0.1;
/// The DRW epoch of `LossConfig::reference` (the paper's 160).
const DRW_EPOCH: i64 = 160;

fn patched(path: &Path) -> ModelProto {
    common::patch_with(
        &load(path).unwrap().model,
        LossConfig::reference(COUNTS.to_vec()),
    )
}

/// A seeded batch for the model's data input (symbolic dims become BATCH).
fn batch(model: &ModelProto, seed: u64) -> Batch {
    let graph = model.graph.as_ref().unwrap();
    let input = tensor_type(&graph.input[0]).unwrap();
    let shape: Vec<i64> = input
        .shape
        .unwrap()
        .iter()
        .map(|d| if let Dim::Fixed(v) = d { *v } else { BATCH })
        .collect();
    let mut rng = Rng::new(seed);
    let count = shape.iter().product::<i64>() as usize;
    Batch {
        data: rng.floats(count, -1.0, 1.0),
        labels: (0..shape[0]).map(|_| rng.below(10) as i64).collect(),
        shape,
    }
}

fn values(tensor: &TensorProto) -> Vec<f32> {
    f32_values(tensor).expect("state tensors are inline float32")
}

/// How closely the two runtimes must agree, normwise relative per tensor, derived
/// from the network's float32 accumulation (`common::tolerance`).
struct Tolerance {
    accumulation: Accumulation,
    /// Whether evaluation and the exported model are compared too.
    evaluation: bool,
}

impl Tolerance {
    fn of(model: &ModelProto, evaluation: bool) -> Tolerance {
        Tolerance {
            accumulation: Accumulation::of(model, BATCH),
            evaluation,
        }
    }
}

/// The state after one step from the same state on both runtimes. Each kind of
/// tensor has its own bound:
/// - momentum buffers hold `v = mu v0 + g + wd w` with `v0` and `w` shared, so they
///   differ as the gradients do: `gradient_bound`;
/// - parameters `w' = w - lr v` differ by `lr ||dv||` (with `||dv||` bounded as the
///   buffers are, floor included), relative to `||w'||`, plus the update's own
///   two roundings in each runtime: `2u (||w'|| + lr ||v||) / ||w'||`;
/// - running statistics are forward values: `forward_bound`.
///
/// A tensor that is zero in exact arithmetic (a bias feeding a training-mode
/// BatchNorm has a zero gradient: the normalisation cancels it) holds only
/// rounding noise at the scale of its kind's other tensors, so each norm is floored
/// at that kind's root-mean-square element times the square root of the tensor's
/// size.
fn assert_states_agree(
    name: &str,
    step: &ldam_onnx::compile::TrainStep,
    torch: &HashMap<String, TensorProto>,
    ort: &HashMap<String, TensorProto>,
    tolerance: &Tolerance,
) {
    assert_eq!(torch.len(), ort.len(), "{name}: state sizes differ");
    let rms_of_kind = |kind: StateKind| {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for s in step.state.iter().filter(|s| s.kind == kind) {
            let v = values(&ort[&s.name]);
            sum += tolerance::norm(&v).powi(2);
            count += v.len();
        }
        (sum / count.max(1) as f64).sqrt()
    };
    let acc = &tolerance.accumulation;
    for s in &step.state {
        let (t, o) = (values(&torch[&s.name]), values(&ort[&s.name]));
        assert_eq!(
            torch[&s.name].dims, ort[&s.name].dims,
            "{name}: {} shapes differ",
            s.name
        );
        let floor = rms_of_kind(s.kind) * (o.len() as f64).sqrt();
        let bound = match s.kind {
            StateKind::Parameter => {
                // The momentum buffer's difference, bounded as the buffers are
                // compared below: relative to its norm or its kind's floor.
                let momentum = values(&ort[&contract::momentum_name(&s.name)]);
                let momentum_scale = tolerance::norm(&momentum)
                    .max(rms_of_kind(StateKind::Momentum) * (momentum.len() as f64).sqrt());
                let scale = tolerance::norm(&o).max(floor);
                let step_share = f64::from(LR) * tolerance::norm(&momentum) / scale;
                f64::from(LR) * acc.gradient_bound() * momentum_scale / scale
                    + 2.0 * acc.unit_roundoff * (1.0 + step_share)
            }
            StateKind::Momentum => acc.gradient_bound(),
            StateKind::RunningMean | StateKind::RunningVar => acc.forward_bound(),
        };
        let err = tolerance::normwise_error(&t, &o, floor);
        eprintln!(
            "{name}: {} {} {err:.2e} of {bound:.2e}",
            s.kind.as_str(),
            s.name
        );
        assert!(
            err <= bound,
            "{name}: {} ({}) differs by {err:e} normwise relative (bound {bound:e})",
            s.name,
            s.kind.as_str()
        );
    }
}

/// One step from the model's initial state on both runtimes, then a second step
/// from ONNX Runtime's state loaded into the torch trainer (a checkpoint moving
/// between runtimes) at an epoch past the DRW switch, then evaluation and the
/// exported model.
fn cross_check(name: &str, model: &ModelProto, tolerance: &Tolerance) {
    let options = CompileOptions::default();
    let step = compile(model, &options).unwrap();
    ldam_onnx::runtime::init().unwrap();
    let mut ort = OrtTrainer::new(&step, Device::Cpu).unwrap();
    let mut torch =
        TorchTrainer::new(model, &options, Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut torch_names: Vec<String> = torch.state().unwrap().into_keys().collect();
    let mut step_names: Vec<String> = step.state.iter().map(|s| s.name.clone()).collect();
    torch_names.sort();
    step_names.sort();
    assert_eq!(
        torch_names, step_names,
        "{name}: the state tensors are named as in the compiled step"
    );
    assert!(
        step.state.iter().any(|s| s.kind == StateKind::Momentum),
        "{name}: trains something"
    );
    let forward = tolerance.accumulation.forward_bound();
    // Epoch 0 uses unit class weights; DRW_EPOCH uses the effective-number weights,
    // so both runtimes' re-weighting is compared.
    for (round, epoch) in [(0u64, 0i64), (1, DRW_EPOCH)] {
        let name = format!("{name} step {round} (epoch {epoch})");
        let batch = batch(model, 11 + round);
        let t = torch.step(&batch, epoch, LR).unwrap();
        let o = ort.step(&batch, epoch, LR).unwrap();
        let loss_err = ((f64::from(t.loss) - f64::from(o.loss)) / f64::from(o.loss)).abs();
        assert!(
            loss_err <= forward,
            "{name}: loss {} vs {} (relative {loss_err:e}, bound {forward:e})",
            t.loss,
            o.loss
        );
        let logits_err = tolerance::normwise_error(&t.logits, &o.logits, 0.0);
        eprintln!("{name}: loss {loss_err:.2e}, logits {logits_err:.2e} of {forward:.2e}");
        assert!(
            logits_err <= forward,
            "{name}: logits differ by {logits_err:e} (bound {forward:e})"
        );
        let ort_state = ort.state().unwrap();
        assert_states_agree(&name, &step, &torch.state().unwrap(), &ort_state, tolerance);
        torch.set_state(&ort_state).unwrap();
    }
    if !tolerance.evaluation {
        return;
    }

    // Evaluation: BatchNorm on its running statistics, on both runtimes and in
    // the deployable model the torch backend exports.
    let eval = batch(model, 99);
    let t = torch.predict(&eval).unwrap();
    let o = ort.predict(&eval).unwrap();
    let err = tolerance::normwise_error(&t, &o, 0.0);
    assert!(
        err <= forward,
        "{name}: evaluation logits differ by {err:e} (bound {forward:e})"
    );
    let deployed = torch.inference_model().unwrap();
    let outputs = run(
        &deployed,
        &[("input", Data::F32(eval.shape.clone(), eval.data.clone()))],
    );
    let err = tolerance::normwise_error(outputs["logits"].f32(), &t, 0.0);
    assert!(
        err <= forward,
        "{name}: the exported model's logits differ from the torch backend's by {err:e} (bound {forward:e})"
    );
}

/// The networks as exported, ReLUs and all: gradients and parameters carry the
/// flipped gates' allowance (`common::tolerance`).
#[test]
fn one_step_on_libtorch_matches_the_compiled_step_in_onnx_runtime_for_every_model() {
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let model = patched(&path);
        let tolerance = Tolerance::of(&model, true);
        cross_check(&name, &model, &tolerance);
    }
}

/// Every network with its ReLUs replaced by Tanh, which is smooth everywhere: no
/// ReLU gate can flip, so gradients are held to the rounding bound alone (plus the
/// gate allowance where a MaxPool remains).
#[test]
fn gradients_agree_within_the_rounding_bound_on_every_model_with_smooth_activations() {
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut model = patched(&path);
        let mut replaced = 0;
        for node in &mut model.graph.as_mut().unwrap().node {
            if node.op_type() == "Relu" {
                node.op_type = Some("Tanh".into());
                replaced += 1;
            }
        }
        assert!(replaced > 0, "{name}: has ReLUs");
        // Evaluation is compared on the networks as exported: after two steps these
        // variants' running statistics do not normalise their activations, so the
        // O(1) amplification the bound assumes does not hold for them.
        let tolerance = Tolerance::of(&model, false);
        cross_check(&format!("{name} (tanh)"), &model, &tolerance);
    }
}

/// PyTorch's SGD by hand on the MLP: v = g + wd w after one step from a zero
/// buffer, w' = w - lr v; with momentum 0.5 and weight decay 0.01 taken from the
/// options, and a frozen parameter left untouched.
#[test]
fn sgd_uses_the_options_momentum_weight_decay_and_freeze() {
    let model = patched(&common::repo_dir().join("models/mlp.onnx"));
    let frozen = "net.1.bias".to_string();
    let options = CompileOptions {
        momentum: 0.5,
        weight_decay: 0.01,
        freeze: vec![frozen.clone()],
        sam: None,
    };
    let mut torch = TorchTrainer::new(&model, &options, Device::Cpu).unwrap();
    let before = torch.state().unwrap();
    assert!(!before.contains_key(&frozen), "a frozen tensor is no state");
    assert!(!before.contains_key(&format!("{frozen}.momentum")));
    let batch = batch(&model, 5);
    torch.step(&batch, 0, 0.2).unwrap();
    let first = torch.state().unwrap();
    torch.step(&batch, 0, 0.2).unwrap();
    let second = torch.state().unwrap();
    let weight = "net.5.weight";
    let momentum = format!("{weight}.momentum");
    let (w0, w1, w2) = (
        values(&before[weight]),
        values(&first[weight]),
        values(&second[weight]),
    );
    let (v1, v2) = (values(&first[&momentum]), values(&second[&momentum]));
    for i in 0..w0.len() {
        assert!((w1[i] - (w0[i] - 0.2 * v1[i])).abs() <= 1e-6);
        assert!((w2[i] - (w1[i] - 0.2 * v2[i])).abs() <= 1e-6);
    }
    // v2 = 0.5 v1 + g2 + 0.01 w1, with g2 the plain gradient at w1: from a second
    // trainer without momentum or decay (its buffer after one step is g2), so
    // that the decay and the momentum are checked against the formula, not
    // against another trainer with the same options.
    let plain = CompileOptions {
        momentum: 0.0,
        weight_decay: 0.0,
        ..options.clone()
    };
    let mut fresh = TorchTrainer::new(&model, &plain, Device::Cpu).unwrap();
    let mut restart = first.clone();
    for (name, tensor) in restart.iter_mut() {
        if name.ends_with(".momentum") {
            *tensor = ldam_onnx::onnx::tensor::f32_tensor(
                name,
                &tensor.dims,
                &vec![0.0; values(tensor).len()],
            );
        }
    }
    fresh.set_state(&restart).unwrap();
    fresh.step(&batch, 0, 0.2).unwrap();
    let g2 = values(&fresh.state().unwrap()[&momentum]);
    // Elements of v2 off the formula with the given momentum and decay.
    let off = |mu: f32, wd: f32| -> Vec<String> {
        (0..v2.len())
            .filter_map(|i| {
                let expected = mu * v1[i] + g2[i] + wd * w1[i];
                let err = f64::from((v2[i] - expected).abs());
                (!tolerance::within(err, 1e-5 * (1.0 + f64::from(expected.abs()))))
                    .then(|| format!("momentum {i}: {} vs {expected}", v2[i]))
            })
            .collect()
    };
    let exact = off(0.5, 0.01);
    assert!(exact.is_empty(), "{}", exact.join("\n"));
    // Negative controls: the same check with the decay or the momentum dropped.
    assert!(
        !off(0.5, 0.0).is_empty(),
        "the check cannot see the weight decay"
    );
    assert!(
        !off(0.0, 0.01).is_empty(),
        "the check cannot see the momentum"
    );
}

#[test]
fn an_unsupported_op_fails_at_construction_naming_op_and_node() {
    let mut model = patched(&common::repo_dir().join("models/mlp.onnx"));
    let graph = model.graph.as_mut().unwrap();
    let relu = graph
        .node
        .iter_mut()
        .find(|n| n.op_type() == "Relu")
        .unwrap();
    relu.op_type = Some("Celu".into());
    relu.name = Some("odd_activation".into());
    let err = TorchTrainer::new(&model, &CompileOptions::default(), Device::Cpu)
        .err()
        .expect("Celu is not supported")
        .to_string();
    assert!(
        err.contains("'Celu'") && err.contains("odd_activation"),
        "{err}"
    );

    let mut model = patched(&common::repo_dir().join("models/mlp.onnx"));
    let node = &mut model.graph.as_mut().unwrap().node[0];
    node.domain = Some("com.example".into());
    let label = node.name().to_string();
    let err = TorchTrainer::new(&model, &CompileOptions::default(), Device::Cpu)
        .err()
        .expect("a custom-domain op is not supported")
        .to_string();
    assert!(
        err.contains("com.example:") && err.contains(&label),
        "{err}"
    );
}

#[test]
fn an_unpatched_model_is_refused() {
    let original = load(&common::repo_dir().join("models/mlp.onnx"))
        .unwrap()
        .model;
    let err = TorchTrainer::new(&original, &CompileOptions::default(), Device::Cpu)
        .err()
        .expect("an unpatched model cannot train")
        .to_string();
    assert!(err.contains("not patched"), "{err}");
}

/// On a machine without a CUDA GPU (or a build without libtorch's CUDA library)
/// asking for CUDA is a clear error; with one, the cross-check runs on cuda:0.
#[test]
fn cuda_is_an_error_without_a_gpu_and_matches_onnx_runtime_with_one() {
    let model = patched(&common::repo_dir().join("models/cnn.onnx"));
    let options = CompileOptions::default();
    if !tch::Cuda::is_available() {
        let err = TorchTrainer::new(&model, &options, Device::Cuda(0))
            .err()
            .expect("no CUDA device here");
        // The library names the setting; the command line names its flag.
        let message = err.to_string();
        assert!(
            message.starts_with("device cuda:0") && message.contains("CUDA device"),
            "{message}"
        );
        let flagged = err.naming_settings(ldam_onnx::SettingNames::Flags);
        assert!(flagged.starts_with("--device cuda:0"), "{flagged}");
        return;
    }
    let step = compile(&model, &options).unwrap();
    ldam_onnx::runtime::init().unwrap();
    let mut ort = OrtTrainer::new(&step, Device::Cpu).unwrap();
    let mut torch = TorchTrainer::new(&model, &options, Device::Cuda(0)).unwrap();
    let batch = batch(&model, 3);
    let t = torch.step(&batch, 0, LR).unwrap();
    let o = ort.step(&batch, 0, LR).unwrap();
    // cuDNN may run float32 convolutions in TF32 (10-bit mantissa): the bounds
    // take TF32's unit roundoff.
    let mut tolerance = Tolerance::of(&model, false);
    tolerance.accumulation.unit_roundoff = tolerance::TF32_UNIT_ROUNDOFF;
    let forward = tolerance.accumulation.forward_bound();
    assert!(((t.loss - o.loss) / o.loss).abs() as f64 <= forward);
    assert_states_agree(
        "cnn.onnx on cuda:0",
        &step,
        &torch.state().unwrap(),
        &ort.state().unwrap(),
        &tolerance,
    );
}

/// The torch backend names its state without the ONNX autodiff, so it trains a
/// graph whose gradient only libtorch's autograd has: here a CastLike (no ONNX
/// gradient rule) on the path to the loss. Its state is named as a compiled step
/// would name it (the parameters, their momentum buffers) and one step moves
/// every parameter.
#[test]
fn a_graph_without_an_onnx_gradient_rule_trains_on_libtorch() {
    let mut model = patched(&common::repo_dir().join("models/mlp.onnx"));
    let graph = model.graph.as_mut().unwrap();
    let relu = graph
        .node
        .iter_mut()
        .find(|n| n.op_type() == "Relu")
        .unwrap();
    relu.op_type = Some("CastLike".into());
    let x = relu.input[0].clone();
    relu.input.push(x);
    let options = CompileOptions::default();
    let err = compile(&model, &options)
        .err()
        .expect("the ONNX autodiff has no CastLike rule")
        .to_string();
    assert!(err.contains("no gradient rule for op 'CastLike'"), "{err}");

    let mut torch = TorchTrainer::new(&model, &options, Device::Cpu).unwrap();
    let before = torch.state().unwrap();
    let parameters: Vec<&String> = before
        .keys()
        .filter(|k| !k.ends_with(".momentum"))
        .collect();
    assert!(!parameters.is_empty());
    for p in &parameters {
        assert!(before.contains_key(&format!("{p}.momentum")), "{p}");
    }
    let out = torch.step(&batch(&model, 7), 0, LR).unwrap();
    assert!(out.loss.is_finite());
    let after = torch.state().unwrap();
    for p in parameters {
        let moved = tolerance::normwise_error(&values(&after[p]), &values(&before[p]), 1e-12);
        assert!(moved > 0.0, "{p} did not move");
    }
}

/// `input [N, 1, 4, 4]` through `nodes` to `features` values per example in
/// `out`, then Flatten and a Gemm to 10 classes, patched with the reference loss.
fn before_a_linear_head(
    name: &str,
    nodes: Vec<ldam_onnx::onnx::NodeProto>,
    mut initializers: Vec<ldam_onnx::onnx::TensorProto>,
    features: i64,
) -> ldam_onnx::onnx::ModelProto {
    use ldam_onnx::onnx::builder::attr_int;
    use ldam_onnx::onnx::tensor::{f32_tensor, FLOAT};
    use ldam_onnx::onnx::types::{value_info, Dim};
    let mut rng = common::Rng::new(5);
    let n = Dim::Symbolic("N".into());
    let mut node = nodes;
    node.push(common::node(
        "Flatten",
        &["out"],
        &["flat"],
        vec![attr_int("axis", 1)],
    ));
    node.push(common::node(
        "Gemm",
        &["flat", "fc.weight", "fc.bias"],
        &["logits"],
        vec![attr_int("transB", 1)],
    ));
    initializers.push(f32_tensor(
        "fc.weight",
        &[10, features],
        &rng.floats(10 * features as usize, -0.2, 0.2),
    ));
    initializers.push(f32_tensor("fc.bias", &[10], &rng.floats(10, -0.1, 0.1)));
    let graph = ldam_onnx::onnx::GraphProto {
        name: Some(name.into()),
        node,
        initializer: initializers,
        input: vec![value_info(
            "input",
            FLOAT,
            &[n.clone(), Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(4)],
        )],
        output: vec![value_info("logits", FLOAT, &[n, Dim::Fixed(10)])],
        ..Default::default()
    };
    common::patch_with(
        &common::model_from_graph(graph, 17),
        ldam_onnx::ldam::LossConfig::reference(vec![
            5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50,
        ]),
    )
}

/// Nearest upsampling (HRNet's fuse layers, FPN) on libtorch: its kernel and the
/// ONNX gradient rule agree with ONNX Runtime's step.
#[test]
fn nearest_resize_steps_alike_on_both_runtimes() {
    use ldam_onnx::onnx::builder::attr_string;
    use ldam_onnx::onnx::tensor::f32_tensor;
    let model = before_a_linear_head(
        "resize",
        vec![common::node(
            "Resize",
            &["input", "", "scales"],
            &["out"],
            vec![
                attr_string("mode", "nearest"),
                attr_string("coordinate_transformation_mode", "asymmetric"),
            ],
        )],
        vec![f32_tensor("scales", &[4], &[1.0, 1.0, 2.0, 2.0])],
        64,
    );
    let tolerance = Tolerance::of(&model, true);
    cross_check("resize", &model, &tolerance);
}

/// Bilinear upsampling (half-pixel, as `F.interpolate(mode="bilinear")` exports)
/// after a trained scale: the libtorch kernel and the gradient rule, both from
/// the same interpolation matrices, agree with ONNX Runtime's Resize and step.
#[test]
fn linear_resize_steps_alike_on_both_runtimes() {
    use ldam_onnx::onnx::builder::attr_string;
    use ldam_onnx::onnx::tensor::f32_tensor;
    let mut rng = common::Rng::new(8);
    let model = before_a_linear_head(
        "linear_resize",
        vec![
            common::node("Mul", &["input", "scale"], &["scaled"], vec![]),
            common::node(
                "Resize",
                &["scaled", "", "scales"],
                &["out"],
                vec![
                    attr_string("mode", "linear"),
                    attr_string("coordinate_transformation_mode", "half_pixel"),
                ],
            ),
        ],
        vec![
            f32_tensor("scale", &[1, 1, 4, 4], &rng.floats(16, 0.5, 1.5)),
            f32_tensor("scales", &[4], &[1.0, 1.0, 2.0, 1.5]),
        ],
        48,
    );
    let tolerance = Tolerance::of(&model, true);
    cross_check("linear resize", &model, &tolerance);
}

/// ScatterElements, GatherElements and GatherND on trained tensors (ConvIT's
/// `select_scatter`, TinyViT's attention-bias lookup): the libtorch kernels and
/// the ONNX gradient rules agree with ONNX Runtime's step.
#[test]
fn scatter_and_gather_ops_step_alike_on_both_runtimes() {
    use ldam_onnx::onnx::builder::attr_int;
    use ldam_onnx::onnx::tensor::{f32_tensor, i64_tensor};
    let mut rng = common::Rng::new(9);
    let gathered: Vec<i64> = (0..16).map(|i| (i * 5) % 16 - (i % 2) * 16).collect();
    // A relative-position bias table read by index pairs, some twice.
    let table_at: Vec<i64> = (0..16)
        .flat_map(|i| [(i * 3) % 4, (i / 3) % 4 - 4 * (i % 3 == 0) as i64])
        .collect();
    let model = before_a_linear_head(
        "scatter_gather",
        vec![
            common::node("Flatten", &["input"], &["x"], vec![attr_int("axis", 1)]),
            common::node(
                "ScatterElements",
                &["base", "scatter_at", "updates"],
                &["scattered"],
                vec![attr_int("axis", 1)],
            ),
            common::node(
                "GatherElements",
                &["scattered", "gather_at"],
                &["weights"],
                vec![attr_int("axis", 1)],
            ),
            common::node("GatherND", &["table", "table_at"], &["biases"], vec![]),
            common::node("Mul", &["x", "weights"], &["weighted"], vec![]),
            common::node("Add", &["weighted", "biases"], &["out"], vec![]),
        ],
        vec![
            f32_tensor("table", &[4, 4], &rng.floats(16, -0.5, 0.5)),
            i64_tensor("table_at", &[1, 16, 2], &table_at),
            f32_tensor("base", &[1, 16], &rng.floats(16, 0.5, 1.5)),
            f32_tensor("updates", &[1, 4], &rng.floats(4, 0.5, 1.5)),
            i64_tensor("scatter_at", &[1, 4], &[3, 0, -1, 8]),
            i64_tensor("gather_at", &[1, 16], &gathered),
        ],
        16,
    );
    let tolerance = Tolerance::of(&model, true);
    cross_check("scatter and gather", &model, &tolerance);
}

/// Tile after a trained scale: the libtorch kernel (`repeat`) and the ONNX
/// gradient rule (the copies summed) agree with ONNX Runtime's step.
#[test]
fn tile_steps_alike_on_both_runtimes() {
    use ldam_onnx::onnx::tensor::{f32_tensor, i64_tensor};
    let mut rng = common::Rng::new(6);
    let model = before_a_linear_head(
        "tile",
        vec![
            common::node("Mul", &["input", "scale"], &["scaled"], vec![]),
            common::node("Tile", &["scaled", "repeats"], &["out"], vec![]),
        ],
        vec![
            f32_tensor("scale", &[1, 1, 4, 4], &rng.floats(16, 0.5, 1.5)),
            i64_tensor("repeats", &[4], &[1, 2, 1, 3]),
        ],
        96,
    );
    let tolerance = Tolerance::of(&model, true);
    cross_check("tile", &model, &tolerance);
}

/// Weight standardisation as NF-Net exports it: a training-mode
/// BatchNormalization over the weight whose running-statistics inputs are
/// computed in the graph (`F.batch_norm(w, None, None, training=True)`). They
/// are not state: both runtimes train the weight, its gain and the head alike.
#[test]
fn a_training_mode_batchnorm_without_running_statistics_steps_alike_on_both_runtimes() {
    use ldam_onnx::onnx::builder::{attr_float, attr_int, attr_ints};
    use ldam_onnx::onnx::tensor::{f32_tensor, i64_tensor};
    let mut rng = common::Rng::new(7);
    let reduce = |input: &str, output: &str| {
        common::node(
            "ReduceMean",
            &[input],
            &[output],
            vec![attr_ints("axes", &[0, 2]), attr_int("keepdims", 0)],
        )
    };
    let model = before_a_linear_head(
        "weight_standardisation",
        vec![
            common::node("Reshape", &["ws.weight", "grouped"], &["w3"], vec![]),
            reduce("w3", "w_mean"),
            common::node("Mul", &["w3", "w3"], &["w_sq"], vec![]),
            reduce("w_sq", "w_mean_sq"),
            common::node(
                "BatchNormalization",
                &["w3", "ws.gain", "zero_shift", "w_mean", "w_mean_sq"],
                &["w_std3", "unused_mean", "unused_var"],
                vec![
                    attr_int("training_mode", 1),
                    attr_float("momentum", 1.0),
                    attr_float("epsilon", 1e-5),
                ],
            ),
            common::node("Reshape", &["w_std3", "square"], &["w_std"], vec![]),
            common::node("Flatten", &["input"], &["x"], vec![attr_int("axis", 1)]),
            common::node("MatMul", &["x", "w_std"], &["out"], vec![]),
        ],
        vec![
            f32_tensor("ws.weight", &[16, 16], &rng.floats(256, -0.5, 0.5)),
            f32_tensor("ws.gain", &[16], &rng.floats(16, 0.5, 1.5)),
            f32_tensor("zero_shift", &[16], &[0.0; 16]),
            i64_tensor("grouped", &[3], &[1, 16, 16]),
            i64_tensor("square", &[2], &[16, 16]),
        ],
        16,
    );
    let step = compile(&model, &CompileOptions::default()).unwrap();
    let mut names: Vec<&str> = step
        .state
        .iter()
        .filter(|s| s.kind != StateKind::Momentum)
        .map(|s| s.name.as_str())
        .collect();
    names.sort_unstable();
    // The computed statistics are not state; the weight and its gain train.
    assert_eq!(names, ["fc.weight", "ws.gain", "ws.weight", "zero_shift"]);
    let tolerance = Tolerance::of(&model, true);
    cross_check("weight standardisation", &model, &tolerance);
}
