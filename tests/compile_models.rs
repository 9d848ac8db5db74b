//! Every network in `models/` compiles into a training step that passes the
//! structural check, runs in ONNX Runtime, and lowers the loss on a fixed batch
//! when its outputs are fed back as inputs.

mod common;

use common::{run, Data, Rng};
use ldam_onnx::compile::{compile, CompileOptions, StateKind};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::onnx::types::{tensor_type, Dim};
use ldam_onnx::onnx::validate::check_model;
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
        let mut state: HashMap<String, (Vec<i64>, Vec<f32>)> = step
            .state
            .iter()
            .map(|s| {
                let t = graph
                    .initializer
                    .iter()
                    .find(|t| t.name() == s.name)
                    .unwrap();
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
