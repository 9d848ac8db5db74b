//! Gradients of the neural-network ops (convolution, pooling, normalisation,
//! dropout) against central finite differences evaluated by ONNX Runtime.
//!
//! Every model declares a symbolic batch dimension `N`. ONNX Runtime's CPU kernels
//! implement Conv, ConvTranspose, AveragePool and GlobalAveragePool for float32
//! only, so those checks run in float32; they are linear in each operand, so a
//! large step (0.1) has no truncation error and the only noise is float32
//! rounding of the loss. MaxPool, BatchNormalization and LayerNormalization run
//! in float64 with the default tight tolerances.

mod common;

use common::gradcheck::{GradCheck, DOUBLE};
use common::{model_from_graph, node, run, Data, Rng};
use ldam_onnx::onnx::builder::{attr_float, attr_int, attr_ints, attr_string, Emitter, NameSet};
use ldam_onnx::onnx::tensor::{f32_tensor, FLOAT};
use ldam_onnx::onnx::types::{value_info, value_info_any_shape, Dim};
use ldam_onnx::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use ldam_onnx::ops::shapes::ValueShapes;

/// A model with input `x` (batch dimension symbolic), the given initializers and
/// nodes, and one output `y`.
fn model(
    nodes: Vec<NodeProto>,
    x_dims: &[i64],
    elem: i32,
    params: Vec<TensorProto>,
    opset: i64,
) -> ModelProto {
    let declared: Vec<Dim> = std::iter::once(Dim::Symbolic("N".into()))
        .chain(x_dims[1..].iter().map(|&d| Dim::Fixed(d)))
        .collect();
    model_with_input(nodes, &declared, elem, params, opset)
}

fn model_with_input(
    nodes: Vec<NodeProto>,
    declared: &[Dim],
    elem: i32,
    params: Vec<TensorProto>,
    opset: i64,
) -> ModelProto {
    let graph = GraphProto {
        name: Some("grad_nn".into()),
        node: nodes,
        initializer: params,
        input: vec![value_info("x", elem, declared)],
        output: vec![value_info_any_shape("y", elem)],
        ..Default::default()
    };
    model_from_graph(graph, opset)
}

fn one_node(op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> Vec<NodeProto> {
    vec![node(op, inputs, &["y"], attrs)]
}

fn count(dims: &[i64]) -> usize {
    dims.iter().product::<i64>() as usize
}

/// Random float32 data and a float32 initializer.
fn data_f32(rng: &mut Rng, dims: &[i64]) -> Data {
    Data::F32(dims.to_vec(), rng.floats(count(dims), -1.0, 1.0))
}
fn param_f32(rng: &mut Rng, name: &str, dims: &[i64]) -> TensorProto {
    f32_tensor(name, dims, &rng.floats(count(dims), -1.0, 1.0))
}

/// Random float64 values in [lo, hi), data and initializers.
fn values_f64(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n)
        .map(|_| lo + (hi - lo) * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        .collect()
}
fn data_f64(rng: &mut Rng, dims: &[i64]) -> Data {
    Data::F64(dims.to_vec(), values_f64(rng, count(dims), -2.0, 2.0))
}
fn param_f64(rng: &mut Rng, name: &str, dims: &[i64], lo: f64, hi: f64) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DOUBLE),
        raw_data: Some(
            values_f64(rng, count(dims), lo, hi)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
        ..Default::default()
    }
}

/// Float32 check of an op linear in each operand: step 0.1 (exact for a linear
/// loss), 2e-4 absolute + 1e-4 relative; the largest error seen is 2.3e-5.
fn linear_f32(model: ModelProto, x: Data, wrt: &[&str]) -> GradCheck {
    GradCheck {
        step: 0.1,
        abs_tol: 2e-4,
        rel_tol: 1e-4,
        ..GradCheck::f32(model, vec![("x", x)], wrt)
    }
}

fn gradient_error(model: &ModelProto) -> String {
    let loss_model = with_sum_loss(model, FLOAT);
    match ldam_onnx::autodiff::gradient_model(&loss_model, "loss", &["x".to_string()]) {
        Ok(_) => panic!("expected the gradient to be refused"),
        Err(e) => e.to_string(),
    }
}

/// `loss = ReduceSum(y)` appended to a model.
fn with_sum_loss(model: &ModelProto, elem: i32) -> ModelProto {
    let mut model = model.clone();
    let graph = model.graph.as_mut().unwrap();
    graph.node.push(node(
        "ReduceSum",
        &["y"],
        &["loss"],
        vec![attr_int("keepdims", 0)],
    ));
    graph.output = vec![value_info("loss", elem, &[])];
    model
}

// ---------------------------------------------------------------------------
// Conv

fn conv_check(x_dims: &[i64], w_dims: &[i64], attrs: Vec<AttributeProto>, seed: u64) {
    let mut rng = Rng::new(seed);
    let params = vec![
        param_f32(&mut rng, "w", w_dims),
        param_f32(&mut rng, "b", &[w_dims[0]]),
    ];
    let x = data_f32(&mut rng, x_dims);
    let m = model(
        one_node("Conv", &["x", "w", "b"], attrs),
        x_dims,
        FLOAT,
        params,
        17,
    );
    linear_f32(m, x, &["x", "w", "b"]).run();
}

#[test]
fn conv2d_with_bias_stride_2_and_pads_matches_finite_differences() {
    conv_check(
        &[2, 4, 7, 7],
        &[6, 4, 3, 3],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
        1,
    );
}

#[test]
fn conv2d_grouped_dilated_with_asymmetric_pads_matches_finite_differences() {
    conv_check(
        &[2, 4, 9, 8],
        &[6, 2, 3, 3],
        vec![
            attr_int("group", 2),
            attr_ints("dilations", &[2, 2]),
            attr_ints("strides", &[1, 2]),
            attr_ints("pads", &[1, 0, 2, 1]),
        ],
        2,
    );
}

#[test]
fn conv2d_depthwise_matches_finite_differences() {
    conv_check(
        &[2, 4, 7, 7],
        &[4, 1, 3, 3],
        vec![
            attr_int("group", 4),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
        3,
    );
}

#[test]
fn conv1d_strided_dilated_matches_finite_differences() {
    conv_check(
        &[3, 3, 11],
        &[4, 3, 3],
        vec![
            attr_ints("strides", &[2]),
            attr_ints("dilations", &[2]),
            attr_ints("pads", &[2, 1]),
        ],
        4,
    );
}

#[test]
fn conv2d_same_upper_auto_pad_matches_finite_differences() {
    conv_check(
        &[2, 3, 6, 7],
        &[4, 3, 3, 3],
        vec![
            attr_string("auto_pad", "SAME_UPPER"),
            attr_ints("strides", &[2, 2]),
        ],
        5,
    );
}

#[test]
fn conv2d_grouped_stride_2_with_two_outputs_per_group_matches_finite_differences() {
    conv_check(
        &[2, 4, 7, 7],
        &[6, 2, 3, 3],
        vec![
            attr_int("group", 2),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
        7,
    );
}

#[test]
fn conv2d_depthwise_with_channel_multiplier_and_dilation_2_matches_finite_differences() {
    conv_check(
        &[2, 3, 9, 8],
        &[6, 1, 3, 3],
        vec![
            attr_int("group", 3),
            attr_ints("dilations", &[2, 2]),
            attr_ints("pads", &[2, 2, 2, 2]),
        ],
        8,
    );
}

#[test]
fn conv2d_1x1_matches_finite_differences() {
    // Stride 1 needs no unfolding; stride 2 picks every other position, no padding.
    conv_check(&[2, 4, 5, 5], &[3, 4, 1, 1], vec![], 9);
    conv_check(
        &[2, 4, 6, 5],
        &[3, 4, 1, 1],
        vec![attr_ints("strides", &[2, 2])],
        10,
    );
}

#[test]
fn conv2d_whose_windows_miss_the_last_rows_matches_finite_differences() {
    // 8 rows, kernel 3, stride 2: three windows, row 7 unused (floor mode).
    conv_check(
        &[2, 3, 8, 9],
        &[4, 3, 3, 3],
        vec![attr_ints("strides", &[2, 2])],
        11,
    );
}

#[test]
fn conv3d_strided_with_pads_matches_finite_differences() {
    conv_check(
        &[2, 2, 5, 4, 6],
        &[3, 2, 3, 2, 3],
        vec![
            attr_ints("strides", &[2, 1, 2]),
            attr_ints("pads", &[1, 0, 1, 1, 0, 0]),
        ],
        12,
    );
}

#[test]
fn conv2d_same_lower_auto_pad_with_even_kernel_matches_finite_differences() {
    conv_check(
        &[2, 3, 7, 6],
        &[4, 3, 2, 2],
        vec![
            attr_string("auto_pad", "SAME_LOWER"),
            attr_ints("strides", &[2, 1]),
        ],
        13,
    );
}

/// The op types the backward of a float32 Conv with weight `w` emits.
fn conv_backward_ops(x_dims: &[i64], w_dims: &[i64], attrs: Vec<AttributeProto>) -> Vec<String> {
    let mut rng = Rng::new(0);
    let m = model(
        one_node("Conv", &["x", "w"], attrs),
        x_dims,
        FLOAT,
        vec![param_f32(&mut rng, "w", w_dims)],
        17,
    );
    let loss_model = with_sum_loss(&m, FLOAT);
    let (grad_model, _) =
        ldam_onnx::autodiff::gradient_model(&loss_model, "loss", &["x".to_string()]).unwrap();
    grad_model.graph.unwrap().node[2..]
        .iter()
        .map(|n| n.op_type().to_string())
        .collect()
}

#[test]
fn conv_input_gradient_is_a_conv_for_unit_strides_and_a_conv_transpose_otherwise() {
    let unit = vec![attr_ints("pads", &[1, 1, 1, 1])];
    let ops = conv_backward_ops(&[2, 3, 6, 6], &[4, 3, 3, 3], unit);
    assert!(ops.contains(&"Conv".to_string()), "{ops:?}");
    assert!(!ops.contains(&"ConvTranspose".to_string()), "{ops:?}");
    let strided = vec![attr_ints("strides", &[2, 2])];
    let ops = conv_backward_ops(&[2, 3, 6, 6], &[4, 3, 3, 3], strided);
    assert!(ops.contains(&"ConvTranspose".to_string()), "{ops:?}");
}

#[test]
fn conv2d_stride_1_grouped_with_asymmetric_pads_matches_finite_differences() {
    // Two groups of three outputs: the flipped kernel swaps channels within each group.
    conv_check(
        &[2, 4, 6, 7],
        &[6, 2, 3, 2],
        vec![attr_int("group", 2), attr_ints("pads", &[0, 1, 2, 0])],
        14,
    );
}

#[test]
fn conv2d_stride_1_dilated_with_uneven_kernel_matches_finite_differences() {
    conv_check(
        &[2, 3, 9, 8],
        &[4, 3, 2, 3],
        vec![
            attr_ints("dilations", &[3, 2]),
            attr_ints("pads", &[2, 1, 1, 2]),
        ],
        15,
    );
}

#[test]
fn conv2d_stride_1_same_upper_even_kernel_matches_finite_differences() {
    conv_check(
        &[2, 3, 5, 6],
        &[2, 3, 2, 2],
        vec![attr_string("auto_pad", "SAME_UPPER")],
        16,
    );
}

#[test]
fn conv_stride_1_with_pads_wider_than_the_kernel_matches_finite_differences() {
    // A pad of 3 beside a 2-wide kernel would need a negative pad in the flipped
    // convolution, so this one stays a ConvTranspose.
    let attrs = || vec![attr_ints("pads", &[3, 0, 0, 1])];
    let ops = conv_backward_ops(&[2, 3, 5, 5], &[4, 3, 2, 2], attrs());
    assert!(ops.contains(&"ConvTranspose".to_string()), "{ops:?}");
    conv_check(&[2, 3, 5, 5], &[4, 3, 2, 2], attrs(), 17);
}

#[test]
fn conv3d_stride_1_grouped_matches_finite_differences() {
    conv_check(
        &[2, 4, 4, 5, 3],
        &[4, 2, 2, 3, 2],
        vec![attr_int("group", 2), attr_ints("pads", &[1, 1, 0, 0, 1, 1])],
        18,
    );
}

#[test]
fn conv_without_static_spatial_shape_is_refused_with_the_reason() {
    let mut rng = Rng::new(6);
    let declared = [
        Dim::Symbolic("N".into()),
        Dim::Fixed(3),
        Dim::Symbolic("H".into()),
        Dim::Symbolic("W".into()),
    ];
    let m = model_with_input(
        one_node("Conv", &["x", "w"], vec![attr_ints("pads", &[1, 1, 1, 1])]),
        &declared,
        FLOAT,
        vec![param_f32(&mut rng, "w", &[4, 3, 3, 3])],
        17,
    );
    let error = gradient_error(&m);
    assert!(error.contains("static spatial shape of 'x'"), "{error}");
}

// ---------------------------------------------------------------------------
// Pooling

fn max_pool_check(x_dims: &[i64], attrs: Vec<AttributeProto>, opset: i64, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = data_f64(&mut rng, x_dims);
    let m = model(
        one_node("MaxPool", &["x"], attrs),
        x_dims,
        DOUBLE,
        vec![],
        opset,
    );
    GradCheck::f64(m, vec![("x", x)], &["x"]).run();
}

#[test]
fn max_pool_2x2_stride_2_routes_gradient_to_each_window_max() {
    max_pool_check(
        &[2, 3, 6, 6],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
        ],
        17,
        10,
    );
}

#[test]
fn max_pool_3x3_stride_2_with_pads_sums_overlapping_windows() {
    max_pool_check(
        &[2, 3, 7, 7],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
        17,
        11,
    );
}

/// VoVNet's `MaxPool2d(3, 2, ceil_mode=True)` on a 2x2 and a 4x4 map: the
/// windows hang past the input (one covers all of a 2x2 map).
#[test]
fn max_pool_in_ceil_mode_with_windows_past_the_input_matches_finite_differences() {
    for (side, seed) in [(2, 13), (4, 14)] {
        max_pool_check(
            &[2, 3, side, side],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_int("ceil_mode", 1),
            ],
            17,
            seed,
        );
    }
}

#[test]
fn max_pool_with_disjoint_windows_works_before_opset_16() {
    max_pool_check(
        &[2, 3, 6, 6],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
        ],
        15,
        12,
    );
}

#[test]
fn max_pool_with_overlapping_windows_before_opset_16_is_refused() {
    let attrs = vec![
        attr_ints("kernel_shape", &[3, 3]),
        attr_ints("strides", &[2, 2]),
    ];
    let m = model(
        one_node("MaxPool", &["x"], attrs),
        &[2, 3, 7, 7],
        FLOAT,
        vec![],
        15,
    );
    let error = gradient_error(&m);
    assert!(error.contains("opset 16"), "{error}");
}

#[test]
fn max_pool_with_column_major_indices_is_refused() {
    let attrs = vec![
        attr_ints("kernel_shape", &[2, 2]),
        attr_int("storage_order", 1),
    ];
    let m = model(
        one_node("MaxPool", &["x"], attrs),
        &[2, 3, 6, 6],
        FLOAT,
        vec![],
        17,
    );
    let error = gradient_error(&m);
    assert!(error.contains("storage_order"), "{error}");
}

fn average_pool_check(x_dims: &[i64], attrs: Vec<AttributeProto>, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = data_f32(&mut rng, x_dims);
    let m = model(
        one_node("AveragePool", &["x"], attrs),
        x_dims,
        FLOAT,
        vec![],
        17,
    );
    linear_f32(m, x, &["x"]).run();
}

#[test]
fn average_pool_whose_kernel_covers_the_input_spreads_evenly() {
    // ResNet-32's final pool: 8x8 kernel, stride 8, on an 8x8 map.
    average_pool_check(
        &[2, 4, 8, 8],
        vec![
            attr_ints("kernel_shape", &[8, 8]),
            attr_ints("strides", &[8, 8]),
            attr_int("count_include_pad", 1),
        ],
        20,
    );
}

#[test]
fn average_pool_strided_with_pads_counting_pads_matches_finite_differences() {
    average_pool_check(
        &[2, 3, 9, 8],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("count_include_pad", 1),
        ],
        21,
    );
}

#[test]
fn average_pool_strided_with_pads_not_counting_pads_matches_finite_differences() {
    average_pool_check(
        &[2, 3, 9, 8],
        vec![
            attr_ints("kernel_shape", &[3, 2]),
            attr_ints("strides", &[2, 3]),
            attr_ints("pads", &[1, 1, 1, 0]),
            attr_int("count_include_pad", 0),
        ],
        22,
    );
}

/// ResNet-D's downsampling, `AvgPool2d(2, 2, ceil_mode=True,
/// count_include_pad=False)`, on an odd size: the last window hangs past X
/// and is divided by the elements it still covers.
#[test]
fn average_pool_in_ceil_mode_not_counting_pads_matches_finite_differences() {
    average_pool_check(
        &[2, 3, 7, 7],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
            attr_int("ceil_mode", 1),
            attr_int("count_include_pad", 0),
        ],
        31,
    );
}

/// Ceil mode with pads counted: a clipped window counts the pads it covers.
#[test]
fn average_pool_in_ceil_mode_counting_pads_matches_finite_differences() {
    average_pool_check(
        &[2, 2, 6, 7],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("ceil_mode", 1),
            attr_int("count_include_pad", 1),
        ],
        32,
    );
}

#[test]
fn global_average_pool_spreads_evenly() {
    let mut rng = Rng::new(30);
    let x = data_f32(&mut rng, &[2, 3, 5, 4]);
    let m = model(
        one_node("GlobalAveragePool", &["x"], vec![]),
        &[2, 3, 5, 4],
        FLOAT,
        vec![],
        17,
    );
    linear_f32(m, x, &["x"]).run();
}

// ---------------------------------------------------------------------------
// BatchNormalization

/// Scale, bias, running mean and running variance (positive) for `channels`.
fn bn_params(rng: &mut Rng, channels: i64) -> Vec<TensorProto> {
    vec![
        param_f64(rng, "scale", &[channels], 0.5, 1.5),
        param_f64(rng, "bias", &[channels], -1.0, 1.0),
        param_f64(rng, "mean", &[channels], -0.5, 0.5),
        param_f64(rng, "var", &[channels], 0.5, 1.5),
    ]
}

const BN_INPUTS: [&str; 5] = ["x", "scale", "bias", "mean", "var"];

#[test]
fn batch_norm_inference_mode_matches_finite_differences() {
    let mut rng = Rng::new(40);
    let dims = [2, 3, 4, 5];
    let x = data_f64(&mut rng, &dims);
    let nodes = one_node(
        "BatchNormalization",
        &BN_INPUTS,
        vec![attr_float("epsilon", 1e-3)],
    );
    let m = model(nodes, &dims, DOUBLE, bn_params(&mut rng, 3), 17);
    GradCheck::f64(m, vec![("x", x)], &["x", "scale", "bias", "mean", "var"]).run();
}

/// Training mode as exported: three outputs, the running statistics unused.
fn bn_training_check(dims: &[i64], opset: i64, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = data_f64(&mut rng, dims);
    let nodes = vec![node(
        "BatchNormalization",
        &BN_INPUTS,
        &["y", "running_mean_out", "running_var_out"],
        vec![attr_int("training_mode", 1), attr_float("momentum", 0.9)],
    )];
    let m = model(nodes, dims, DOUBLE, bn_params(&mut rng, dims[1]), opset);
    GradCheck::f64(m, vec![("x", x)], &["x", "scale", "bias"]).run();
}

#[test]
fn batch_norm_training_mode_4d_matches_finite_differences_of_batch_statistics() {
    bn_training_check(&[3, 4, 3, 3], 17, 41);
}

#[test]
fn batch_norm_training_mode_2d_with_reduce_axes_as_input_matches_finite_differences() {
    // BatchNorm1d on [N, C], opset 18 where ReduceMean takes its axes as an input.
    bn_training_check(&[6, 4], 18, 42);
}

#[test]
fn batch_norm_training_mode_gradient_is_the_closed_form_without_statistics_chain() {
    // The backward reuses the forward's centred input: no gradient flows through
    // the ReduceMean statistics, whose rules would Expand their gradients back.
    let mut rng = Rng::new(44);
    let nodes = vec![node(
        "BatchNormalization",
        &BN_INPUTS,
        &["y", "running_mean_out", "running_var_out"],
        vec![attr_int("training_mode", 1)],
    )];
    let m = model(nodes, &[2, 3, 4, 4], DOUBLE, bn_params(&mut rng, 3), 17);
    let loss_model = with_sum_loss(&m, DOUBLE);
    let wrt: Vec<String> = ["x", "scale", "bias"].map(String::from).to_vec();
    let (grad_model, _) = ldam_onnx::autodiff::gradient_model(&loss_model, "loss", &wrt).unwrap();
    let ops: Vec<&str> = grad_model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type())
        .collect();
    // One Expand: the gradient of the ReduceSum loss itself.
    assert_eq!(
        ops.iter().filter(|&&op| op == "Expand").count(),
        1,
        "{ops:?}"
    );
    assert_eq!(
        ops.iter().filter(|&&op| op == "ReduceMean").count(),
        2,
        "{ops:?}"
    );
    assert_eq!(
        ops.iter().filter(|&&op| op == "ReduceSum").count(),
        3,
        "{ops:?}"
    );
}

#[test]
fn batch_norm_training_mode_with_epsilon_and_opset_14_matches_finite_differences() {
    let mut rng = Rng::new(45);
    let dims = [4, 2, 3, 2];
    let x = data_f64(&mut rng, &dims);
    let nodes = vec![node(
        "BatchNormalization",
        &BN_INPUTS,
        &["y", "running_mean_out", "running_var_out"],
        vec![attr_int("training_mode", 1), attr_float("epsilon", 0.1)],
    )];
    let m = model(nodes, &dims, DOUBLE, bn_params(&mut rng, 2), 14);
    GradCheck::f64(m, vec![("x", x)], &["x", "scale", "bias"]).run();
}

#[test]
fn explicit_statistics_expose_batch_mean_biased_variance_and_count() {
    let mut rng = Rng::new(43);
    let dims = [3, 2, 2, 3];
    let x = data_f64(&mut rng, &dims);
    let nodes = vec![node(
        "BatchNormalization",
        &BN_INPUTS,
        &["y", "running_mean_out", "running_var_out"],
        vec![attr_int("training_mode", 1), attr_float("momentum", 0.8)],
    )];
    let mut m = model(nodes, &dims, DOUBLE, bn_params(&mut rng, 2), 17);
    let before = run(&m, &[("x", x.clone())])["y"].values_f64();

    let mut graph = m.graph.take().unwrap();
    let mut shapes = ValueShapes::infer(&graph, 17);
    let mut b = Emitter::new(NameSet::of_graph(&graph), "train/", 17);
    let stats =
        ldam_onnx::autodiff::batchnorm::explicit_statistics(&mut graph, &mut b, &mut shapes)
            .unwrap();
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!(
        (s.running_mean.as_str(), s.running_var.as_str(), s.momentum),
        ("mean", "var", 0.8)
    );
    let bn = graph
        .node
        .iter()
        .find(|n| n.op_type() == "BatchNormalization")
        .unwrap();
    assert_eq!(bn.output, vec!["y".to_string()]);
    assert_eq!(bn.input[3..], [s.batch_mean.clone(), s.batch_var.clone()]);
    for name in [&s.batch_mean, &s.batch_var, &s.per_channel_count] {
        graph.output.push(value_info_any_shape(name, DOUBLE));
    }
    m.graph = Some(graph);
    ldam_onnx::ops::validate::check_model(&m).unwrap();
    let out = run(&m, &[("x", x.clone())]);

    // Per channel: mean and biased variance over N, H, W.
    let values = x.values_f64();
    let plane = 2 * 3;
    for c in 0..2 {
        let xs: Vec<f64> = (0..3)
            .flat_map(|n| values[(n * 2 + c) * plane..][..plane].to_vec())
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((out[&s.batch_mean].values_f64()[c] - mean).abs() < 1e-12);
        assert!((out[&s.batch_var].values_f64()[c] - var).abs() < 1e-12);
    }
    assert_eq!(
        out[&s.per_channel_count].values_f64(),
        vec![18.0],
        "N H W = 3 * 2 * 3"
    );
    // The inference form with batch statistics is the training-mode output.
    let after = out["y"].values_f64();
    assert!(before
        .iter()
        .zip(&after)
        .all(|(a, b)| (a - b).abs() < 1e-12));
}

// ---------------------------------------------------------------------------
// LayerNormalization

fn layer_norm_check(dims: &[i64], axis: i64, opset: i64, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = data_f64(&mut rng, dims);
    let normalized = &dims[(axis.rem_euclid(dims.len() as i64)) as usize..];
    let params = vec![
        param_f64(&mut rng, "scale", normalized, 0.5, 1.5),
        param_f64(&mut rng, "bias", normalized, -1.0, 1.0),
    ];
    let nodes = one_node(
        "LayerNormalization",
        &["x", "scale", "bias"],
        vec![attr_int("axis", axis)],
    );
    let m = model(nodes, dims, DOUBLE, params, opset);
    GradCheck::f64(m, vec![("x", x)], &["x", "scale", "bias"]).run();
}

#[test]
fn layer_norm_last_axis_matches_finite_differences() {
    layer_norm_check(&[2, 3, 6], -1, 17, 50);
}

#[test]
fn layer_norm_over_two_axes_matches_finite_differences() {
    layer_norm_check(&[2, 3, 4], 1, 18, 51);
}

// ---------------------------------------------------------------------------
// Dropout: the mask is random, so the gradient is compared with g * mask / (1 - ratio)
// computed from the mask of the same run.

/// Runs d(sum(y * R))/dx for a Dropout node and returns (dx, R, mask as 0/1).
fn dropout_gradient(training: Option<bool>) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dims = [4, 5, 6];
    let mut rng = Rng::new(60);
    let x = data_f32(&mut rng, &dims);
    let r = rng.floats(count(&dims), -1.0, 1.0);
    let mut params = vec![f32_tensor("ratio", &[], &[0.3]), f32_tensor("R", &dims, &r)];
    let mut inputs = vec!["x", "ratio"];
    if let Some(flag) = training {
        params.push(TensorProto {
            name: Some("training_mode".into()),
            dims: vec![],
            data_type: Some(9), // BOOL
            raw_data: Some(vec![u8::from(flag)].into()),
            ..Default::default()
        });
        inputs.push("training_mode");
    }
    let nodes = vec![
        node("Dropout", &inputs, &["dropped", "mask"], vec![]),
        node("Mul", &["dropped", "R"], &["weighted"], vec![]),
        node(
            "ReduceSum",
            &["weighted"],
            &["loss"],
            vec![attr_int("keepdims", 0)],
        ),
    ];
    let mut m = model(nodes, &dims, FLOAT, params, 17);
    m.graph.as_mut().unwrap().output = vec![value_info("loss", FLOAT, &[])];
    let (mut grad_model, grads) =
        ldam_onnx::autodiff::gradient_model(&m, "loss", &["x".to_string()]).unwrap();
    let graph = grad_model.graph.as_mut().unwrap();
    graph.node.push(node(
        "Cast",
        &["mask"],
        &["mask_float"],
        vec![attr_int("to", FLOAT as i64)],
    ));
    graph.output.push(value_info_any_shape("mask_float", FLOAT));
    ldam_onnx::ops::validate::check_model(&grad_model).unwrap();
    let out = run(&grad_model, &[("x", x)]);
    let dx = out[&grads["x"]].values_f64();
    let mask = out["mask_float"].values_f64();
    (dx, r.iter().map(|&v| v as f64).collect(), mask)
}

#[test]
fn dropout_in_training_scales_the_kept_gradient_by_one_over_keep_probability() {
    let (dx, r, mask) = dropout_gradient(Some(true));
    let kept = mask.iter().filter(|&&m| m == 1.0).count();
    assert!(
        kept > 0 && kept < mask.len(),
        "the mask should drop some elements and keep others"
    );
    for i in 0..dx.len() {
        let expected = r[i] * mask[i] / 0.7;
        assert!(
            (dx[i] - expected).abs() <= 1e-6 * expected.abs().max(1.0),
            "dx[{i}] = {} vs {expected}",
            dx[i]
        );
    }
}

#[test]
fn dropout_in_inference_passes_the_gradient_through() {
    for training in [Some(false), None] {
        let (dx, r, _) = dropout_gradient(training);
        assert_eq!(dx, r, "training_mode {training:?}");
    }
}

/// Nearest upsampling by 2 (HRNet, FPN): each input element's gradient is the
/// sum of g over its 2x2 block.
#[test]
fn resize_nearest_by_whole_factors_matches_finite_differences() {
    let mut rng = Rng::new(41);
    let x_dims = [2, 3, 3, 4];
    let x = data_f32(&mut rng, &x_dims);
    for (transform, scales) in [
        ("asymmetric", [1.0, 1.0, 2.0, 2.0]),
        ("half_pixel", [1.0, 1.0, 3.0, 2.0]),
    ] {
        let m = model(
            one_node(
                "Resize",
                &["x", "", "scales"],
                vec![
                    attr_string("mode", "nearest"),
                    attr_string("coordinate_transformation_mode", transform),
                ],
            ),
            &x_dims,
            FLOAT,
            vec![ldam_onnx::onnx::tensor::f32_tensor("scales", &[4], &scales)],
            17,
        );
        linear_f32(m, x.clone(), &["x"]).run();
    }
}

/// Bilinear upsampling (`F.interpolate(mode="bilinear")`, EfficientFormerV2):
/// half-pixel, align-corners and asymmetric sources, whole and fractional
/// factors, both spatial axes or one.
#[test]
fn resize_linear_matches_finite_differences() {
    use ldam_onnx::onnx::tensor::f32_tensor;
    let mut rng = Rng::new(42);
    let x_dims = [2, 3, 3, 4];
    let x = data_f32(&mut rng, &x_dims);
    let cases = [
        (
            "half_pixel",
            f32_tensor("scales", &[4], &[1.0, 1.0, 2.0, 2.0]),
        ),
        (
            "pytorch_half_pixel",
            f32_tensor("scales", &[4], &[1.0, 1.0, 3.0, 1.0]),
        ),
        (
            "align_corners",
            f32_tensor("scales", &[4], &[1.0, 1.0, 2.5, 1.25]),
        ),
        (
            "asymmetric",
            f32_tensor("scales", &[4], &[1.0, 1.0, 2.0, 1.5]),
        ),
    ];
    for (transform, operand) in cases {
        let inputs: &[&str] = &["x", "", "scales"];
        let m = model(
            one_node(
                "Resize",
                inputs,
                vec![
                    attr_string("mode", "linear"),
                    attr_string("coordinate_transformation_mode", transform),
                ],
            ),
            &x_dims,
            FLOAT,
            vec![operand],
            17,
        );
        linear_f32(m, x.clone(), &["x"]).run();
    }
}

/// Cubic interpolation has no rule: refused naming the mode.
#[test]
fn resize_in_cubic_mode_is_refused_naming_the_mode() {
    let m = model(
        one_node(
            "Resize",
            &["x", "", "scales"],
            vec![attr_string("mode", "cubic")],
        ),
        &[2, 3, 3, 4],
        FLOAT,
        vec![ldam_onnx::onnx::tensor::f32_tensor(
            "scales",
            &[4],
            &[1.0, 1.0, 2.0, 2.0],
        )],
        17,
    );
    let error = gradient_error(&m);
    assert!(error.contains("mode 'cubic'"), "{error}");
}
