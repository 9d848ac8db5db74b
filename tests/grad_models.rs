//! Whole-network gradient checks: for every model in `models/`, the gradient of
//! `sum(logits * R)` with respect to parameters at the input, in the middle, at the
//! head and a BatchNorm scale agrees with central finite differences along three
//! random unit directions per tensor (float32 graphs, as exported: h = 1e-3,
//! tolerance 1e-3 absolute + 1e-2 relative on the directional derivative).
//!
//! A deep ReLU network is piecewise linear with kinks everywhere, and float32
//! central differences across them scatter by several percent whatever the step.
//! The check therefore runs on each network with its kinks smoothed: Relu becomes
//! Tanh and MaxPool the AveragePool of the same window. Every other node (Conv,
//! BatchNormalization in training mode, the shortcut Slice/Pad, Reshape/Transpose/
//! Split/Concat, pooling, Gemm) is exactly as exported; Relu's and MaxPool's own
//! rules are checked element by element in grad_core.rs and grad_nn.rs.

mod common;

use common::gradcheck::GradCheck;
use common::{node, Data, Rng};
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::tensor::{is_float_type, FLOAT};
use ldam_onnx::onnx::types::{tensor_type, value_info_any_shape, Dim};

/// The model files to check: all of `models/`, or those whose file name contains
/// `only` (the `GC_ONLY` variable). A filter that selects none is an error listing
/// the models, rather than a test that passes without checking anything.
fn selected_models(only: Option<&str>) -> Vec<(String, std::path::PathBuf)> {
    let all: Vec<(String, std::path::PathBuf)> = common::model_files()
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, path)
        })
        .collect();
    let selected: Vec<_> = all
        .iter()
        .filter(|(name, _)| only.is_none_or(|only| name.contains(only)))
        .cloned()
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = all.iter().map(|(name, _)| name.as_str()).collect();
        panic!(
            "GC_ONLY={:?} matches no model; known models: {}",
            only.unwrap_or_default(),
            names.join(", ")
        );
    }
    selected
}

#[test]
fn gc_only_matching_no_model_is_an_error_listing_the_models() {
    let panic = std::panic::catch_unwind(|| selected_models(Some("no-such-model")))
        .expect_err("an unknown GC_ONLY name must fail");
    let message = panic
        .downcast_ref::<String>()
        .expect("the panic carries a formatted message");
    assert!(message.contains("\"no-such-model\""), "{message}");
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(message.contains(&name), "{name} is not listed: {message}");
    }
    // A known name selects exactly the files containing it.
    let mlp = selected_models(Some("mlp"));
    assert!(!mlp.is_empty() && mlp.iter().all(|(name, _)| name.contains("mlp")));
    assert_eq!(selected_models(None).len(), common::model_files().len());
}

#[test]
fn every_model_gradient_matches_finite_differences() {
    let only = std::env::var("GC_ONLY").ok();
    let mut checked = Vec::new();
    for (name, path) in selected_models(only.as_deref()) {
        let mut model = load(&path).unwrap().model;
        let graph = model.graph.as_mut().unwrap();
        let shape: Vec<i64> = tensor_type(&graph.input[0])
            .unwrap()
            .shape
            .unwrap()
            .iter()
            .map(|d| if let Dim::Fixed(v) = d { *v } else { 2 })
            .collect();
        for n in graph.node.iter_mut() {
            match n.op_type() {
                "Relu" => n.op_type = Some("Tanh".into()),
                "MaxPool" => {
                    n.op_type = Some("AveragePool".into());
                    n.attribute.retain(|a| {
                        matches!(a.name(), "kernel_shape" | "strides" | "pads" | "auto_pad")
                    });
                    n.output.truncate(1);
                }
                _ => {}
            }
        }
        graph
            .node
            .push(node("Identity", &["logits"], &["y"], vec![]));
        graph.output = vec![value_info_any_shape("y", FLOAT)];
        // First, a middle and the last weight tensor (rank >= 2), plus a BN scale if any.
        let weights: Vec<String> = graph
            .initializer
            .iter()
            .filter(|t| is_float_type(t.data_type()) && t.dims.len() >= 2)
            .map(|t| t.name().to_string())
            .collect();
        let mut wrt = vec![
            weights[0].clone(),
            weights[weights.len() / 2].clone(),
            weights[weights.len() - 1].clone(),
        ];
        if let Some(bn) = graph
            .node
            .iter()
            .find(|n| n.op_type() == "BatchNormalization")
        {
            wrt.push(bn.input[1].clone());
        }
        wrt.dedup();
        let count = shape.iter().product::<i64>() as usize;
        let x = Rng::new(8).floats(count, -1.0, 1.0);
        let mut check = GradCheck::f32(
            model,
            vec![("input", Data::F32(shape, x))],
            &wrt.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        check.step = 1e-3;
        check.abs_tol = 1e-3;
        check.rel_tol = 1e-2;
        eprintln!("{name}: checking {wrt:?}");
        check.run_directional(3);
        checked.push(name);
    }
    assert!(!checked.is_empty(), "no model was checked");
    eprintln!("checked: {}", checked.join(", "));
}
