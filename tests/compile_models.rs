//! Every network in `models/` compiles into a training step that passes the
//! structural check, runs in ONNX Runtime, and lowers the loss on a fixed batch
//! when its outputs are fed back as inputs.

mod common;

use common::tolerance::{self, Accumulation};
use common::{run, Data, Rng};
use ldam_onnx::compile::{compile, CompileOptions, StateKind};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::types::{tensor_type, Dim};
use ldam_onnx::ops::validate::check_model;
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use std::collections::HashMap;

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
const BATCH: i64 = 4;

#[test]
fn every_model_compiles_and_two_steps_lower_the_loss() {
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let original = load(&path).unwrap().model;
        let options = PatchOptions {
            batchnorm: Default::default(),
            config: LossConfig::reference(COUNTS.to_vec()),
            head: HeadMode::Auto,
            logits: None,
            names: ContractNames::default(),
        };
        let (patched, _) = patch(&original, &options).unwrap();
        let step =
            compile(&patched, &CompileOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_model(&step.model).unwrap_or_else(|e| panic!("{name}: {e}"));
        let graph = step.model.graph.as_ref().unwrap();
        let parameters = step
            .state
            .iter()
            .filter(|s| s.kind == StateKind::Parameter)
            .count();
        assert!(parameters > 0, "{name}: no trainable parameters");

        let input = tensor_type(&graph.input[0]).unwrap();
        let shape: Vec<i64> = input
            .shape
            .unwrap()
            .iter()
            .map(|d| if let Dim::Fixed(v) = d { *v } else { BATCH })
            .collect();
        let count = shape.iter().product::<i64>() as usize;
        let x = Rng::new(5).floats(count, -1.0, 1.0);
        let initial = step.initial_values();
        let mut state: HashMap<String, (Vec<i64>, Vec<f32>)> = step
            .state
            .iter()
            .map(|s| {
                let t = &initial[&s.name];
                (s.name.clone(), (t.dims.clone(), f32_values(t).unwrap()))
            })
            .collect();
        // The step size follows the gradient (read from the first step's momentum
        // buffers at lr 0) so that the first-order decrease lr |g|^2 is 1% of the
        // loss for every network: an eval-mode export at initialisation can have
        // gradients of norm 1e5 behind its cosine head.
        let mut losses = Vec::new();
        let mut lr = 0.0f32;
        for round in 0..4 {
            let mut inputs = vec![
                (graph.input[0].name(), Data::F32(shape.clone(), x.clone())),
                ("labels", Data::I64(vec![BATCH], vec![0, 3, 9, 5])),
                ("epoch", Data::I64(vec![], vec![0])),
                ("lr", Data::F32(vec![], vec![lr])),
            ];
            for s in &step.state {
                let (dims, values) = &state[&s.name];
                inputs.push((s.name.as_str(), Data::F32(dims.clone(), values.clone())));
            }
            let outputs = run(&step.model, &inputs);
            if round == 0 {
                let squared: f64 = step
                    .state
                    .iter()
                    .filter(|s| s.kind == StateKind::Momentum)
                    .flat_map(|s| outputs[&s.next].f32().iter().map(|&v| (v as f64).powi(2)))
                    .sum();
                lr = (0.01 * outputs["loss"].f32()[0] as f64 / squared) as f32;
                continue;
            }
            losses.push(outputs["loss"].f32()[0]);
            for s in &step.state {
                let next = outputs[&s.next].f32().to_vec();
                assert!(
                    next.iter().all(|v| v.is_finite()),
                    "{name}: {} is not finite",
                    s.next
                );
                state.get_mut(&s.name).unwrap().1 = next;
            }
        }
        assert!(
            losses.windows(2).all(|w| w[1] < w[0]),
            "{name}: losses {losses:?} do not decrease"
        );
    }
}

fn patched(path: &str) -> ldam_onnx::onnx::ModelProto {
    let original = load(&common::repo_dir().join(path)).unwrap().model;
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(COUNTS.to_vec()),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    patch(&original, &options).unwrap().0
}

/// Feeds the step with `x`, the current state, labels and epoch 0.
fn run_step(
    step: &ldam_onnx::compile::TrainStep,
    x: &Data,
    state: &HashMap<String, ldam_onnx::onnx::TensorProto>,
) -> HashMap<String, Data> {
    let mut inputs = vec![
        ("input", x.clone()),
        ("labels", Data::I64(vec![BATCH], vec![0, 3, 9, 5])),
        ("epoch", Data::I64(vec![], vec![0])),
        ("lr", Data::F32(vec![], vec![0.05])),
    ];
    for s in &step.state {
        let t = &state[&s.name];
        inputs.push((
            s.name.as_str(),
            Data::F32(t.dims.clone(), f32_values(t).unwrap()),
        ));
    }
    run(&step.model, &inputs)
}

fn next_state(
    step: &ldam_onnx::compile::TrainStep,
    outputs: &HashMap<String, Data>,
) -> HashMap<String, ldam_onnx::onnx::TensorProto> {
    let initial = step.initial_values();
    step.state
        .iter()
        .map(|s| {
            let dims = &initial[&s.name].dims;
            (
                s.name.clone(),
                ldam_onnx::onnx::tensor::f32_tensor(&s.name, dims, outputs[&s.next].f32()),
            )
        })
        .collect()
}

#[test]
fn recovered_inference_model_of_the_mlp_computes_the_train_step_logits() {
    let patched = patched("models/mlp.onnx");
    let step = compile(&patched, &CompileOptions::default()).unwrap();
    let x = Data::F32(
        vec![BATCH, 1, 28, 28],
        Rng::new(3).floats((BATCH * 784) as usize, -1.0, 1.0),
    );
    let state = step.initial_values();

    // Before training: the patched model's own logits.
    let inference = ldam_onnx::compile::inference_model(&step.model, &state).unwrap();
    let inputs: Vec<&str> = inference
        .graph
        .as_ref()
        .unwrap()
        .input
        .iter()
        .map(|i| i.name())
        .collect();
    assert_eq!(
        inputs,
        ["input"],
        "the deployable model takes the data input only"
    );
    let deployed = run(&inference, &[("input", x.clone())]);
    let reference = run(
        &patched,
        &[
            ("input", x.clone()),
            ("labels", Data::I64(vec![BATCH], vec![0, 3, 9, 5])),
            ("epoch", Data::I64(vec![], vec![0])),
        ],
    );
    // The same runtime on two graphs: fusions and kernel choices may differ, so
    // the logits agree within the network's forward rounding bound.
    let bound = Accumulation::of(&patched, BATCH).forward_bound();
    let err = tolerance::normwise_error(deployed["logits"].f32(), reference["logits"].f32(), 0.0);
    assert!(err <= bound, "logits differ by {err:e} (bound {bound:e})");

    // After one step: the logits the next step computes from the updated state.
    let after = next_state(&step, &run_step(&step, &x, &state));
    let deployed = run(
        &ldam_onnx::compile::inference_model(&step.model, &after).unwrap(),
        &[("input", x.clone())],
    );
    let next = run_step(&step, &x, &after);
    let err = tolerance::normwise_error(deployed["logits"].f32(), next["logits"].f32(), 0.0);
    assert!(err <= bound, "logits differ by {err:e} (bound {bound:e})");
}

/// PyTorch's BatchNorm: running = 0.9 running + 0.1 batch statistic, with the
/// unbiased batch variance; the deployed model normalises with those values.
#[test]
fn batchnorm_running_statistics_follow_pytorch_and_the_deployed_model_uses_them() {
    let patched = patched("models/cnn.onnx");
    let step = compile(&patched, &CompileOptions::default()).unwrap();
    let x = Data::F32(
        vec![BATCH, 1, 28, 28],
        Rng::new(4).floats((BATCH * 784) as usize, -1.0, 1.0),
    );
    let state = step.initial_values();
    let outputs = run_step(&step, &x, &state);

    // The first BatchNorm's input, read from the patched (forward) graph.
    let graph = patched.graph.as_ref().unwrap();
    let bn = graph
        .node
        .iter()
        .find(|n| n.op_type() == "BatchNormalization")
        .unwrap();
    let mut probe = patched.clone();
    probe
        .graph
        .as_mut()
        .unwrap()
        .output
        .push(ldam_onnx::onnx::types::value_info_any_shape(
            &bn.input[0],
            ldam_onnx::onnx::tensor::FLOAT,
        ));
    let features = run(
        &probe,
        &[
            ("input", x.clone()),
            ("labels", Data::I64(vec![BATCH], vec![0, 3, 9, 5])),
            ("epoch", Data::I64(vec![], vec![0])),
        ],
    )[&bn.input[0]]
        .clone();
    let (n, c) = (features.shape()[0] as usize, features.shape()[1] as usize);
    let spatial = features.f32().len() / (n * c);
    let values = features.values_f64();
    let count = (n * spatial) as f64;
    for channel in 0..c {
        let samples: Vec<f64> = (0..n)
            .flat_map(|i| {
                values[(i * c + channel) * spatial..(i * c + channel + 1) * spatial].to_vec()
            })
            .collect();
        let mean = samples.iter().sum::<f64>() / count;
        let unbiased = samples.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0);
        let old_mean = f32_values(&state[&bn.input[3]]).unwrap()[channel] as f64;
        let old_var = f32_values(&state[&bn.input[4]]).unwrap()[channel] as f64;
        let got_mean = outputs[&format!("{}.next", bn.input[3])].f32()[channel] as f64;
        let got_var = outputs[&format!("{}.next", bn.input[4])].f32()[channel] as f64;
        // ONNX Runtime sums the same float32 features as the float64 reference:
        // a sum of K terms in float32 errs by at most LAMBDA sqrt(K) u times the
        // sum of magnitudes (`common::tolerance`), scaled here by the update's 0.1,
        // plus the update's own few roundings. The variance's terms are bounded by
        // E[x^2], which also covers a runtime that computes it as E[x^2] - mean^2.
        let (lambda, u) = (tolerance::LAMBDA, tolerance::UNIT_ROUNDOFF);
        let rounding = lambda * count.sqrt() * u;
        let abs_mean = samples.iter().map(|v| v.abs()).sum::<f64>() / count;
        let square_mean = samples.iter().map(|v| v * v).sum::<f64>() / count;
        let expected_mean = 0.9 * old_mean + 0.1 * mean;
        let expected_var = 0.9 * old_var + 0.1 * unbiased;
        let mean_bound = 0.1 * rounding * abs_mean + 4.0 * u * expected_mean.abs();
        let var_bound = 0.1 * 2.0 * rounding * square_mean + 4.0 * u * expected_var.abs();
        assert!(
            (got_mean - expected_mean).abs() <= mean_bound,
            "channel {channel}: running mean {got_mean} vs {expected_mean} (bound {mean_bound:e})"
        );
        assert!(
            (got_var - expected_var).abs() <= var_bound,
            "channel {channel}: running var {got_var} vs {expected_var} (bound {var_bound:e})"
        );
    }

    // Deployed model vs. the patched graph with BatchNorm switched to inference by
    // hand and the trained values substituted.
    let after = next_state(&step, &outputs);
    let deployed = run(
        &ldam_onnx::compile::inference_model(&step.model, &after).unwrap(),
        &[("input", x.clone())],
    );
    let mut reference = patched.clone();
    let g = reference.graph.as_mut().unwrap();
    for node in g
        .node
        .iter_mut()
        .filter(|n| n.op_type() == "BatchNormalization")
    {
        node.attribute.retain(|a| a.name() != "training_mode");
        node.output.truncate(1);
    }
    for t in g.initializer.iter_mut() {
        if let Some(value) = after.get(t.name()) {
            *t = value.clone();
        }
    }
    let expected = run(
        &reference,
        &[
            ("input", x),
            ("labels", Data::I64(vec![BATCH], vec![0, 3, 9, 5])),
            ("epoch", Data::I64(vec![], vec![0])),
        ],
    );
    let bound = Accumulation::of(&patched, BATCH).forward_bound();
    let err = tolerance::normwise_error(deployed["logits"].f32(), expected["logits"].f32(), 0.0);
    assert!(
        err <= bound,
        "deployed logits differ by {err:e} (bound {bound:e})"
    );
}

#[test]
fn compile_command_writes_a_training_step_and_refuses_an_unpatched_model() {
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_ldam-onnx");
    let model = dir.path().join("mlp.onnx");
    std::fs::copy(common::repo_dir().join("models/mlp.onnx"), &model).unwrap();
    let counts = COUNTS.map(|c| c.to_string()).join(",");
    let status = std::process::Command::new(binary)
        .args(["patch", model.to_str().unwrap(), "--class-counts", &counts])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let output = std::process::Command::new(binary)
        .args([
            "compile",
            dir.path().join("mlp.ldam.onnx").to_str().unwrap(),
            "--weight-decay",
            "5e-4",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("5 parameters, 5 momentum buffers"),
        "{stdout}"
    );
    let step = load(&dir.path().join("mlp.train.onnx")).unwrap().model;
    assert_eq!(
        ldam_onnx::onnx::metadata(&step, "ldam_onnx.train.weight_decay"),
        Some("0.0005")
    );
    check_model(&step).unwrap();

    let refused = std::process::Command::new(binary)
        .args([
            "compile",
            model.to_str().unwrap(),
            "-o",
            dir.path().join("x.onnx").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("mlp.onnx") && stderr.contains("ldam-onnx patch"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("x.onnx").exists());
}

/// ResNet-32's zero-padded shortcuts: their gradient crops g, and the step
/// emits that crop as Slice (then a Pad by max(-pads, 0) for pads known only at
/// run time), never as a Pad with negated pads, which some runtimes (the ONNX
/// reference implementation among them) refuse.
#[test]
fn resnet32_step_crops_the_shortcut_gradient_with_slice() {
    let step = compile(&patched("models/resnet32.onnx"), &CompileOptions::default()).unwrap();
    let graph = step.model.graph.as_ref().unwrap();
    let producer: HashMap<&str, &ldam_onnx::onnx::NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let constants: HashMap<&str, &ldam_onnx::onnx::TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    for node in graph.node.iter().filter(|n| n.op_type() == "Pad") {
        let pads = node.input[1].as_str();
        if let Some(values) = constants.get(pads) {
            let values = ldam_onnx::onnx::tensor::i64_values(values).unwrap();
            assert!(
                values.iter().all(|&p| p >= 0),
                "{}: pads {values:?}",
                node.name()
            );
        } else {
            let producer = producer.get(pads).map(|n| n.op_type());
            assert_ne!(
                producer,
                Some("Neg"),
                "{} pads by negated amounts",
                node.name()
            );
        }
    }
}
