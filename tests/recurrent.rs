//! Recurrent nodes unrolled into primitive ops (`patch::recurrent::unroll`):
//! the unrolled graph computes what ONNX Runtime's own LSTM, GRU and RNN kernels
//! compute, in every direction and layout, with and without biases and initial
//! states; a classifier built on an unrolled LSTM trains with gradients that agree
//! with finite differences; and what cannot be unrolled is refused with the node,
//! the op and the reason.
//!
//! **Forward bound.** Both graphs run in float32 in ONNX Runtime, with different
//! summation orders (one fused kernel against MatMul, Add and the activations
//! one by one). `tests/common/tolerance.rs` derives the normwise bound two such
//! computations satisfy: each node with a reduction of length K contributes
//! `LAMBDA sqrt(K) u` (Higham and Mary's probabilistic bound, `u = 2^-24`), every
//! other node `u`; errors of successive nodes add to first order, amplified by at
//! most `CONDITION`; two runtimes differ by twice that. Summed over every node
//! of the unrolled graph (`Accumulation::of`: the MatMuls reduce over the input
//! size and the hidden size, the gates are elementwise), this bounds the error of
//! every path through the time steps. CONDITION = 4 holds for the recurrence
//! here: weights are drawn from [-0.4, 0.4] (PyTorch draws from
//! `±1/sqrt(hidden)` = ±0.41), so `||R|| <= 0.4 * 6 = 2.4`, and the sigmoid's
//! slope (at most 1/4) and tanh's (at most 1) make the step's Jacobian a
//! contraction or close to one, so an error made at one step is not amplified
//! by the steps after it.

mod common;

use common::gradcheck::GradCheck;
use common::tolerance::{normwise_error, Accumulation};
use common::{model_from_graph, node, run, Data, Rng};
use ldam_onnx::compile::{compile, CompileOptions};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::builder::{attr_int, attr_ints, attr_string};
use ldam_onnx::onnx::proto::attribute_proto::AttributeType;
use ldam_onnx::onnx::tensor::{f32_tensor, f32_values, i64_tensor, FLOAT};
use ldam_onnx::onnx::types::{value_info, value_info_any_shape, Dim};
use ldam_onnx::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use ldam_onnx::ops::registry::{self, Gradient};
use ldam_onnx::patch::recurrent::unroll;
use ldam_onnx::patch::{patch, PatchOptions};
use std::collections::HashMap;

const STEPS: i64 = 4;
const BATCH: i64 = 3;
const INPUT: i64 = 5;
const HIDDEN: i64 = 6;
/// PyTorch's initialisation range for hidden size 6 is ±0.41.
const WEIGHT_RANGE: f32 = 0.4;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lstm,
    Gru { linear_before_reset: bool },
    Rnn { relu: bool },
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Lstm => "LSTM",
            Op::Gru { .. } => "GRU",
            Op::Rnn { .. } => "RNN",
        }
    }
    fn gates(self) -> i64 {
        match self {
            Op::Lstm => 4,
            Op::Gru { .. } => 3,
            Op::Rnn { .. } => 1,
        }
    }
    fn is_lstm(self) -> bool {
        self == Op::Lstm
    }
}

/// One recurrent node to build: which inputs it has and which outputs are used.
#[derive(Debug, Clone, Copy)]
struct Case {
    op: Op,
    direction: &'static str,
    bias: bool,
    initial: bool,
    peepholes: bool,
    batch_first: bool,
    /// Y, Y_h, Y_c used.
    outputs: [bool; 3],
    opset: i64,
}

impl Case {
    fn new(op: Op, direction: &'static str) -> Case {
        Case {
            op,
            direction,
            bias: true,
            initial: true,
            peepholes: false,
            batch_first: false,
            outputs: [true, true, op.is_lstm()],
            opset: 17,
        }
    }
    fn directions(&self) -> i64 {
        if self.direction == "bidirectional" {
            2
        } else {
            1
        }
    }
    fn batch() -> Dim {
        Dim::Symbolic("N".into())
    }
    /// X's declared shape: time major, or batch first.
    fn x_dims(&self) -> Vec<Dim> {
        let (steps, input) = (Dim::Fixed(STEPS), Dim::Fixed(INPUT));
        if self.batch_first {
            vec![Self::batch(), steps, input]
        } else {
            vec![steps, Self::batch(), input]
        }
    }
    fn state_dims(&self) -> Vec<Dim> {
        let (d, h) = (Dim::Fixed(self.directions()), Dim::Fixed(HIDDEN));
        if self.batch_first {
            vec![Self::batch(), d, h]
        } else {
            vec![d, Self::batch(), h]
        }
    }
    fn state_shape(&self) -> Vec<i64> {
        if self.batch_first {
            vec![BATCH, self.directions(), HIDDEN]
        } else {
            vec![self.directions(), BATCH, HIDDEN]
        }
    }
    fn x_shape(&self) -> Vec<i64> {
        if self.batch_first {
            vec![BATCH, STEPS, INPUT]
        } else {
            vec![STEPS, BATCH, INPUT]
        }
    }
}

fn weight(rng: &mut Rng, name: &str, dims: &[i64]) -> TensorProto {
    let count = dims.iter().product::<i64>() as usize;
    f32_tensor(name, dims, &rng.floats(count, -WEIGHT_RANGE, WEIGHT_RANGE))
}

/// The node's attributes as PyTorch writes them (`hidden_size`, `direction`,
/// RNN's `activations`), plus `layout` when batch first.
fn attributes(case: &Case) -> Vec<AttributeProto> {
    let mut attrs = vec![
        attr_int("hidden_size", HIDDEN),
        attr_string("direction", case.direction),
    ];
    match case.op {
        Op::Gru {
            linear_before_reset,
        } => attrs.push(attr_int(
            "linear_before_reset",
            i64::from(linear_before_reset),
        )),
        Op::Rnn { relu } => {
            let name = if relu { "Relu" } else { "Tanh" };
            let names = vec![name; case.directions() as usize];
            attrs.push(attr_strings("activations", &names));
        }
        Op::Lstm => {}
    }
    if case.batch_first {
        attrs.push(attr_int("layout", 1));
    }
    attrs
}

fn attr_strings(name: &str, values: &[&str]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Strings as i32),
        strings: values
            .iter()
            .map(|v| v.as_bytes().to_vec().into())
            .collect(),
        ..Default::default()
    }
}

/// The weights of `case`, drawn from `seed`: W, R, and B and P when the case has them.
fn weights(case: &Case, seed: u64) -> Vec<TensorProto> {
    let mut rng = Rng::new(seed);
    let (d, g) = (case.directions(), case.op.gates() * HIDDEN);
    let mut tensors = vec![
        weight(&mut rng, "rnn.weight_ih", &[d, g, INPUT]),
        weight(&mut rng, "rnn.weight_hh", &[d, g, HIDDEN]),
    ];
    if case.bias {
        tensors.push(weight(&mut rng, "rnn.bias", &[d, 2 * g]));
    }
    if case.peepholes {
        tensors.push(weight(&mut rng, "rnn.peepholes", &[d, 3 * HIDDEN]));
    }
    tensors
}

/// The recurrent node of `case` reading `x` (and `h0`, `c0` when the case has
/// initial states), writing `y`, `y_h`, `y_c` where used.
fn recurrent_node(case: &Case, x: &str, h0: &str, c0: &str, outputs: [&str; 3]) -> NodeProto {
    let mut inputs = vec![x, "rnn.weight_ih", "rnn.weight_hh"];
    inputs.push(if case.bias { "rnn.bias" } else { "" });
    inputs.push("");
    inputs.push(if case.initial { h0 } else { "" });
    if case.op.is_lstm() {
        inputs.push(if case.initial { c0 } else { "" });
        inputs.push(if case.peepholes { "rnn.peepholes" } else { "" });
    }
    while inputs.last() == Some(&"") {
        inputs.pop();
    }
    let count = if case.op.is_lstm() { 3 } else { 2 };
    let mut names: Vec<&str> = (0..count)
        .map(|k| if case.outputs[k] { outputs[k] } else { "" })
        .collect();
    while names.last() == Some(&"") {
        names.pop();
    }
    let mut n = node(case.op.name(), &inputs, &names, attributes(case));
    n.name = Some("rnn".into());
    n
}

const OUTPUTS: [&str; 3] = ["y", "y_h", "y_c"];

/// The graph of `case`: inputs `x` (and `h0`, `c0`), one recurrent node, the
/// used outputs.
fn case_graph(case: &Case, seed: u64) -> GraphProto {
    let mut input = vec![value_info("x", FLOAT, &case.x_dims())];
    if case.initial {
        input.push(value_info("h0", FLOAT, &case.state_dims()));
        if case.op.is_lstm() {
            input.push(value_info("c0", FLOAT, &case.state_dims()));
        }
    }
    let output = used_outputs(case)
        .into_iter()
        .map(|name| value_info_any_shape(name, FLOAT))
        .collect();
    GraphProto {
        name: Some("recurrent".into()),
        node: vec![recurrent_node(case, "x", "h0", "c0", OUTPUTS)],
        initializer: weights(case, seed),
        input,
        output,
        ..Default::default()
    }
}

fn used_outputs(case: &Case) -> Vec<&'static str> {
    (0..3)
        .filter(|&k| case.outputs[k] && (k < 2 || case.op.is_lstm()))
        .map(|k| OUTPUTS[k])
        .collect()
}

/// ONNX Runtime implements only `layout = 0`: the batch-first reference runs
/// the time-major node between the transposes that `layout = 1` stands for.
fn reference_graph(case: &Case, seed: u64) -> GraphProto {
    let mut graph = case_graph(case, seed);
    if !case.batch_first {
        return graph;
    }
    let time_major = Case {
        batch_first: false,
        ..*case
    };
    let perm = |p: &[i64]| vec![attr_ints("perm", p)];
    let to_time_major = |from: &str, to: &str| node("Transpose", &[from], &[to], perm(&[1, 0, 2]));
    let mut nodes = vec![to_time_major("x", "x_t")];
    if case.initial {
        nodes.push(to_time_major("h0", "h0_t"));
        if case.op.is_lstm() {
            nodes.push(to_time_major("c0", "c0_t"));
        }
    }
    nodes.push(recurrent_node(
        &time_major,
        "x_t",
        "h0_t",
        "c0_t",
        ["y_t", "y_h_t", "y_c_t"],
    ));
    for name in used_outputs(case) {
        let from = format!("{name}_t");
        nodes.push(match name {
            "y" => node("Transpose", &[&from], &[name], perm(&[2, 0, 1, 3])),
            _ => to_time_major(&from, name),
        });
    }
    graph.node = nodes;
    graph
}

fn inputs_of(case: &Case, seed: u64) -> Vec<(&'static str, Data)> {
    let mut rng = Rng::new(seed + 100);
    let x_shape = case.x_shape();
    let count = x_shape.iter().product::<i64>() as usize;
    let mut inputs = vec![("x", Data::F32(x_shape, rng.floats(count, -1.0, 1.0)))];
    if case.initial {
        let shape = case.state_shape();
        let count = shape.iter().product::<i64>() as usize;
        inputs.push(("h0", Data::F32(shape.clone(), rng.floats(count, -1.0, 1.0))));
        if case.op.is_lstm() {
            inputs.push(("c0", Data::F32(shape, rng.floats(count, -1.0, 1.0))));
        }
    }
    inputs
}

fn unrolled(model: &ModelProto) -> ModelProto {
    let mut model = model.clone();
    let opset = ldam_onnx::onnx::default_opset(&model).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let rewritten = unroll(graph, opset).unwrap_or_else(|e| panic!("unroll: {e}"));
    assert!(!rewritten.is_empty(), "a recurrent node is rewritten");
    ldam_onnx::ops::validate::check_model(&model)
        .unwrap_or_else(|e| panic!("the unrolled graph is invalid: {e}"));
    model
}

/// The largest normwise error between `actual` and `expected` over `case`'s
/// outputs; panics on a non-finite value.
fn worst_error(
    case: &Case,
    actual: &HashMap<String, Data>,
    expected: &HashMap<String, Data>,
) -> f64 {
    used_outputs(case)
        .into_iter()
        .map(|name| {
            let (a, e) = (actual[name].f32(), expected[name].f32());
            assert_eq!(
                actual[name].shape(),
                expected[name].shape(),
                "{case:?}: {name}"
            );
            assert!(
                a.iter().chain(e).all(|v| v.is_finite()),
                "{case:?}: {name} is not finite"
            );
            normwise_error(a, e, 1e-30)
        })
        .fold(0.0, f64::max)
}

/// Runs `case` through ONNX Runtime's node (`reference`) and the unrolled graph
/// of `case`; returns the error and the bound.
fn compare(case: &Case, reference: GraphProto, seed: u64) -> (f64, f64) {
    compare_graphs(case, case_graph(case, seed), reference, seed)
}

/// Runs `reference` as it is and `original` unrolled on `case`'s inputs.
fn compare_graphs(
    case: &Case,
    original: GraphProto,
    reference: GraphProto,
    seed: u64,
) -> (f64, f64) {
    let unrolled = unrolled(&model_from_graph(original, case.opset));
    let inputs = inputs_of(case, seed);
    let expected = run(&model_from_graph(reference, case.opset), &inputs);
    let actual = run(&unrolled, &inputs);
    let bound = Accumulation::of(&unrolled, BATCH).forward_bound();
    (worst_error(case, &actual, &expected), bound)
}

fn forward_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let ops = [
        Op::Lstm,
        Op::Gru {
            linear_before_reset: true,
        },
        Op::Gru {
            linear_before_reset: false,
        },
        Op::Rnn { relu: false },
        Op::Rnn { relu: true },
    ];
    for op in ops {
        for direction in ["forward", "reverse", "bidirectional"] {
            let case = Case::new(op, direction);
            cases.push(case);
            cases.push(Case {
                bias: false,
                initial: false,
                ..case
            });
            cases.push(Case {
                initial: false,
                outputs: [false, true, op.is_lstm()],
                ..case
            });
            cases.push(Case {
                bias: false,
                outputs: [true, false, false],
                batch_first: true,
                ..case
            });
        }
        // The opsets PyTorch exports, and one before Squeeze took its axes as input.
        cases.push(Case {
            opset: 14,
            batch_first: true,
            ..Case::new(op, "bidirectional")
        });
        cases.push(Case {
            opset: 20,
            ..Case::new(op, "reverse")
        });
        cases.push(Case {
            opset: 12,
            ..Case::new(op, "bidirectional")
        });
    }
    for direction in ["forward", "bidirectional"] {
        cases.push(Case {
            peepholes: true,
            ..Case::new(Op::Lstm, direction)
        });
        cases.push(Case {
            peepholes: true,
            initial: false,
            ..Case::new(Op::Lstm, direction)
        });
        // Only Y_c.
        cases.push(Case {
            outputs: [false, false, true],
            ..Case::new(Op::Lstm, direction)
        });
    }
    cases
}

#[test]
fn unrolled_nodes_compute_what_onnxruntime_computes() {
    let mut worst = 0.0f64;
    for (k, case) in forward_cases().iter().enumerate() {
        let seed = 7 + k as u64;
        let (error, bound) = compare(case, reference_graph(case, seed), seed);
        assert!(
            error <= bound,
            "{case:?}: normwise error {error:e} exceeds the float32 bound {bound:e}"
        );
        worst = worst.max(error / bound);
    }
    eprintln!(
        "{} cases; worst error / bound = {worst:.3e}",
        forward_cases().len()
    );
}

/// The same comparison fails for a wrong unrolling: the reference node runs with
/// two gates' rows of W exchanged (as an unrolling reading the gates in the wrong
/// order would), or with the other `linear_before_reset`.
#[test]
fn a_wrong_unrolling_fails_the_same_comparison() {
    let swaps = [
        (Op::Lstm, 0, 2),
        (Op::Lstm, 1, 3),
        (
            Op::Gru {
                linear_before_reset: true,
            },
            0,
            1,
        ),
    ];
    for (op, a, b) in swaps {
        for direction in ["forward", "bidirectional"] {
            let case = Case::new(op, direction);
            let mut reference = reference_graph(&case, 3);
            swap_gates(&mut reference.initializer[0], op.gates(), a, b);
            let (error, bound) = compare(&case, reference, 3);
            assert!(
                error > 10.0 * bound,
                "{case:?} with gates {a} and {b} exchanged: error {error:e} is within 10x the bound {bound:e}"
            );
        }
    }
    for linear_before_reset in [false, true] {
        let case = Case::new(
            Op::Gru {
                linear_before_reset,
            },
            "forward",
        );
        let other = Case::new(
            Op::Gru {
                linear_before_reset: !linear_before_reset,
            },
            "forward",
        );
        let (error, bound) = compare(&case, reference_graph(&other, 5), 5);
        assert!(
            error > 10.0 * bound,
            "GRU linear_before_reset={linear_before_reset} against the other form: error {error:e} \
             is within 10x the bound {bound:e}"
        );
    }
}

/// Exchanges gate blocks `a` and `b` (rows of `hidden` each) of every direction
/// of a `[directions, gates * hidden, cols]` weight.
fn swap_gates(tensor: &mut TensorProto, gates: i64, a: i64, b: i64) {
    let mut values = f32_values(tensor).unwrap();
    let (directions, cols) = (tensor.dims[0], tensor.dims[2]);
    let block = (HIDDEN * cols) as usize;
    for d in 0..directions {
        let base = (d * gates * HIDDEN * cols) as usize;
        for k in 0..block {
            values.swap(base + a as usize * block + k, base + b as usize * block + k);
        }
    }
    *tensor = f32_tensor(tensor.name(), &tensor.dims.clone(), &values);
}

#[test]
fn unrolling_keeps_the_weights_and_emits_only_differentiable_ops() {
    for op in [
        Op::Lstm,
        Op::Gru {
            linear_before_reset: false,
        },
        Op::Rnn { relu: true },
    ] {
        let case = Case {
            peepholes: op.is_lstm(),
            ..Case::new(op, "bidirectional")
        };
        let original = model_from_graph(case_graph(&case, 1), 17);
        let model = unrolled(&original);
        let graph = model.graph.as_ref().unwrap();
        let floats = |g: &GraphProto| -> Vec<(String, Vec<i64>, Vec<f32>)> {
            g.initializer
                .iter()
                .filter(|t| t.data_type() == FLOAT)
                .map(|t| (t.name().to_string(), t.dims.clone(), f32_values(t).unwrap()))
                .collect()
        };
        assert_eq!(
            floats(graph),
            floats(original.graph.as_ref().unwrap()),
            "{case:?}: no float initializer added, removed or changed"
        );
        for weight in &original.graph.as_ref().unwrap().initializer {
            assert!(
                graph
                    .node
                    .iter()
                    .any(|n| n.input.iter().any(|i| i == weight.name())),
                "{case:?}: '{}' is read by the unrolled graph",
                weight.name()
            );
        }
        for n in &graph.node {
            let def = registry::for_node(n, 17)
                .unwrap_or_else(|| panic!("{case:?}: {} is not in the registry", n.op_type()));
            assert!(
                !matches!(def.gradient, Gradient::Missing),
                "{case:?}: {} has no gradient rule",
                n.op_type()
            );
        }
        // Batch stays symbolic: every Reshape target leaves it to run time.
        assert!(graph.node.iter().all(|n| n.op_type() != "Reshape"));
    }
}

/// Two stacked bidirectional layers as PyTorch exports them: the upper layer
/// reads the lower one's Y reshaped to [seq, batch, 2 * hidden], whose shape is
/// known only once the lower layer is unrolled.
#[test]
fn stacked_layers_unroll_one_after_the_other() {
    let case = Case {
        outputs: [true, true, false],
        ..Case::new(Op::Lstm, "bidirectional")
    };
    let lower = case_graph(&case, 11);
    let mut rng = Rng::new(12);
    let mut graph = lower.clone();
    graph.initializer.extend([
        weight(&mut rng, "upper.weight_ih", &[2, 4 * HIDDEN, 2 * HIDDEN]),
        weight(&mut rng, "upper.weight_hh", &[2, 4 * HIDDEN, HIDDEN]),
        weight(&mut rng, "upper.bias", &[2, 8 * HIDDEN]),
        i64_tensor("upper.shape", &[3], &[0, 0, -1]),
    ]);
    let mut upper = node(
        "LSTM",
        &["y_flat", "upper.weight_ih", "upper.weight_hh", "upper.bias"],
        &["", "upper_h"],
        attributes(&case),
    );
    upper.name = Some("upper".into());
    graph.node.extend([
        node(
            "Transpose",
            &["y"],
            &["y_tb"],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        ),
        node("Reshape", &["y_tb", "upper.shape"], &["y_flat"], vec![]),
        upper,
    ]);
    graph.output = vec![value_info_any_shape("upper_h", FLOAT)];
    let original = model_from_graph(graph, 17);
    let mut model = original.clone();
    let rewritten = unroll(model.graph.as_mut().unwrap(), 17).unwrap();
    assert_eq!(rewritten, ["rnn", "upper"]);
    let inputs = inputs_of(&case, 11);
    let expected = run(&original, &inputs);
    let actual = run(&model, &inputs);
    let (a, e) = (actual["upper_h"].f32(), expected["upper_h"].f32());
    assert!(a.iter().chain(e).all(|v| v.is_finite()));
    let error = normwise_error(a, e, 1e-30);
    let bound = Accumulation::of(&model, BATCH).forward_bound();
    assert!(error <= bound, "error {error:e} > bound {bound:e}");
}

// ---------------------------------------------------------------------------
// Training through the unrolled LSTM.

const CLASSES: i64 = 4;
const LABELS: [i64; BATCH as usize] = [0, 3, 1];

/// `x` [N, seq, input] (batch first, as `nn.LSTM(batch_first=True)` exports: a
/// Transpose before a time-major node) -> LSTM -> last Y_h -> Gemm to 4 classes.
fn lstm_classifier() -> ModelProto {
    let case = Case {
        initial: false,
        outputs: [false, true, false],
        ..Case::new(Op::Lstm, "forward")
    };
    let mut rng = Rng::new(21);
    let mut initializer = weights(&case, 20);
    initializer.extend([
        weight(&mut rng, "fc.weight", &[CLASSES, HIDDEN]),
        weight(&mut rng, "fc.bias", &[CLASSES]),
        i64_tensor("squeeze_axes", &[1], &[0]),
    ]);
    let batch = Case::batch();
    let graph = GraphProto {
        name: Some("lstm_classifier".into()),
        node: vec![
            node(
                "Transpose",
                &["x"],
                &["x_t"],
                vec![attr_ints("perm", &[1, 0, 2])],
            ),
            recurrent_node(&case, "x_t", "", "", OUTPUTS),
            node("Squeeze", &["y_h", "squeeze_axes"], &["features"], vec![]),
            node(
                "Gemm",
                &["features", "fc.weight", "fc.bias"],
                &["logits"],
                vec![attr_int("transB", 1)],
            ),
        ],
        initializer,
        input: vec![value_info(
            "x",
            FLOAT,
            &[batch.clone(), Dim::Fixed(STEPS), Dim::Fixed(INPUT)],
        )],
        output: vec![value_info("logits", FLOAT, &[batch, Dim::Fixed(CLASSES)])],
        ..Default::default()
    };
    model_from_graph(graph, 17)
}

fn classifier_inputs() -> Vec<(&'static str, Data)> {
    let x = Rng::new(22).floats((BATCH * STEPS * INPUT) as usize, -1.0, 1.0);
    vec![
        ("x", Data::F32(vec![BATCH, STEPS, INPUT], x)),
        ("labels", Data::I64(vec![BATCH], LABELS.to_vec())),
        ("epoch", Data::I64(vec![], vec![0])),
    ]
}

/// The compiled step's gradient of every trained parameter, for the step's
/// initial state.
fn compiled_gradients(patched: &ModelProto) -> HashMap<String, Vec<f64>> {
    let options = CompileOptions {
        momentum: 0.0,
        weight_decay: 0.0,
        ..CompileOptions::default()
    };
    let step = compile(patched, &options).unwrap_or_else(|e| panic!("compile: {e}"));
    let mut model = step.model.clone();
    let graph = model.graph.as_mut().unwrap();
    for (_, gradient) in &step.gradients {
        graph.output.push(value_info_any_shape(gradient, FLOAT));
    }
    let initial = step.initial_values();
    let mut inputs = classifier_inputs();
    inputs.push(("lr", Data::F32(vec![], vec![0.1])));
    for s in &step.state {
        let t = &initial[&s.name];
        inputs.push((
            s.name.as_str(),
            Data::F32(t.dims.clone(), f32_values(t).unwrap()),
        ));
    }
    let outputs = run(&model, &inputs);
    step.gradients
        .iter()
        .map(|(parameter, gradient)| (parameter.clone(), outputs[gradient].values_f64()))
        .collect()
}

/// `(L(w + h d) - L(w - h d)) / 2h` of the patched model's loss along unit
/// direction `d` of initializer `name`.
fn directional_difference(patched: &ModelProto, name: &str, direction: &[f64], h: f64) -> f64 {
    let loss_at = |scale: f64| {
        let mut model = patched.clone();
        let graph = model.graph.as_mut().unwrap();
        let tensor = graph
            .initializer
            .iter_mut()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("'{name}' is an initializer of the patched model"));
        let values: Vec<f32> = f32_values(tensor)
            .unwrap()
            .iter()
            .zip(direction)
            .map(|(&v, &d)| (f64::from(v) + scale * d) as f32)
            .collect();
        *tensor = f32_tensor(name, &tensor.dims.clone(), &values);
        run(&model, &classifier_inputs())["loss"].values_f64()[0]
    };
    (loss_at(h) - loss_at(-h)) / (2.0 * h)
}

fn unit_direction(len: usize, seed: u64) -> Vec<f64> {
    let raw: Vec<f64> = Rng::new(seed)
        .floats(len, -1.0, 1.0)
        .into_iter()
        .map(f64::from)
        .collect();
    let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
    raw.into_iter().map(|v| v / norm).collect()
}

/// Directional derivatives of the loss that disagree with `gradients` beyond
/// float32 finite differences' noise: h = 1e-3 on a loss of order 1 leaves
/// float32 rounding of about 1e-7 / 1e-3 = 1e-4 and a truncation error of order
/// h^2; 1e-3 absolute plus 1e-2 relative, as the whole-network checks allow.
fn mismatches(
    patched: &ModelProto,
    gradients: &HashMap<String, Vec<f64>>,
    parameters: &[&str],
) -> Vec<String> {
    let mut failures = Vec::new();
    for &name in parameters {
        let gradient = &gradients[name];
        for k in 0..3 {
            let direction = unit_direction(gradient.len(), 500 + k);
            let analytic: f64 = gradient.iter().zip(&direction).map(|(g, d)| g * d).sum();
            let numeric = directional_difference(patched, name, &direction, 1e-3);
            let error = (analytic - numeric).abs();
            eprintln!("{name}, direction {k}: analytic {analytic:.6}, numeric {numeric:.6}");
            if error > 1e-3 + 1e-2 * numeric.abs() {
                failures.push(format!(
                    "d loss / d {name} along direction {k}: analytic {analytic} vs numeric {numeric}"
                ));
            }
        }
    }
    failures
}

fn patched_classifier() -> ModelProto {
    let mut model = lstm_classifier();
    let rewritten = unroll(model.graph.as_mut().unwrap(), 17).unwrap();
    assert_eq!(rewritten, ["rnn"]);
    let options = PatchOptions::new(LossConfig::reference(vec![500, 120, 30, 8]));
    patch(&model, &options)
        .unwrap_or_else(|e| panic!("patch: {e}"))
        .0
}

const LSTM_WEIGHTS: [&str; 3] = ["rnn.weight_ih", "rnn.weight_hh", "rnn.bias"];

#[test]
fn compiled_gradients_of_an_unrolled_lstm_match_finite_differences() {
    let patched = patched_classifier();
    let gradients = compiled_gradients(&patched);
    for name in LSTM_WEIGHTS {
        assert!(
            gradients.contains_key(name),
            "the original weight '{name}' trains (trained: {:?})",
            gradients.keys().collect::<Vec<_>>()
        );
        assert!(gradients[name].iter().all(|v| v.is_finite()));
        assert!(gradients[name].iter().any(|&v| v != 0.0), "{name}");
    }
    let failures = mismatches(&patched, &gradients, &LSTM_WEIGHTS);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Negative control: the gradient with its input and forget gates' blocks
    // exchanged, as a gradient routed to the wrong gate would be, fails.
    let mut wrong = gradients.clone();
    for name in ["rnn.weight_ih", "rnn.weight_hh"] {
        let cols = if name == "rnn.weight_ih" {
            INPUT
        } else {
            HIDDEN
        };
        let mut tensor = f32_tensor(
            name,
            &[1, 4 * HIDDEN, cols],
            &wrong[name].iter().map(|&v| v as f32).collect::<Vec<_>>(),
        );
        swap_gates(&mut tensor, 4, 0, 2);
        wrong.insert(
            name.to_string(),
            f32_values(&tensor)
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect(),
        );
    }
    let failures = mismatches(&patched, &wrong, &LSTM_WEIGHTS[..2]);
    assert_eq!(
        failures.len(),
        6,
        "every direction of the exchanged gradient fails: {failures:?}"
    );
}

/// The autodiff engine's gradients of the other unrolled cells (both GRU forms
/// and RNN, both directions, with biases and an initial state) against finite
/// differences of `sum(Y * R)`, as `tests/common/gradcheck.rs` runs them.
#[test]
fn gradients_of_unrolled_gru_and_rnn_match_finite_differences() {
    for op in [
        Op::Gru {
            linear_before_reset: true,
        },
        Op::Gru {
            linear_before_reset: false,
        },
        Op::Rnn { relu: false },
    ] {
        let case = Case {
            outputs: [true, false, false],
            ..Case::new(op, "bidirectional")
        };
        let model = unrolled(&model_from_graph(case_graph(&case, 31), 17));
        let mut check = GradCheck::f32(
            model,
            inputs_of(&case, 31),
            &["rnn.weight_ih", "rnn.weight_hh", "rnn.bias", "h0"],
        );
        check.step = 1e-3;
        check.abs_tol = 1e-3;
        check.rel_tol = 1e-2;
        check.run_directional(3);
    }
}

// ---------------------------------------------------------------------------
// Refusals.

fn unroll_error(graph: &mut GraphProto) -> String {
    unroll(graph, 17)
        .expect_err("the node must be refused")
        .to_string()
}

fn assert_names_node_and_op(message: &str, needles: &[&str]) {
    for needle in ["LSTM", "'rnn'"].iter().chain(needles) {
        assert!(
            message.contains(needle),
            "'{needle}' missing from: {message}"
        );
    }
}

#[test]
fn a_symbolic_sequence_length_is_refused() {
    let case = Case::new(Op::Lstm, "forward");
    let mut graph = case_graph(&case, 1);
    graph.input[0] = value_info(
        "x",
        FLOAT,
        &[
            Dim::Symbolic("seq".into()),
            Case::batch(),
            Dim::Fixed(INPUT),
        ],
    );
    let message = unroll_error(&mut graph);
    assert_names_node_and_op(
        &message,
        &[
            "sequence length of input 'x' is not known statically",
            "fixed sequence length",
        ],
    );
}

#[test]
fn custom_activations_clip_and_input_forget_are_refused() {
    let case = Case::new(Op::Lstm, "forward");
    let refusals: [(AttributeProto, &str); 3] = [
        (
            attr_strings("activations", &["HardSigmoid", "Tanh", "Tanh"]),
            "custom activations [HardSigmoid, Tanh, Tanh]",
        ),
        (ldam_onnx::onnx::builder::attr_float("clip", 3.0), "'clip'"),
        (attr_int("input_forget", 1), "'input_forget'"),
    ];
    for (attr, needle) in refusals {
        let mut graph = case_graph(&case, 1);
        graph.node[0].attribute.push(attr);
        let message = unroll_error(&mut graph);
        assert_names_node_and_op(&message, &[needle, "not supported"]);
    }
    // The defaults written out are not custom.
    let mut graph = case_graph(&case, 1);
    graph.node[0]
        .attribute
        .push(attr_strings("activations", &["Sigmoid", "Tanh", "Tanh"]));
    unroll(&mut graph, 17).unwrap();
}

/// sequence_lens is int32 in ONNX.
fn i32_tensor(name: &str, values: &[i32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(INT32),
        int32_data: values.to_vec(),
        ..Default::default()
    }
}

const INT32: i32 = 6;

#[test]
fn sequence_lens_are_refused_unless_every_length_is_the_full_one() {
    let case = Case::new(Op::Lstm, "forward");
    let with_lens = |lens: Option<&[i32]>| {
        let mut graph = case_graph(&case, 1);
        graph.node[0].input[4] = "lens".into();
        match lens {
            Some(values) => graph.initializer.push(i32_tensor("lens", values)),
            None => graph
                .input
                .push(value_info("lens", INT32, &[Case::batch()])),
        }
        graph
    };
    for lens in [None, Some(&[4, 2, 4][..])] {
        let message = unroll_error(&mut with_lens(lens));
        assert_names_node_and_op(
            &message,
            &["sequence_lens 'lens' is not provably equal to the sequence length 4"],
        );
    }
    // Every length the full one: the same as no sequence_lens.
    let full = with_lens(Some(&[STEPS as i32; BATCH as usize]));
    let (error, bound) = compare_graphs(&case, full.clone(), full, 1);
    assert!(error <= bound, "error {error:e} > bound {bound:e}");
}
