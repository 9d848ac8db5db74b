//! The library's entry points that the CLI maps its arguments onto: a model from
//! bytes, and patching with counts read from a source.

mod common;

use ldam_onnx::counts::CountsSource;
use ldam_onnx::ldam::contract::PatchRecord;
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::{from_bytes, to_bytes};
use ldam_onnx::onnx::proto::tensor_proto::DataLocation;
use ldam_onnx::onnx::tensor::is_external;
use ldam_onnx::patch::{patch_with_counts, PatchOptions};
use ldam_onnx::Error;

const MLP_COUNTS: &str = "5000,2997,1796,1077,645,387,232,139,83,50";

#[test]
fn a_model_from_bytes_is_the_model_from_its_file() {
    let file = common::repo_dir().join("models/mlp.onnx");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(from_bytes(bytes).unwrap(), common::bundled("mlp"));
    let error = from_bytes(Vec::new()).unwrap_err().to_string();
    assert!(
        error.starts_with("<bytes>: not a valid ONNX model"),
        "{error}"
    );
}

#[test]
fn a_model_from_bytes_refuses_external_data() {
    let mut model = common::bundled("mlp");
    let tensor = &mut model.graph.as_mut().unwrap().initializer[0];
    tensor.data_location = Some(DataLocation::External as i32);
    tensor.external_data = vec![ldam_onnx::onnx::StringStringEntryProto {
        key: Some("location".into()),
        value: Some("weights.bin".into()),
    }];
    tensor.raw_data = None;
    assert!(is_external(tensor));
    let name = tensor.name().to_string();
    match from_bytes(to_bytes(&model)) {
        Err(Error::ExternalData { tensor, .. }) => assert_eq!(tensor, name),
        other => panic!("expected an external-data error, got {other:?}"),
    }
}

#[test]
fn patching_with_counts_reads_them_for_the_models_classes() {
    let model = common::bundled("mlp");
    let options = PatchOptions::new(LossConfig::reference(Vec::new()));
    let source = CountsSource::List(MLP_COUNTS.into());
    let (patched, summary) = patch_with_counts(&model, &source, &options).unwrap();
    let record = PatchRecord::read(&patched).unwrap().unwrap();
    assert_eq!(
        record.config.class_counts,
        vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    );
    assert_eq!(summary.head.classes, 10);
    // The same model as patching with the counts given directly.
    let direct = common::patch_with(&model, LossConfig::reference(record.config.class_counts));
    assert_eq!(patched, direct);
}

#[test]
fn patching_with_counts_tells_a_counts_problem_from_a_model_problem() {
    let model = common::bundled("mlp");
    let options = PatchOptions::new(LossConfig::reference(Vec::new()));
    let wrong = CountsSource::List("1,2,3".into());
    match patch_with_counts(&model, &wrong, &options) {
        Err(Error::Counts(inner)) => {
            let message = inner.to_string();
            assert!(message.contains("3 class counts"), "{message}");
        }
        other => panic!("expected a counts error, got {other:?}"),
    }
    let patched = common::patch_with(&model, LossConfig::reference(vec![10; 10]));
    let source = CountsSource::List(MLP_COUNTS.into());
    match patch_with_counts(&patched, &source, &options) {
        Err(Error::Patch { reason }) => assert!(reason.contains("already patched"), "{reason}"),
        other => panic!("expected a patch error, got {other:?}"),
    }
}

#[test]
fn the_library_names_a_bad_setting_and_the_cli_names_its_flag() {
    let patched = common::patch_with(&common::bundled("mlp"), LossConfig::reference(vec![10; 10]));
    let options = ldam_onnx::compile::CompileOptions {
        momentum: 1.5,
        ..Default::default()
    };
    let error = ldam_onnx::compile::compile(&patched, &options).unwrap_err();
    assert_eq!(error.to_string(), "momentum must lie in [0, 1), got 1.5");
    assert_eq!(
        error.naming_settings(ldam_onnx::error::SettingNames::Flags),
        "--momentum must lie in [0, 1), got 1.5"
    );
    let beta = LossConfig {
        beta: 2.0,
        ..LossConfig::reference(vec![10; 10])
    };
    let error = beta.validate().unwrap_err().to_string();
    assert_eq!(error, "beta must lie in (0, 1), got 2");

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.ldam.onnx");
    std::fs::write(&model, to_bytes(&patched)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .arg("compile")
        .arg(&model)
        .args(["--momentum", "1.5"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: {}: --momentum must lie in [0, 1), got 1.5\n",
            model.display()
        )
    );
}
