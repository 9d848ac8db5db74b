//! Finite-difference checks of the elementwise, matrix, reduction and loss
//! gradient rules, each on a one-node graph run in ONNX Runtime. Inputs declare a
//! symbolic batch dimension `N` (fed 3) and broadcast where the op allows.
//! Tolerances: float64 graphs use h = 1e-6 and |error| <= 1e-6 + 1e-5 |numeric|;
//! ops ONNX Runtime runs in float32 only use h = 1e-2 and 2e-3 + 2e-2 |numeric|.

mod common;

use common::gradcheck::{GradCheck, DOUBLE};
use common::{model_from_graph, node, run, Data, Rng};
use ldam_onnx::autodiff::gradient_model;
use ldam_onnx::onnx::builder::{attr_float, attr_int, attr_ints, attr_string};
use ldam_onnx::onnx::tensor::{FLOAT, INT64};
use ldam_onnx::onnx::types::{tensor_type, value_info, value_info_any_shape, Dim};
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
    for op in ["Log", "Sqrt", "Reciprocal"] {
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
}

/// `model` (one input `x`, one output `y`) with `loss = ReduceSum(y)` appended,
/// differentiated with respect to `x` and run: the gradient of `sum(y)`, that is
/// the elementwise derivative `dy/dx` for an elementwise graph.
fn derivative(model: &ModelProto, inputs: &[(&str, Data)]) -> Vec<f64> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().unwrap();
    let elem = tensor_type(&graph.output[0]).unwrap().elem_type;
    graph.node.push(node(
        "ReduceSum",
        &["y"],
        &["loss"],
        vec![attr_int("keepdims", 0)],
    ));
    graph.output = vec![value_info("loss", elem, &[])];
    let (grad_model, grads) = gradient_model(&model, "loss", &["x".to_string()])
        .unwrap_or_else(|e| panic!("gradient graph: {e}"));
    run(&grad_model, inputs)[&grads["x"]].values_f64()
}

/// A one-node model `y = op(x)` whose input takes exactly `values` (as a
/// `[N, columns]` batch, N symbolic), in float32 or float64.
fn one_node_at(
    op: &str,
    values: &[f64],
    columns: usize,
    attrs: Vec<AttributeProto>,
    elem: i32,
    opset: i64,
) -> (ModelProto, Vec<(&'static str, Data)>) {
    let (model, _) = one_node(
        op,
        &[input("x", &[-1, columns as i64])],
        attrs,
        elem,
        opset,
        0,
    );
    (model, vec![("x", data_at(values, columns, elem))])
}

fn data_at(values: &[f64], columns: usize, elem: i32) -> Data {
    assert_eq!(values.len() % columns, 0);
    let shape = vec![(values.len() / columns) as i64, columns as i64];
    if elem == DOUBLE {
        Data::F64(shape, values.to_vec())
    } else {
        Data::F32(shape, values.iter().map(|&v| v as f32).collect())
    }
}

/// d/dx of GELU, exact: Phi(x) + x phi(x).
fn gelu_slope_exact(x: f64) -> f64 {
    let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    cdf + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// GELU's tanh form, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3).
fn gelu_tanh(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x.powi(3))).tanh())
}

/// d/dx of the tanh form: 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x).
fn gelu_slope_tanh(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let t = (k * (x + 0.044715 * x.powi(3))).tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)
}

/// erf by its Maclaurin series (|x| <= 3.5 here: 80 terms converge, and the
/// cancellation between terms up to ~1e4 costs < 1e-11).
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

/// Gelu's two forms have derivatives within 9e-4 of each other everywhere, less
/// than the float32 finite-difference tolerance (2e-3), so each form's gradient
/// is compared with its own formula, computed here in f64, at points where the
/// two formulas differ by at least 3.5e-4. The gradient graph runs in float32
/// (ONNX Runtime has Gelu for float only): a few dozen roundings of O(1) values
/// keep it within 2e-5 of the formula, so the wrong formula misses by over 17
/// times the tolerance. Finite differences of ONNX Runtime's own Gelu check that
/// the formulas are the op's.
#[test]
fn gelu_gradients_follow_the_exact_or_the_tanh_formula_as_asked() {
    const TOL: f64 = 2e-5;
    let points = [
        -3.5, -3.25, -2.25, -2.0, -1.75, -1.0, 1.0, 1.75, 2.0, 2.25, 3.25, 3.5,
    ];
    for x in points {
        let gap = (gelu_slope_tanh(x) - gelu_slope_exact(x)).abs();
        assert!(
            gap >= 3.5e-4,
            "x = {x}: the two slopes differ by only {gap:e}"
        );
    }
    let forms: [(Vec<AttributeProto>, fn(f64) -> f64, fn(f64) -> f64); 2] = [
        (vec![], gelu_slope_exact, gelu_slope_tanh),
        (
            vec![attr_string("approximate", "tanh")],
            gelu_slope_tanh,
            gelu_slope_exact,
        ),
    ];
    for (attrs, slope, other) in forms {
        let tanh_form = !attrs.is_empty();
        let (model, data) = one_node_at("Gelu", &points, 6, attrs, FLOAT, 20);
        if tanh_form {
            let y = run(&model, &data)["y"].values_f64();
            for (x, y) in points.iter().zip(y) {
                assert!(
                    (y - gelu_tanh(*x)).abs() < 1e-5,
                    "ONNX Runtime's tanh Gelu at {x}: {y} vs {}",
                    gelu_tanh(*x)
                );
            }
        }
        let analytic = derivative(&model, &data);
        for (x, got) in points.iter().zip(&analytic) {
            let (want, wrong) = (slope(*x), other(*x));
            assert!(
                (got - want).abs() <= TOL,
                "tanh form {tanh_form}, x = {x}: gradient {got}, formula {want} (the other form's: {wrong})"
            );
        }
        GradCheck::f32(model, data, &["x"]).run();
    }
}

/// HardSigmoid `max(0, min(1, alpha x + beta))` with alpha 0.4, beta 0.6 is linear
/// for x in (-1.5, 1): inputs on both saturated sides and in between, each at
/// least 0.25 from a kink (so a step of 1e-2 never crosses one), have slope 0,
/// alpha or 0. The analytic values are exact up to float32 rounding of alpha.
#[test]
fn hard_sigmoid_gradient_is_alpha_inside_and_zero_on_both_saturated_sides() {
    let points = [-3.0, -2.2, -1.75, -1.25, -0.5, 0.3, 0.75, 1.25, 1.9, 3.0];
    let (alpha, beta) = (0.4, 0.6);
    let expected: Vec<f64> = points
        .iter()
        .map(|&x: &f64| {
            let t = alpha * x + beta;
            assert!(
                t < -0.09 || (0.09..0.91).contains(&t) || t > 1.09,
                "x = {x} is near a kink"
            );
            if t > 0.0 && t < 1.0 {
                alpha
            } else {
                0.0
            }
        })
        .collect();
    assert_eq!(
        expected,
        [0.0, 0.0, 0.0, 0.4, 0.4, 0.4, 0.4, 0.0, 0.0, 0.0],
        "three saturated below, four linear, three saturated above"
    );
    let attrs = vec![
        attr_float("alpha", alpha as f32),
        attr_float("beta", beta as f32),
    ];
    let (model, data) = one_node_at("HardSigmoid", &points, 5, attrs, FLOAT, 17);
    let analytic = derivative(&model, &data);
    for ((x, got), want) in points.iter().zip(&analytic).zip(&expected) {
        assert!(
            (got - want).abs() < 1e-6,
            "x = {x}: gradient {got}, expected {want}"
        );
    }
    GradCheck::f32(model, data, &["x"]).run();
}

/// Abs has slope -1 for negative inputs and +1 for positive ones (inputs at least
/// 0.3 from the kink at 0).
#[test]
fn abs_gradient_is_the_sign_on_both_sides_of_zero() {
    let points = [-1.7, 0.8, -0.35, 1.6, -0.9, 0.3];
    let (model, data) = one_node_at("Abs", &points, 3, vec![], DOUBLE, 17);
    let analytic = derivative(&model, &data);
    let expected: Vec<f64> = points.iter().map(|x: &f64| x.signum()).collect();
    assert_eq!(analytic, expected);
    GradCheck::f64(model, data, &["x"]).run();
}

/// `y = chain(x)` over an `[N, 4]` input of type `input_elem`, the nodes reading
/// `x` and the last writing `y` of type `output_elem`.
fn chain_model(
    nodes: Vec<ldam_onnx::onnx::NodeProto>,
    initializers: Vec<ldam_onnx::onnx::TensorProto>,
    input_elem: i32,
    output_elem: i32,
) -> ModelProto {
    let n = Dim::Symbolic("N".into());
    let graph = GraphProto {
        name: Some("chain".into()),
        node: nodes,
        initializer: initializers,
        input: vec![value_info("x", input_elem, &[n, Dim::Fixed(4)])],
        output: vec![value_info_any_shape("y", output_elem)],
        ..Default::default()
    };
    model_from_graph(graph, 17)
}

fn cast(input: &str, output: &str, to: i32) -> ldam_onnx::onnx::NodeProto {
    node("Cast", &[input], &[output], vec![attr_int("to", to as i64)])
}

/// Cast between float types passes the gradient through, cast back to the input's
/// type: float -> double -> Tanh -> float and double -> float -> Tanh -> double
/// both have the slope 1 - tanh(x)^2 (float32 precision: within 1e-6), and their
/// finite differences agree (float32 step and tolerance, as float32 sits on
/// either path). A cast to an integer carries no gradient: y = x * trunc(3x)
/// has the slope trunc(3x) exactly (inputs at least 0.03 from the jumps at
/// multiples of 1/3), and a loss reached only through an integer cast depends on
/// no trainable tensor.
#[test]
fn cast_passes_gradients_between_float_types_and_none_through_integers() {
    let points = [-1.4, -0.6, -0.1, 0.2, 0.7, 1.3, -0.9, 0.45];
    for (outer, inner) in [(FLOAT, DOUBLE), (DOUBLE, FLOAT)] {
        let model = chain_model(
            vec![
                cast("x", "wide", inner),
                node("Tanh", &["wide"], &["t"], vec![]),
                cast("t", "y", outer),
            ],
            vec![],
            outer,
            outer,
        );
        let data = vec![("x", data_at(&points, 4, outer))];
        let analytic = derivative(&model, &data);
        for (x, got) in points.iter().zip(&analytic) {
            // The float32 input's value, where x is float32.
            let x = if outer == FLOAT { *x as f32 as f64 } else { *x };
            let want = 1.0 - x.tanh().powi(2);
            assert!(
                (got - want).abs() < 1e-6,
                "cast {outer} -> {inner} -> {outer}, x = {x}: gradient {got}, expected {want}"
            );
        }
        GradCheck::f32(model, data, &["x"]).run();
    }

    let three = ldam_onnx::onnx::TensorProto {
        name: Some("three".into()),
        data_type: Some(DOUBLE),
        raw_data: Some(3f64.to_le_bytes().to_vec().into()),
        ..Default::default()
    };
    let model = chain_model(
        vec![
            node("Mul", &["x", "three"], &["x3"], vec![]),
            cast("x3", "k", INT64),
            cast("k", "kd", DOUBLE),
            node("Mul", &["x", "kd"], &["y"], vec![]),
        ],
        vec![three.clone()],
        DOUBLE,
        DOUBLE,
    );
    let data = vec![("x", data_at(&points, 4, DOUBLE))];
    let analytic = derivative(&model, &data);
    let expected: Vec<f64> = points.iter().map(|x| (3.0 * x).trunc()).collect();
    assert_eq!(expected, [-4.0, -1.0, 0.0, 0.0, 2.0, 3.0, -2.0, 1.0]);
    assert_eq!(analytic, expected);
    GradCheck::f64(model, data, &["x"]).run();

    let only_integer = chain_model(
        vec![
            node("Mul", &["x", "three"], &["x3"], vec![]),
            cast("x3", "k", INT64),
            cast("k", "y", DOUBLE),
        ],
        vec![three],
        DOUBLE,
        DOUBLE,
    );
    let mut loss_model = only_integer.clone();
    let graph = loss_model.graph.as_mut().unwrap();
    graph.node.push(node(
        "ReduceSum",
        &["y"],
        &["loss"],
        vec![attr_int("keepdims", 0)],
    ));
    graph.output = vec![value_info("loss", DOUBLE, &[])];
    let error = gradient_model(&loss_model, "loss", &["x".to_string()])
        .err()
        .expect("a loss reached only through an integer cast has no gradient")
        .to_string();
    assert!(error.contains("does not depend"), "{error}");
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

/// Negative control of the finite-difference check: Sqrt at 0 has an infinite
/// analytic gradient and a NaN central difference (sqrt(-h)), and the check
/// must reject that rather than let `NaN > tolerance` (false) pass it.
#[test]
#[should_panic(expected = "gradient mismatches")]
fn the_finite_difference_check_rejects_a_non_finite_gradient() {
    let (model, _) = one_node("Sqrt", &[input("x", &[2, 3])], vec![], DOUBLE, 17, 3);
    let x = Data::F64(vec![2, 3], vec![0.25, 1.0, 0.0, 2.0, 0.5, 1.5]);
    GradCheck::f64(model, vec![("x", x)], &["x"]).run();
}
