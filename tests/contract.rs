//! The graph contract read back across versions: training steps whose state
//! lists earlier versions wrote comma-joined still give the same inference model
//! and review, and every stage finds the patched model's one data input. A step
//! on disk is two files: the step, whose state inputs are plain inputs, and the
//! companion state file it names, which any runtime runs to get the initial state.

mod common;

use common::Data;
use ldam_onnx::compile::files;
use ldam_onnx::compile::{compile, inference_model, CompileOptions};
use ldam_onnx::inspect::render_train_step;
use ldam_onnx::ldam::contract::{self, keys};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::onnx::tensor::f32_values;
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
    let state = step.initial_values();
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

#[test]
fn a_saved_step_names_its_companion_which_runs_to_the_initial_state() {
    let step = compile(&patched_mlp(), &CompileOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.train.onnx");
    let companion = step.save(&path, None, SaveOptions::default()).unwrap();
    assert_eq!(companion, dir.path().join("mlp.train.state.onnx"));
    let loaded = io::load(&path).unwrap();
    assert_eq!(
        metadata(&loaded.model, keys::INITIAL_STATE),
        Some("mlp.train.state.onnx")
    );

    // The step's state inputs are plain inputs: no initializer backs them.
    let graph = loaded.graph();
    let names = contract::state_names(&loaded.model).unwrap();
    for name in &names {
        assert!(graph.input.iter().any(|i| i.name() == name), "{name}");
        assert!(
            graph.initializer.iter().all(|t| t.name() != name),
            "{name} is backed by an initializer"
        );
    }

    // Running the companion with an empty feed returns every initial value, in
    // the step's state order; the reader returns the same values.
    let state_file = io::load(&companion).unwrap().model;
    let outputs: Vec<&str> = state_file
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|o| o.name())
        .collect();
    assert_eq!(outputs, names);
    let ran = common::run(&state_file, &[]);
    let read = files::initial_state(&loaded).unwrap();
    let initial = step.initial_values();
    assert_eq!(read, initial);
    for name in &names {
        assert_eq!(
            ran[name].f32(),
            f32_values(&initial[name]).unwrap(),
            "{name}"
        );
    }
    // Momentum buffers start at zero; parameters at the patched model's values.
    let patched = patched_mlp();
    for name in &names {
        let value = f32_values(&initial[name]).unwrap();
        match patched
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == name)
        {
            Some(t) => assert_eq!(value, f32_values(t).unwrap(), "{name}"),
            None => assert!(value.iter().all(|&v| v == 0.0), "{name}"),
        }
    }

    // One step fed from the companion's outputs runs and returns every S.next.
    let n = 4;
    let mut inputs = vec![
        (
            "input",
            Data::F32(
                vec![n, 1, 28, 28],
                common::Rng::new(2).floats(n as usize * 784, 0.0, 1.0),
            ),
        ),
        ("labels", Data::I64(vec![n], vec![0, 1, 2, 9])),
        ("epoch", Data::I64(vec![], vec![0])),
        ("lr", Data::F32(vec![], vec![0.1])),
    ];
    for name in &names {
        inputs.push((name.as_str(), ran[name].clone()));
    }
    let after = common::run(&loaded.model, &inputs);
    for name in &names {
        assert!(after.contains_key(&contract::next_name(name)), "{name}");
    }
}

#[test]
fn a_step_is_not_written_over_an_existing_companion() {
    let step = compile(&patched_mlp(), &CompileOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.train.onnx");
    std::fs::write(contract::companion_path(&path), b"keep").unwrap();
    let err = step.save(&path, None, SaveOptions::default()).unwrap_err();
    assert!(err.to_string().contains("mlp.train.state.onnx"), "{err}");
    assert!(
        !path.exists(),
        "the step was written although its companion was refused"
    );
    step.save(&path, None, SaveOptions::overwriting(true))
        .unwrap();
    assert!(files::initial_state(&io::load(&path).unwrap()).is_ok());
}

#[test]
fn a_step_whose_companion_is_missing_fails_naming_the_file() {
    let step = compile(&patched_mlp(), &CompileOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.train.onnx");
    let companion = step.save(&path, None, SaveOptions::default()).unwrap();
    std::fs::remove_file(&companion).unwrap();
    let err = files::initial_state(&io::load(&path).unwrap()).unwrap_err();
    assert!(err.to_string().contains("mlp.train.state.onnx"), "{err}");
}

#[test]
fn a_step_that_keeps_its_state_in_initializers_still_reads_and_deploys() {
    // The layout of earlier versions: the state inputs backed by initializers.
    let step = compile(&patched_mlp(), &CompileOptions::default()).unwrap();
    let initial = step.initial_values();
    let mut embedded = step.model.clone();
    embedded
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .extend(step.state.iter().map(|s| initial[&s.name].clone()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.train.onnx");
    io::save(&embedded, None, &path, SaveOptions::default()).unwrap();
    assert_eq!(
        files::initial_state(&io::load(&path).unwrap()).unwrap(),
        initial
    );
    assert_eq!(
        inference_model(&embedded, &HashMap::new()).unwrap(),
        inference_model(&step.model, &initial).unwrap()
    );
    let err = inference_model(&step.model, &HashMap::new()).unwrap_err();
    assert!(
        err.to_string().contains("no value given for state tensor"),
        "{err}"
    );
}
