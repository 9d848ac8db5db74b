//! Every exported network in `models/` patches with default flags, passes the
//! structural check, runs in ONNX Runtime, and keeps its logits (or turns them into
//! exact cosine similarities when the head is rewritten).

mod common;

use common::tolerance::Accumulation;
use common::{assert_close, run, Data, Rng};
use ldam_onnx::ldam::{batch_loss, LossConfig};
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::types::{tensor_type, value_info, Dim};
use ldam_onnx::onnx::ModelProto;
use ldam_onnx::ops::validate;
use ldam_onnx::patch::batchnorm::BatchNormMode;
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
const BATCH: i64 = 3;

fn options(head: HeadMode) -> PatchOptions {
    PatchOptions {
        // Frozen: the patched graphs must reproduce the exports' own logits,
        // and ShuffleNet's BatchNorm is exported in inference mode.
        batchnorm: BatchNormMode::Frozen,
        config: LossConfig::reference(COUNTS.to_vec()),
        head,
        logits: None,
        names: ContractNames::default(),
    }
}

/// A random batch for the model's `input`, batch dimension set to BATCH.
fn input_batch(model: &ModelProto, seed: u64) -> Data {
    let graph = model.graph.as_ref().unwrap();
    let input = tensor_type(&graph.input[0]).expect("input is a tensor");
    let shape: Vec<i64> = input
        .shape
        .expect("input shape is known")
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(v) => *v,
            _ if i == 0 => BATCH,
            other => panic!("unexpected symbolic dim {other} past the batch axis"),
        })
        .collect();
    let len = shape.iter().product::<i64>() as usize;
    Data::F32(shape, Rng::new(seed).floats(len, -1.0, 1.0))
}

fn labels_and_epoch(epoch: i64) -> [(&'static str, Data); 2] {
    [
        ("labels", Data::I64(vec![BATCH], vec![0, 9, 4])),
        ("epoch", Data::I64(vec![], vec![epoch])),
    ]
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_model_patches_with_defaults_and_runs_in_onnx_runtime() {
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let original = load(&path).unwrap().model;
        let (patched, summary) =
            patch(&original, &options(HeadMode::Auto)).unwrap_or_else(|e| panic!("{name}: {e}"));
        validate::check_model(&patched).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            summary.cosine,
            "{name}: default LDAM patch rewrites the linear head"
        );
        let x = input_batch(&original, 1);
        for epoch in [0, 160] {
            let [labels, epoch_input] = labels_and_epoch(epoch);
            let outputs = run(&patched, &[("input", x.clone()), labels, epoch_input]);
            let logits = outputs["logits"].f32();
            assert_eq!(outputs["logits"].shape(), &[BATCH, 10], "{name}");
            assert!(
                logits.iter().all(|v| v.abs() <= 1.0 + 1e-6),
                "{name}: cosine logits lie in [-1, 1]"
            );
            let expected = batch_loss(&options(HeadMode::Auto).config, logits, &[0, 9, 4], epoch);
            // ONNX Runtime's float32 loss from its own logits against the library's
            // float64 formula on them: within the graph's forward rounding bound.
            assert_close(
                outputs["loss"].f32()[0] as f64,
                expected,
                Accumulation::of(&patched, BATCH).forward_bound(),
                &format!("{name} loss at epoch {epoch}"),
            );
        }
    }
}

#[test]
fn patched_models_with_kept_head_reproduce_the_original_logits() {
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let original = load(&path).unwrap().model;
        let (patched, _) = patch(&original, &options(HeadMode::Keep)).unwrap();
        let x = input_batch(&original, 2);
        let before = run(&original, &[("input", x.clone())]);
        let [labels, epoch] = labels_and_epoch(0);
        let after = run(&patched, &[("input", x), labels, epoch]);
        let diff = max_abs_diff(before["logits"].f32(), after["logits"].f32());
        assert!(diff <= 1e-6, "{name}: logits changed by {diff}");
    }
}

/// The cosine head's logits are `cos(features_i, w_c)`, checked against features
/// read from the original graph and the weight read from the file.
#[test]
fn cosine_head_logits_equal_cosine_similarities_of_features_and_class_weights() {
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let original = load(&path).unwrap().model;
        let (patched, summary) = patch(&original, &options(HeadMode::Cosine)).unwrap();
        let layer = summary
            .head
            .linear
            .clone()
            .expect("every exported model ends in a linear layer");

        // Expose the features of the original graph as an extra output.
        let mut probe = original.clone();
        probe.graph.as_mut().unwrap().output.push(value_info(
            &layer.features,
            ldam_onnx::onnx::tensor::FLOAT,
            &[Dim::Unknown, Dim::Unknown],
        ));
        let x = input_batch(&original, 3);
        let features = run(&probe, &[("input", x.clone())])[&layer.features].clone();
        let weight_tensor = original
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == layer.weight)
            .unwrap();
        let weight = f32_values(weight_tensor).unwrap();
        let (classes, width) = (10usize, features.shape()[1] as usize);
        assert_eq!(weight.len(), classes * width, "{name}: weight is [C, F]");

        let [labels, epoch] = labels_and_epoch(0);
        let logits = run(&patched, &[("input", x), labels, epoch])["logits"].clone();
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        for i in 0..BATCH as usize {
            let f: Vec<f64> = features.f32()[i * width..(i + 1) * width]
                .iter()
                .map(|&v| v as f64)
                .collect();
            for c in 0..classes {
                // PyTorch layout [C, F]: class c's weight is row c.
                let w: Vec<f64> = weight[c * width..(c + 1) * width]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let cosine =
                    f.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / (norm(&f) * norm(&w));
                let got = logits.f32()[i * classes + c] as f64;
                assert!(
                    (got - cosine).abs() <= 2e-6,
                    "{name}: logit[{i},{c}] = {got}, cosine = {cosine}"
                );
            }
        }
    }
}
