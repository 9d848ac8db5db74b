//! Finite-difference checks of emitted gradients, run in ONNX Runtime.
//!
//! The forward model's output `y` is reduced to a scalar `loss = sum(y * R)` with a
//! fixed random `R`, so every element of `dy` is exercised with a distinct weight.
//! Gradients come from `ldam_onnx::autodiff::gradient_model`; the reference is the
//! central difference `(L(x + h) - L(x - h)) / 2h` of the same loss, evaluated by
//! ONNX Runtime on the forward graph.
#![allow(dead_code)]

use super::{node, run, Data, Rng};
use ldam_onnx::onnx::tensor::FLOAT;
use ldam_onnx::onnx::{ModelProto, TensorProto};

pub const DOUBLE: i32 = 11;

/// One gradient check.
pub struct GradCheck {
    /// A model with one output `y` (float32 or float64).
    pub model: ModelProto,
    pub inputs: Vec<(String, Data)>,
    /// Inputs (graph inputs or initializers) to differentiate.
    pub wrt: Vec<String>,
    /// Step of the central difference.
    pub step: f64,
    /// Allowed |analytic - numeric| <= abs_tol + rel_tol * |numeric|.
    pub abs_tol: f64,
    pub rel_tol: f64,
    /// At most this many elements of each input are perturbed.
    pub max_elements: usize,
}

impl GradCheck {
    /// Defaults for float64 graphs: h = 1e-6, tolerance 1e-6 absolute + 1e-5 relative.
    pub fn f64(model: ModelProto, inputs: Vec<(&str, Data)>, wrt: &[&str]) -> Self {
        GradCheck {
            model,
            inputs: inputs
                .into_iter()
                .map(|(n, d)| (n.to_string(), d))
                .collect(),
            wrt: wrt.iter().map(|s| s.to_string()).collect(),
            step: 1e-6,
            abs_tol: 1e-6,
            rel_tol: 1e-5,
            max_elements: 40,
        }
    }

    /// Defaults for float32-only ops: h = 1e-2, tolerance 2e-3 absolute + 2e-2 relative.
    pub fn f32(model: ModelProto, inputs: Vec<(&str, Data)>, wrt: &[&str]) -> Self {
        GradCheck {
            step: 1e-2,
            abs_tol: 2e-3,
            rel_tol: 2e-2,
            ..Self::f64(model, inputs, wrt)
        }
    }

    /// Runs the check; panics with every mismatch listed.
    pub fn run(&self) {
        let loss_model = with_projection_loss(&self.model, &self.inputs);
        let (grad_model, grads) =
            ldam_onnx::autodiff::gradient_model(&loss_model, "loss", &self.wrt)
                .unwrap_or_else(|e| panic!("gradient graph: {e}"));
        ldam_onnx::ops::validate::check_model(&grad_model)
            .unwrap_or_else(|e| panic!("gradient graph is invalid: {e}"));
        let borrowed: Vec<(&str, Data)> = self
            .inputs
            .iter()
            .map(|(n, d)| (n.as_str(), d.clone()))
            .collect();
        let analytic = run(&grad_model, &borrowed);
        let mut failures = Vec::new();
        for name in &self.wrt {
            let grad_name = grads
                .get(name)
                .unwrap_or_else(|| panic!("no gradient for '{name}'"));
            let grad = analytic[grad_name].values_f64();
            let mut rng = Rng::new(grad.len() as u64);
            let mut picks: Vec<usize> = (0..grad.len()).collect();
            if picks.len() > self.max_elements {
                picks = (0..self.max_elements)
                    .map(|_| rng.below(grad.len() as u64) as usize)
                    .collect();
            }
            for index in picks {
                let numeric = self.central_difference(&loss_model, name, index);
                let err = (grad[index] - numeric).abs();
                if !super::tolerance::within(err, self.abs_tol + self.rel_tol * numeric.abs()) {
                    failures.push(format!("d loss / d {name}[{index}]: analytic {} vs numeric {numeric} (error {err:e})", grad[index]));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} gradient mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// Checks directional derivatives along `directions` random unit directions per
    /// input: `(L(x + hD) - L(x - hD)) / 2h` against `<grad, D>`. Robust for whole
    /// networks, where a single element's difference can cross a ReLU or max-pool
    /// switch; relative tolerance `rel_tol` on the directional derivative.
    pub fn run_directional(&self, directions: usize) {
        let loss_model = with_projection_loss(&self.model, &self.inputs);
        let (grad_model, grads) =
            ldam_onnx::autodiff::gradient_model(&loss_model, "loss", &self.wrt)
                .unwrap_or_else(|e| panic!("gradient graph: {e}"));
        let borrowed: Vec<(&str, Data)> = self
            .inputs
            .iter()
            .map(|(n, d)| (n.as_str(), d.clone()))
            .collect();
        let analytic = run(&grad_model, &borrowed);
        let mut failures = Vec::new();
        for name in &self.wrt {
            let grad = analytic[&grads[name]].values_f64();
            for k in 0..directions {
                let mut rng = Rng::new(1000 + k as u64);
                let raw: Vec<f64> = (0..grad.len())
                    .map(|_| rng.uniform(-1.0, 1.0) as f64)
                    .collect();
                let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
                let direction: Vec<f64> = raw.iter().map(|v| v / norm).collect();
                let expected: f64 = grad.iter().zip(&direction).map(|(g, d)| g * d).sum();
                let loss_at = |scale: f64| {
                    let (mut model, mut inputs) = (loss_model.clone(), self.inputs.clone());
                    for (index, d) in direction.iter().enumerate() {
                        match inputs.iter_mut().find(|(n, _)| n == name) {
                            Some((_, data)) => nudge_data(data, index, scale * d),
                            None => {
                                let graph = model.graph.as_mut().unwrap();
                                let tensor = graph
                                    .initializer
                                    .iter_mut()
                                    .find(|t| t.name() == name)
                                    .unwrap();
                                nudge_tensor(tensor, index, scale * d);
                            }
                        }
                    }
                    let borrowed: Vec<(&str, Data)> = inputs
                        .iter()
                        .map(|(n, d)| (n.as_str(), d.clone()))
                        .collect();
                    run(&model, &borrowed)["loss"].values_f64()[0]
                };
                let numeric = (loss_at(self.step) - loss_at(-self.step)) / (2.0 * self.step);
                let err = (expected - numeric).abs();
                if !super::tolerance::within(err, self.abs_tol + self.rel_tol * numeric.abs()) {
                    failures.push(format!("d loss / d {name} along direction {k}: analytic {expected} vs numeric {numeric} (error {err:e})"));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} directional mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    fn central_difference(&self, loss_model: &ModelProto, name: &str, index: usize) -> f64 {
        let loss_at = |delta: f64| {
            let (mut model, mut inputs) = (loss_model.clone(), self.inputs.clone());
            match inputs.iter_mut().find(|(n, _)| n == name) {
                Some((_, data)) => nudge_data(data, index, delta),
                None => {
                    let graph = model.graph.as_mut().unwrap();
                    let tensor = graph
                        .initializer
                        .iter_mut()
                        .find(|t| t.name() == name)
                        .unwrap_or_else(|| {
                            panic!("'{name}' is neither an input nor an initializer")
                        });
                    nudge_tensor(tensor, index, delta);
                }
            }
            let borrowed: Vec<(&str, Data)> = inputs
                .iter()
                .map(|(n, d)| (n.as_str(), d.clone()))
                .collect();
            run(&model, &borrowed)["loss"].values_f64()[0]
        };
        (loss_at(self.step) - loss_at(-self.step)) / (2.0 * self.step)
    }
}

fn nudge_data(data: &mut Data, index: usize, delta: f64) {
    match data {
        Data::F32(_, v) => v[index] += delta as f32,
        Data::F64(_, v) => v[index] += delta,
        Data::I64(..) => panic!("cannot differentiate an integer input"),
    }
}

fn nudge_tensor(tensor: &mut TensorProto, index: usize, delta: f64) {
    let raw = tensor
        .raw_data
        .as_ref()
        .expect("initializers in tests use raw_data")
        .to_vec();
    let mut raw = raw;
    if tensor.data_type() == DOUBLE {
        let mut v = f64::from_le_bytes(raw[index * 8..index * 8 + 8].try_into().unwrap());
        v += delta;
        raw[index * 8..index * 8 + 8].copy_from_slice(&v.to_le_bytes());
    } else {
        let mut v = f32::from_le_bytes(raw[index * 4..index * 4 + 4].try_into().unwrap());
        v += delta as f32;
        raw[index * 4..index * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    tensor.raw_data = Some(raw.into());
}

/// Appends `loss = ReduceSum(y * R)` with a fixed random R shaped like y.
fn with_projection_loss(model: &ModelProto, inputs: &[(String, Data)]) -> ModelProto {
    let borrowed: Vec<(&str, Data)> = inputs
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    let y = run(model, &borrowed)
        .remove("y")
        .expect("the forward model has an output named 'y'");
    let shape = y.shape().to_vec();
    let count = shape.iter().product::<i64>().max(1) as usize;
    let weights = Rng::new(17).floats(count, -1.0, 1.0);
    let is_double = matches!(y, Data::F64(..));
    let mut model = model.clone();
    let graph = model.graph.as_mut().unwrap();
    let r = if is_double {
        TensorProto {
            name: Some("gradcheck.R".into()),
            dims: shape,
            data_type: Some(DOUBLE),
            raw_data: Some(
                weights
                    .iter()
                    .flat_map(|&w| (w as f64).to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
            ),
            ..Default::default()
        }
    } else {
        ldam_onnx::onnx::tensor::f32_tensor("gradcheck.R", &shape, &weights)
    };
    graph.initializer.push(r);
    graph.node.push(node(
        "Mul",
        &["y", "gradcheck.R"],
        &["gradcheck.weighted"],
        vec![],
    ));
    graph.node.push(node(
        "ReduceSum",
        &["gradcheck.weighted"],
        &["loss"],
        vec![ldam_onnx::onnx::builder::attr_int("keepdims", 0)],
    ));
    let elem = if is_double { DOUBLE } else { FLOAT };
    graph.output = vec![ldam_onnx::onnx::types::value_info("loss", elem, &[])];
    model
}
