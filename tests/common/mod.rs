//! Helpers shared by the integration tests: running models in ONNX Runtime and
//! building small models in code.
#![allow(dead_code)]

// Integration tests only: examples have no path to the binary.
#[cfg(test)]
pub mod cli;
pub mod gradcheck;
pub mod parity;
pub mod tolerance;

use ldam_onnx::onnx::builder::{attr_int, NameSet};
use ldam_onnx::onnx::tensor::{f32_tensor, FLOAT};
use ldam_onnx::onnx::types::{value_info, Dim};
use ldam_onnx::onnx::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `models/NAME.onnx`, loaded.
pub fn bundled(name: &str) -> ModelProto {
    ldam_onnx::onnx::io::load(&repo_dir().join("models").join(format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("models/{name}.onnx: {e}"))
        .model
}

/// `original` patched with `config`, the head chosen as `--head auto` does and
/// the contract's default names.
pub fn patch_with(original: &ModelProto, config: ldam_onnx::ldam::LossConfig) -> ModelProto {
    let options = ldam_onnx::patch::PatchOptions {
        batchnorm: Default::default(),
        config,
        head: ldam_onnx::patch::HeadMode::Auto,
        logits: None,
        names: ldam_onnx::patch::ContractNames::default(),
    };
    ldam_onnx::patch::patch(original, &options)
        .expect("the model patches")
        .0
}

/// Every `.onnx` file in `models/`, sorted.
pub fn model_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_dir().join("models"))
        .expect("models/ exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "models/ should hold the exported networks"
    );
    files
}

/// A tensor fed to or read from ONNX Runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<i64>, Vec<f32>),
    F64(Vec<i64>, Vec<f64>),
    I64(Vec<i64>, Vec<i64>),
}

impl Data {
    pub fn f32(&self) -> &[f32] {
        match self {
            Data::F32(_, v) => v,
            _ => panic!("expected a float32 tensor"),
        }
    }
    pub fn shape(&self) -> &[i64] {
        match self {
            Data::F32(s, _) | Data::F64(s, _) | Data::I64(s, _) => s,
        }
    }
    /// Float values widened to f64 (either float type).
    pub fn values_f64(&self) -> Vec<f64> {
        match self {
            Data::F32(_, v) => v.iter().map(|&x| x as f64).collect(),
            Data::F64(_, v) => v.clone(),
            Data::I64(_, v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

/// Runs `model` in ONNX Runtime (CPU) and returns every graph output.
pub fn run(model: &ModelProto, inputs: &[(&str, Data)]) -> HashMap<String, Data> {
    let bytes = ldam_onnx::onnx::io::to_bytes(model);
    let mut session =
        ldam_onnx::runtime::session_from_bytes(&bytes).expect("ONNX Runtime accepts the model");
    run_session(&mut session, inputs)
}

pub fn run_session(
    session: &mut ort::session::Session,
    inputs: &[(&str, Data)],
) -> HashMap<String, Data> {
    let values: Vec<(String, ort::session::SessionInputValue<'_>)> = inputs
        .iter()
        .map(|(name, data)| {
            let value: ort::session::SessionInputValue<'_> = match data {
                Data::F32(shape, v) => ort::value::Tensor::from_array((shape.clone(), v.clone()))
                    .expect("valid float tensor")
                    .into(),
                Data::F64(shape, v) => ort::value::Tensor::from_array((shape.clone(), v.clone()))
                    .expect("valid double tensor")
                    .into(),
                Data::I64(shape, v) => ort::value::Tensor::from_array((shape.clone(), v.clone()))
                    .expect("valid int64 tensor")
                    .into(),
            };
            (name.to_string(), value)
        })
        .collect();
    let output_names: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let outputs = session.run(values).expect("ONNX Runtime runs the model");
    output_names
        .into_iter()
        .map(|name| {
            let value = &outputs[name.as_str()];
            let data = if let Ok((shape, v)) = value.try_extract_tensor::<f32>() {
                Data::F32(shape.to_vec(), v.to_vec())
            } else if let Ok((shape, v)) = value.try_extract_tensor::<f64>() {
                Data::F64(shape.to_vec(), v.to_vec())
            } else {
                let (shape, v) = value
                    .try_extract_tensor::<i64>()
                    .expect("float, double or int64 output");
                Data::I64(shape.to_vec(), v.to_vec())
            };
            (name, data)
        })
        .collect()
}

pub fn model_from_graph(graph: GraphProto, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("tests".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

pub fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<ldam_onnx::onnx::AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{op}_{}", outputs[0])),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A model whose output `scores` [N, C] is its input `z` passed through Identity:
/// the patched loss then sees exactly the logits the test feeds.
pub fn logits_model(classes: i64, opset: i64) -> ModelProto {
    let batch = Dim::Symbolic("N".into());
    let graph = GraphProto {
        name: Some("logits_as_input".into()),
        node: vec![node("Identity", &["z"], &["scores"], vec![])],
        input: vec![value_info(
            "z",
            FLOAT,
            &[batch.clone(), Dim::Fixed(classes)],
        )],
        output: vec![value_info("scores", FLOAT, &[batch, Dim::Fixed(classes)])],
        ..Default::default()
    };
    model_from_graph(graph, opset)
}

/// `scores = x @ W^T + b` through one Gemm (transB=1), PyTorch's Linear layout.
pub fn linear_model(
    weight: &[f32],
    bias: &[f32],
    features: i64,
    classes: i64,
    opset: i64,
) -> ModelProto {
    let batch = Dim::Symbolic("N".into());
    let graph = GraphProto {
        name: Some("linear".into()),
        node: vec![node(
            "Gemm",
            &["x", "fc.weight", "fc.bias"],
            &["scores"],
            vec![attr_int("transB", 1)],
        )],
        initializer: vec![
            f32_tensor("fc.weight", &[classes, features], weight),
            f32_tensor("fc.bias", &[classes], bias),
        ],
        input: vec![value_info(
            "x",
            FLOAT,
            &[batch.clone(), Dim::Fixed(features)],
        )],
        output: vec![value_info("scores", FLOAT, &[batch, Dim::Fixed(classes)])],
        ..Default::default()
    };
    model_from_graph(graph, opset)
}

/// `logits = Flatten(input) @ W^T + b` for 1x28x28 images through one Gemm
/// (transB=1): a classifier whose every logit the test chooses through `weight`
/// (`classes` rows of 784) and `bias`.
pub fn image_linear_model(name: &str, weight: &[f32], bias: &[f32]) -> ModelProto {
    let pixels = 28 * 28;
    let classes = bias.len() as i64;
    assert_eq!(
        weight.len(),
        bias.len() * pixels,
        "one weight row per class"
    );
    let batch = Dim::Symbolic("N".into());
    let graph = GraphProto {
        name: Some(name.into()),
        node: vec![
            node("Flatten", &["input"], &["flat"], vec![attr_int("axis", 1)]),
            node(
                "Gemm",
                &["flat", "fc.weight", "fc.bias"],
                &["logits"],
                vec![attr_int("transB", 1)],
            ),
        ],
        initializer: vec![
            f32_tensor("fc.weight", &[classes, pixels as i64], weight),
            f32_tensor("fc.bias", &[classes], bias),
        ],
        input: vec![value_info(
            "input",
            FLOAT,
            &[batch.clone(), Dim::Fixed(1), Dim::Fixed(28), Dim::Fixed(28)],
        )],
        output: vec![value_info("logits", FLOAT, &[batch, Dim::Fixed(classes)])],
        ..Default::default()
    };
    model_from_graph(graph, 17)
}

/// A small deterministic generator (SplitMix64) so test data needs no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn floats(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

pub fn assert_close(actual: f64, expected: f64, rel: f64, what: &str) {
    let err = (actual - expected).abs() / expected.abs().max(1e-12);
    assert!(
        err <= rel,
        "{what}: got {actual}, expected {expected} (relative error {err:e} > {rel:e})"
    );
}

/// Unused-name helper re-exported for tests that build graphs by hand.
pub fn names_of(model: &ModelProto) -> NameSet {
    NameSet::of_graph(model.graph.as_ref().expect("model has a graph"))
}
