//! Models whose declared sizes lie about the bytes they hold, and patched models
//! wired so that compile cannot keep their state: every one is refused with an
//! error naming the tensor, by the library and by the binary (exit 1, one error
//! line, no output file), before anything is allocated from the lie.

mod common;

use ldam_onnx::compile::{compile, CompileOptions};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::{decode, to_bytes};
use ldam_onnx::onnx::proto::tensor_shape_proto::dimension;
use ldam_onnx::onnx::proto::type_proto;
use ldam_onnx::onnx::{ModelProto, TensorProto};
use prost::bytes::Bytes;
use std::path::Path;
use std::process::Command;

const COUNTS: &str = "5000,2997,1796,1077,645,387,232,139,83,50";

fn first_weight(model: &mut ModelProto) -> &mut TensorProto {
    model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.dims.len() >= 2)
        .expect("a weight matrix")
}

/// The library's load error for `model`'s bytes.
fn load_error(model: &ModelProto) -> String {
    decode(to_bytes(model), Path::new("hostile.onnx"))
        .err()
        .expect("the model is refused")
        .to_string()
}

/// `ldam-onnx COMMAND` on `model` written to a temporary folder (with `-o` but
/// for `inspect`): exit code, stderr, and whether the output appeared.
fn cli(model: &ModelProto, command: &str) -> (Option<i32>, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hostile.onnx");
    std::fs::write(&input, to_bytes(model)).unwrap();
    let output = dir.path().join("out.onnx");
    let mut args = vec![command, input.to_str().unwrap()];
    if command != "inspect" {
        args.extend(["-o", output.to_str().unwrap()]);
    }
    if command == "patch" {
        args.extend(["--class-counts", COUNTS]);
    }
    let run = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(&args)
        .output()
        .unwrap();
    (
        run.status.code(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
        output.exists(),
    )
}

fn assert_refused(model: &ModelProto, expected: &[&str]) {
    let err = load_error(model);
    for part in expected {
        assert!(err.contains(part), "'{part}' missing from: {err}");
    }
    for command in ["inspect", "patch", "compile"] {
        let (code, stderr, written) = cli(model, command);
        assert_eq!(code, Some(1), "{command}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{command}: {stderr}");
        assert!(stderr.starts_with("error: "), "{command}: {stderr}");
        assert!(stderr.contains(expected[0]), "{command}: {stderr}");
        assert!(!written, "{command} wrote an output");
    }
}

#[test]
fn an_initializer_claiming_2_pow_40_elements_is_refused_by_name() {
    for (name, patched) in [("resnet32", false), ("mlp", true)] {
        let mut model = common::bundled(name);
        if patched {
            model = common::patch_with(
                &model,
                LossConfig::reference(COUNTS.split(',').map(|c| c.parse().unwrap()).collect()),
            );
        }
        let weight = first_weight(&mut model);
        let tensor = weight.name().to_string();
        weight.dims[0] = 1 << 40;
        assert_refused(&model, &[&format!("'{tensor}'"), "need", "raw_data holds"]);
    }
}

#[test]
fn negative_and_overflowing_dims_are_refused() {
    let mut model = common::bundled("mlp");
    let weight = first_weight(&mut model);
    let tensor = weight.name().to_string();
    weight.dims[0] = -3;
    assert_refused(&model, &[&format!("'{tensor}'"), "negative"]);

    let mut model = common::bundled("mlp");
    let weight = first_weight(&mut model);
    weight.dims = vec![1 << 31, 1 << 31, 1 << 31];
    assert_refused(&model, &[&format!("'{tensor}'"), "overflow"]);
}

#[test]
fn a_payload_shorter_or_longer_than_its_dims_is_refused() {
    let mut model = common::bundled("mlp");
    let weight = first_weight(&mut model);
    let tensor = weight.name().to_string();
    let raw = weight.raw_data.clone().expect("exported weights are raw");
    let expected = raw.len();
    weight.raw_data = Some(raw.slice(..expected - 4));
    assert_refused(
        &model,
        &[
            &format!("'{tensor}'"),
            &format!("need {expected} bytes, raw_data holds {}", expected - 4),
        ],
    );

    // The same weight as typed float_data with one value too many.
    let mut model = common::bundled("mlp");
    let weight = first_weight(&mut model);
    let values = ldam_onnx::onnx::tensor::f32_values(weight).unwrap();
    let count = values.len();
    weight.raw_data = None;
    weight.float_data = values;
    weight.float_data.push(0.5);
    assert_refused(
        &model,
        &[
            &format!("'{tensor}'"),
            &format!("need {count} entries of float_data, it holds {}", count + 1),
        ],
    );

    // An int64 tensor whose values sit in the wrong typed field.
    let mut model = common::bundled("mlp");
    let weight = first_weight(&mut model);
    weight.raw_data = None;
    weight.data_type = Some(ldam_onnx::onnx::tensor::INT64);
    weight.float_data = vec![1.0; count];
    assert_refused(&model, &[&format!("'{tensor}'"), "int64_data, it holds 0"]);
}

#[test]
fn a_typed_payload_of_the_right_length_still_loads() {
    let mut model = common::bundled("mlp");
    let weight = first_weight(&mut model);
    let values = ldam_onnx::onnx::tensor::f32_values(weight).unwrap();
    weight.raw_data = None;
    weight.float_data = values;
    decode(to_bytes(&model), Path::new("typed.onnx")).expect("a typed payload is valid");
    let mut model = common::bundled("mlp");
    first_weight(&mut model).raw_data = Some(Bytes::new());
    first_weight(&mut model).dims = vec![0, 784];
    decode(to_bytes(&model), Path::new("empty.onnx")).expect("an empty tensor holds no bytes");
}

#[test]
fn a_negative_declared_dim_is_refused_naming_the_value() {
    let mut model = common::bundled("mlp");
    let graph = model.graph.as_mut().unwrap();
    let input = graph.input[0].name().to_string();
    let Some(type_proto::Value::TensorType(t)) =
        graph.input[0].r#type.as_mut().unwrap().value.as_mut()
    else {
        panic!("a tensor input")
    };
    t.shape.as_mut().unwrap().dim[1].value = Some(dimension::Value::DimValue(-784));
    assert_refused(&model, &[&format!("value '{input}'"), "negative dim -784"]);
}

/// A BatchNormalization whose running mean is not an initializer (here a graph
/// input) cannot keep it as training state: compile says which tensor, where it
/// used to stop on an internal assertion.
#[test]
fn compile_refuses_running_statistics_that_are_not_initializers() {
    let counts: Vec<u64> = COUNTS.split(',').map(|c| c.parse().unwrap()).collect();
    let mut model = common::patch_with(&common::bundled("resnet32"), LossConfig::reference(counts));
    let graph = model.graph.as_mut().unwrap();
    let bn = graph
        .node
        .iter()
        .position(|n| n.op_type() == "BatchNormalization")
        .expect("ResNet-32 has BatchNorm");
    let mean = graph.node[bn].input[3].clone();
    let at = graph
        .initializer
        .iter()
        .position(|t| t.name() == mean)
        .unwrap();
    let tensor = graph.initializer.remove(at);
    graph.input.push(ldam_onnx::onnx::types::value_info(
        &mean,
        tensor.data_type(),
        &[ldam_onnx::onnx::types::Dim::Fixed(tensor.dims[0])],
    ));
    let err = compile(&model, &CompileOptions::default())
        .err()
        .expect("compile refuses")
        .to_string();
    assert!(
        err.contains(&format!("running_mean '{mean}' is not an initializer")),
        "{err}"
    );
    let (code, stderr, written) = cli(&model, "compile");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not an initializer"), "{stderr}");
    assert!(!written);
}

/// A graph broken on arrival (a node reads a value nothing defines) is the
/// input's fault: patch and compile say so, naming the node and value, instead
/// of reporting their own output as failing its check.
#[test]
fn a_graph_broken_on_arrival_is_reported_as_the_inputs_fault() {
    let mut model = common::bundled("mlp");
    let graph = model.graph.as_mut().unwrap();
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.op_type() == "Relu")
        .unwrap();
    node.input[0] = "nowhere".into();
    let err = ldam_onnx::patch::patch(
        &model,
        &ldam_onnx::patch::PatchOptions::new(LossConfig::reference(
            COUNTS.split(',').map(|c| c.parse().unwrap()).collect(),
        )),
    )
    .err()
    .expect("an undefined input is refused")
    .to_string();
    assert!(
        err.contains("the model is not a valid ONNX graph")
            && err.contains("'nowhere' is not defined")
            && !err.contains("a bug"),
        "{err}"
    );

    let mut patched = common::patch_with(
        &common::bundled("mlp"),
        LossConfig::reference(COUNTS.split(',').map(|c| c.parse().unwrap()).collect()),
    );
    let graph = patched.graph.as_mut().unwrap();
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.op_type() == "Relu")
        .unwrap();
    node.input[0] = "nowhere".into();
    let err = compile(&patched, &CompileOptions::default())
        .err()
        .expect("an undefined input is refused")
        .to_string();
    assert!(
        err.contains("the patched model is not a valid ONNX graph") && !err.contains("a bug"),
        "{err}"
    );
}
