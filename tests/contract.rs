//! The graph contract read back across versions: training steps whose state
//! lists earlier versions wrote comma-joined still give the same inference model
//! and review, and every stage finds the patched model's one data input.

mod common;

use ldam_onnx::compile::{compile, inference_model, CompileOptions};
use ldam_onnx::inspect::render_train_step;
use ldam_onnx::ldam::contract::{self, keys};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::{metadata, ModelProto};
use std::collections::HashMap;

fn patched_mlp() -> ModelProto {
    common::patch_with(
        &common::bundled("mlp"),
        LossConfig::reference(vec![100, 80, 60, 50, 40, 30, 20, 15, 10, 5]),
    )
}

/// `step` as an earlier version wrote it: the state lists comma-joined.
fn with_comma_joined_state(step: &ModelProto) -> ModelProto {
    let mut old = step.clone();
    for key in [keys::STATE, keys::STATE_KINDS] {
        let items: Vec<String> =
            serde_json::from_str(metadata(step, key).expect("listed")).expect("a JSON list");
        contract::set(&mut old, key, items.join(","));
    }
    old
}

#[test]
fn the_state_list_is_json_in_step_order() {
    let step = compile(&patched_mlp(), &CompileOptions::default()).unwrap();
    let names: Vec<String> =
        serde_json::from_str(metadata(&step.model, keys::STATE).unwrap()).unwrap();
    let kinds: Vec<String> =
        serde_json::from_str(metadata(&step.model, keys::STATE_KINDS).unwrap()).unwrap();
    let expected: Vec<&str> = step.state.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, expected);
    let expected: Vec<&str> = step.state.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, expected);
    assert_eq!(contract::state_names(&step.model).unwrap(), names);
}

#[test]
fn steps_with_comma_joined_state_lists_still_load() {
    let step = compile(&patched_mlp(), &CompileOptions::default()).unwrap();
    let old = with_comma_joined_state(&step.model);
    assert!(metadata(&old, keys::STATE).unwrap().contains(','));
    assert!(!metadata(&old, keys::STATE).unwrap().starts_with('['));
    assert_eq!(
        contract::state_names(&old),
        contract::state_names(&step.model)
    );
    assert_eq!(render_train_step(&old), render_train_step(&step.model));
    let state = HashMap::new();
    assert_eq!(
        inference_model(&old, &state).unwrap(),
        inference_model(&step.model, &state).unwrap()
    );
}

#[test]
fn the_data_input_of_a_patched_model_skips_labels_and_epoch() {
    let patched = patched_mlp();
    let record = contract::PatchRecord::read(&patched).unwrap().unwrap();
    let (name, dims) = contract::data_input(&patched, &record.added_inputs()).unwrap();
    let original = common::bundled("mlp");
    let (original_name, original_dims) = contract::data_input(&original, &[]).unwrap();
    assert_eq!((name, dims), (original_name, original_dims));
    let error = contract::data_input(&patched, &[]).unwrap_err().to_string();
    assert!(
        error.contains("exactly one data input, it has 3"),
        "{error}"
    );
}
