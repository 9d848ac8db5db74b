//! Finite-difference checks of the elementwise, matrix, reduction and loss
//! gradient rules, each on a one-node graph run in ONNX Runtime. Inputs declare a
//! symbolic batch dimension `N` (fed 3) and broadcast where the op allows.
//! Tolerances: float64 graphs use h = 1e-6 and |error| <= 1e-6 + 1e-5 |numeric|;
//! ops ONNX Runtime runs in float32 only use h = 1e-2 and 2e-3 + 2e-2 |numeric|.

mod common;

use common::gradcheck::{GradCheck, DOUBLE};
use common::{model_from_graph, node, Data, Rng};
use ldam_onnx::onnx::builder::{attr_float, attr_int, attr_ints, attr_string};
use ldam_onnx::onnx::tensor::{FLOAT, INT64};
use ldam_onnx::onnx::types::{value_info, value_info_any_shape, Dim};
use ldam_onnx::onnx::{AttributeProto, GraphProto, ModelProto};

const BATCH: i64 = 3;

/// A tensor input: name, declared dims (-1 = symbolic N), and values in [lo, hi).
struct In {
    name: &'static str,
    dims: Vec<i64>,
    lo: f64,
    hi: f64,
}

fn input(name: &'static str, dims: &[i64]) -> In {
    In {
        name,
        dims: dims.to_vec(),
        lo: -1.0,
        hi: 1.0,
    }
}

fn positive(name: &'static str, dims: &[i64]) -> In {
    In {
        name,
        dims: dims.to_vec(),
        lo: 0.5,
        hi: 2.0,
    }
}

/// A one-node model `y = op(inputs...)` in float64 (or float32) and random data.
fn one_node(
    op: &str,
    inputs: &[In],
    attrs: Vec<AttributeProto>,
    elem: i32,
    opset: i64,
    seed: u64,
) -> (ModelProto, Vec<(&'static str, Data)>) {
    let mut rng = Rng::new(seed);
    let declared = |d: &i64| {
        if *d < 0 {
            Dim::Symbolic("N".into())
        } else {
            Dim::Fixed(*d)
        }
    };
    let graph = GraphProto {
        name: Some(op.into()),
        node: vec![node(
            op,
            &inputs.iter().map(|i| i.name).collect::<Vec<_>>(),
            &["y"],
            attrs,
        )],
        input: inputs
            .iter()
            .map(|i| {
                value_info(
                    i.name,
                    elem,
                    &i.dims.iter().map(declared).collect::<Vec<_>>(),
                )
            })
            .collect(),
        output: vec![value_info_any_shape("y", elem)],
        ..Default::default()
    };
    let data = inputs
        .iter()
        .map(|i| {
            let shape: Vec<i64> = i
                .dims
                .iter()
                .map(|&d| if d < 0 { BATCH } else { d })
                .collect();
            let n = shape.iter().product::<i64>() as usize;
            let values: Vec<f64> = (0..n)
                .map(|_| i.lo + (i.hi - i.lo) * rng.uniform(0.0, 1.0) as f64)
                .collect();
            let data = if elem == DOUBLE {
                Data::F64(shape, values)
            } else {
                Data::F32(shape, values.iter().map(|&v| v as f32).collect())
            };
            (i.name, data)
        })
        .collect();
    (model_from_graph(graph, opset), data)
}

fn check64(op: &str, inputs: &[In], attrs: Vec<AttributeProto>, wrt: &[&str]) {
    let (model, data) = one_node(op, inputs, attrs, DOUBLE, 17, 11);
    GradCheck::f64(model, data, wrt).run();
}

fn check32(op: &str, inputs: &[In], attrs: Vec<AttributeProto>, wrt: &[&str], opset: i64) {
    let (model, data) = one_node(op, inputs, attrs, FLOAT, opset, 13);
    GradCheck::f32(model, data, wrt).run();
}

#[test]
fn add_sub_mul_div_gradients_sum_over_broadcast_axes() {
    for op in ["Add", "Sub", "Mul"] {
        check64(
            op,
            &[input("a", &[-1, 3, 4]), input("b", &[4])],
            vec![],
            &["a", "b"],
        );
        check64(
            op,
            &[input("a", &[-1, 3, 4]), input("b", &[3, 1])],
            vec![],
            &["a", "b"],
        );
        check64(
            op,
            &[input("a", &[1, 3]), input("b", &[-1, 1])],
            vec![],
            &["a", "b"],
        );
    }
    check64(
        "Div",
        &[input("a", &[-1, 3]), positive("b", &[3])],
        vec![],
        &["a", "b"],
    );
    check64(
        "Div",
        &[positive("a", &[2]), positive("b", &[-1, 2])],
        vec![],
        &["a", "b"],
    );
}

#[test]
fn unary_elementwise_gradients_match_finite_differences() {
    for op in ["Neg", "Exp", "Sigmoid", "Tanh", "Identity"] {
        check64(op, &[input("x", &[-1, 4])], vec![], &["x"]);
    }
    for op in ["Log", "Sqrt", "Reciprocal", "Abs"] {
        check64(op, &[positive("x", &[-1, 4])], vec![], &["x"]);
    }
    check64("Relu", &[input("x", &[-1, 5])], vec![], &["x"]);
    check64(
        "Pow",
        &[positive("x", &[-1, 3]), input("p", &[3])],
        vec![],
        &["x", "p"],
    );
}

#[test]
fn float32_activation_gradients_match_finite_differences() {
    check32(
        "LeakyRelu",
        &[input("x", &[-1, 6])],
        vec![attr_float("alpha", 0.1)],
        &["x"],
        17,
    );
    check32(
        "HardSigmoid",
        &[input("x", &[-1, 6])],
        vec![attr_float("alpha", 0.4)],
        &["x"],
        17,
    );
    // HardSwish: kinks at +-3, values drawn in (-5, 5) away from them by the seed.
    let wide = In {
        name: "x",
        dims: vec![-1, 6],
        lo: -5.0,
        hi: 5.0,
    };
    check32("HardSwish", &[wide], vec![], &["x"], 17);
    check32("Erf", &[input("x", &[-1, 6])], vec![], &["x"], 17);
    check32("Gelu", &[input("x", &[-1, 6])], vec![], &["x"], 20);
    check32(
        "Gelu",
        &[input("x", &[-1, 6])],
        vec![attr_string("approximate", "tanh")],
        &["x"],
        20,
    );
}

#[test]
fn clip_passes_gradient_only_inside_the_bounds() {
    let lo = In {
        name: "lo",
        dims: vec![],
        lo: -0.5,
        hi: -0.49,
    };
    let hi = In {
        name: "hi",
        dims: vec![],
        lo: 0.49,
        hi: 0.5,
    };
    let (model, data) = one_node(
        "Clip",
        &[input("x", &[-1, 8]), lo, hi],
        vec![],
        DOUBLE,
        17,
        5,
    );
    GradCheck::f64(model, data, &["x"]).run();
}

#[test]
fn max_min_where_and_sum_route_gradients_to_the_chosen_operand() {
    check64(
        "Max",
        &[input("a", &[-1, 4]), input("b", &[4])],
        vec![],
        &["a", "b"],
    );
    check64(
        "Min",
        &[input("a", &[-1, 4]), input("b", &[-1, 1])],
        vec![],
        &["a", "b"],
    );
    check64(
        "Sum",
        &[input("a", &[-1, 4]), input("b", &[4]), input("c", &[-1, 1])],
        vec![],
        &["a", "b", "c"],
    );

    // Where with a boolean condition computed in the graph.
    let mut rng = Rng::new(3);
    let graph = GraphProto {
        name: Some("where".into()),
        node: vec![
            node("Greater", &["c", "zero"], &["cond"], vec![]),
            node("Where", &["cond", "a", "b"], &["y"], vec![]),
        ],
        initializer: vec![ldam_onnx::onnx::TensorProto {
            name: Some("zero".into()),
            data_type: Some(DOUBLE),
            raw_data: Some(0f64.to_le_bytes().to_vec().into()),
            ..Default::default()
        }],
        input: vec![
            value_info("c", DOUBLE, &[Dim::Symbolic("N".into()), Dim::Fixed(4)]),
            value_info("a", DOUBLE, &[Dim::Symbolic("N".into()), Dim::Fixed(4)]),
            value_info("b", DOUBLE, &[Dim::Fixed(4)]),
        ],
        output: vec![value_info_any_shape("y", DOUBLE)],
        ..Default::default()
    };
    let mut values = |n: usize| {
        (0..n)
            .map(|_| rng.uniform(-1.0, 1.0) as f64)
            .collect::<Vec<f64>>()
    };
    let data = vec![
        ("c", Data::F64(vec![BATCH, 4], values(12))),
        ("a", Data::F64(vec![BATCH, 4], values(12))),
        ("b", Data::F64(vec![4], values(4))),
    ];
    GradCheck::f64(model_from_graph(graph, 17), data, &["a", "b"]).run();
}

#[test]
fn matmul_gradients_for_matrices_and_broadcast_batches() {
    check64(
        "MatMul",
        &[input("a", &[-1, 4]), input("b", &[4, 3])],
        vec![],
        &["a", "b"],
    );
    check64(
        "MatMul",
        &[input("a", &[-1, 2, 3]), input("b", &[3, 5])],
        vec![],
        &["a", "b"],
    );
    check64(
        "MatMul",
        &[input("a", &[-1, 2, 3]), input("b", &[-1, 3, 2])],
        vec![],
        &["a", "b"],
    );
}

#[test]
fn gemm_gradients_for_every_transpose_combination() {
    for (ta, tb) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let a = if ta == 1 {
            input("a", &[4, -1])
        } else {
            input("a", &[-1, 4])
        };
        let b = if tb == 1 {
            input("b", &[5, 4])
        } else {
            input("b", &[4, 5])
        };
        let attrs = vec![
            attr_int("transA", ta),
            attr_int("transB", tb),
            attr_float("alpha", 0.5),
            attr_float("beta", 2.0),
        ];
        check64("Gemm", &[a, b, input("c", &[5])], attrs, &["a", "b", "c"]);
    }
}

#[test]
fn reduction_gradients_with_and_without_kept_dims() {
    for keepdims in [0, 1] {
        // Opset 17: ReduceSum takes axes as an input, ReduceMean/ReduceL2 as an attribute.
        let mut rng = Rng::new(9);
        let axes = ldam_onnx::onnx::tensor::i64_tensor("axes", &[1], &[1]);
        let graph = GraphProto {
            name: Some("reduce_sum".into()),
            node: vec![node(
                "ReduceSum",
                &["x", "axes"],
                &["y"],
                vec![attr_int("keepdims", keepdims)],
            )],
            initializer: vec![axes],
            input: vec![value_info(
                "x",
                DOUBLE,
                &[Dim::Symbolic("N".into()), Dim::Fixed(4), Dim::Fixed(2)],
            )],
            output: vec![value_info_any_shape("y", DOUBLE)],
            ..Default::default()
        };
        let x: Vec<f64> = (0..BATCH * 8)
            .map(|_| rng.uniform(-1.0, 1.0) as f64)
            .collect();
        GradCheck::f64(
            model_from_graph(graph, 17),
            vec![("x", Data::F64(vec![BATCH, 4, 2], x))],
            &["x"],
        )
        .run();
        for op in ["ReduceMean", "ReduceL2"] {
            let attrs = vec![attr_int("keepdims", keepdims), attr_ints("axes", &[1, 2])];
            check64(op, &[input("x", &[-1, 4, 2])], attrs, &["x"]);
        }
    }
    // Reducing everything to a scalar.
    check64(
        "ReduceMean",
        &[input("x", &[-1, 4])],
        vec![attr_int("keepdims", 0)],
        &["x"],
    );
}

#[test]
fn softmax_and_log_softmax_gradients_on_every_axis() {
    for axis in [-1, 1] {
        for op in ["Softmax", "LogSoftmax"] {
            check64(
                op,
                &[input("x", &[-1, 4, 3])],
                vec![attr_int("axis", axis)],
                &["x"],
            );
        }
    }
}

#[test]
fn lp_normalization_gradient_matches_finite_differences() {
    check32(
        "LpNormalization",
        &[input("x", &[-1, 5])],
        vec![attr_int("axis", 1)],
        &["x"],
        17,
    );
}

/// SoftmaxCrossEntropyLoss with every reduction, with and without class weights
/// and ignore_index.
#[test]
fn softmax_cross_entropy_gradients_for_every_reduction_and_weighting() {
    let labels = vec![0i64, 3, 2, 3];
    for reduction in ["mean", "sum", "none"] {
        for weighted in [false, true] {
            for ignore in [None, Some(3i64)] {
                let mut rng = Rng::new(21);
                let mut inputs = vec!["scores", "labels"];
                if weighted {
                    inputs.push("weights");
                }
                let mut attrs = vec![attr_string("reduction", reduction)];
                if let Some(ii) = ignore {
                    attrs.push(attr_int("ignore_index", ii));
                }
                let n = Dim::Symbolic("N".into());
                let mut declared = vec![
                    value_info("scores", DOUBLE, &[n.clone(), Dim::Fixed(5)]),
                    value_info("labels", INT64, &[n]),
                ];
                if weighted {
                    declared.push(value_info("weights", DOUBLE, &[Dim::Fixed(5)]));
                }
                let graph = GraphProto {
                    name: Some("sce".into()),
                    node: vec![node("SoftmaxCrossEntropyLoss", &inputs, &["y"], attrs)],
                    input: declared,
                    output: vec![value_info_any_shape("y", DOUBLE)],
                    ..Default::default()
                };
                let scores: Vec<f64> = (0..20).map(|_| rng.uniform(-2.0, 2.0) as f64).collect();
                let mut data = vec![
                    ("scores", Data::F64(vec![4, 5], scores)),
                    ("labels", Data::I64(vec![4], labels.clone())),
                ];
                if weighted {
                    data.push((
                        "weights",
                        Data::F64(vec![5], vec![0.5, 1.0, 2.0, 0.25, 1.5]),
                    ));
                }
                GradCheck::f64(model_from_graph(graph, 17), data, &["scores"]).run();
            }
        }
    }
}
