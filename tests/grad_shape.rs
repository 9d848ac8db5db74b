//! Gradients of the data-movement ops (Flatten, Reshape, Squeeze, Unsqueeze,
//! Transpose, Concat, Split, Slice, Pad, Gather, Expand) against central finite
//! differences evaluated by ONNX Runtime.
//!
//! Every graph declares a symbolic batch dimension `N` (fed 2 or 3) and runs in
//! float64. These ops only move elements, so the loss is linear in each input
//! and the central difference is exact up to rounding: h = 1e-6 with the default
//! float64 tolerance (1e-6 absolute + 1e-5 relative), and every element of every
//! input is perturbed, so positions a slice skips are checked to get zero.

mod common;

use common::gradcheck::{GradCheck, DOUBLE};
use common::{model_from_graph, node, Data, Rng};
use ldam_onnx::onnx::builder::{attr_int, attr_ints, attr_string};
use ldam_onnx::onnx::tensor::{i64_tensor, INT64};
use ldam_onnx::onnx::types::{value_info, value_info_any_shape, Dim};
use ldam_onnx::onnx::{GraphProto, ModelProto, NodeProto, TensorProto};

/// A float64 graph with output `y`: float inputs (dims, -1 = symbolic N), int64
/// constants (initializers) and int64 inputs fed at run time.
struct Case {
    nodes: Vec<NodeProto>,
    floats: Vec<(&'static str, Vec<i64>)>,
    constants: Vec<TensorProto>,
    fed_ints: Vec<(&'static str, Vec<i64>)>,
    opset: i64,
    batch: i64,
}

impl Case {
    fn new(nodes: Vec<NodeProto>) -> Self {
        Case {
            nodes,
            floats: vec![],
            constants: vec![],
            fed_ints: vec![],
            opset: 17,
            batch: 3,
        }
    }
    fn input(mut self, name: &'static str, dims: &[i64]) -> Self {
        self.floats.push((name, dims.to_vec()));
        self
    }
    /// A 1-D int64 initializer.
    fn ints(self, name: &str, values: &[i64]) -> Self {
        self.int_tensor(name, &[values.len() as i64], values)
    }
    /// An int64 initializer of any shape.
    fn int_tensor(mut self, name: &str, dims: &[i64], values: &[i64]) -> Self {
        self.constants.push(i64_tensor(name, dims, values));
        self
    }
    fn scalar_int(mut self, name: &str, value: i64) -> Self {
        self.constants.push(i64_tensor(name, &[], &[value]));
        self
    }
    /// A 1-D int64 graph input, so its value is unknown when compiling.
    fn fed_ints(mut self, name: &'static str, values: &[i64]) -> Self {
        self.fed_ints.push((name, values.to_vec()));
        self
    }
    fn opset(mut self, opset: i64) -> Self {
        self.opset = opset;
        self
    }
    fn batch(mut self, batch: i64) -> Self {
        self.batch = batch;
        self
    }

    fn model(&self) -> ModelProto {
        let declared = |d: &i64| {
            if *d < 0 {
                Dim::Symbolic("N".into())
            } else {
                Dim::Fixed(*d)
            }
        };
        let floats = self.floats.iter().map(|(name, dims)| {
            value_info(name, DOUBLE, &dims.iter().map(declared).collect::<Vec<_>>())
        });
        let ints = self
            .fed_ints
            .iter()
            .map(|(name, v)| value_info(name, INT64, &[Dim::Fixed(v.len() as i64)]));
        let graph = GraphProto {
            name: Some("grad_shape".into()),
            node: self.nodes.clone(),
            initializer: self.constants.clone(),
            input: floats.chain(ints).collect(),
            output: vec![value_info_any_shape("y", DOUBLE)],
            ..Default::default()
        };
        model_from_graph(graph, self.opset)
    }

    /// Random float64 data in [-2, 2), the batch dimension fed as `self.batch`.
    fn data(&self) -> Vec<(&'static str, Data)> {
        let mut rng = Rng::new(self.floats.len() as u64 + 7);
        let floats = self.floats.iter().map(|(name, dims)| {
            let shape: Vec<i64> = dims
                .iter()
                .map(|&d| if d < 0 { self.batch } else { d })
                .collect();
            let n = shape.iter().product::<i64>() as usize;
            let values = (0..n)
                .map(|_| -2.0 + 4.0 * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
                .collect();
            (*name, Data::F64(shape, values))
        });
        let floats: Vec<_> = floats.collect();
        let ints = self
            .fed_ints
            .iter()
            .map(|(name, v)| (*name, Data::I64(vec![v.len() as i64], v.clone())));
        floats.into_iter().chain(ints).collect()
    }

    /// Checks every element of every `wrt` input.
    fn check(self, wrt: &[&str]) {
        GradCheck {
            max_elements: usize::MAX,
            ..GradCheck::f64(self.model(), self.data(), wrt)
        }
        .run();
    }

    /// The backward graph's op types, for checks of what a rule emits.
    fn backward_ops(&self, wrt: &str) -> Vec<String> {
        let model = with_sum_loss(self.model());
        let (grad_model, _) =
            ldam_onnx::autodiff::gradient_model(&model, "loss", &[wrt.to_string()])
                .unwrap_or_else(|e| panic!("gradient graph: {e}"));
        let forward = model.graph.as_ref().unwrap().node.len();
        grad_model.graph.unwrap().node[forward..]
            .iter()
            .map(|n| n.op_type().to_string())
            .collect()
    }

    fn gradient_error(&self, wrt: &str) -> String {
        match ldam_onnx::autodiff::gradient_model(
            &with_sum_loss(self.model()),
            "loss",
            &[wrt.to_string()],
        ) {
            Ok(_) => panic!("expected the gradient to be refused"),
            Err(e) => e.to_string(),
        }
    }
}

/// `loss = ReduceSum(y)` appended to a model.
fn with_sum_loss(mut model: ModelProto) -> ModelProto {
    let graph = model.graph.as_mut().unwrap();
    graph.node.push(node(
        "ReduceSum",
        &["y"],
        &["loss"],
        vec![attr_int("keepdims", 0)],
    ));
    graph.output = vec![value_info("loss", DOUBLE, &[])];
    model
}

fn one(op: &str, inputs: &[&str], attrs: Vec<ldam_onnx::onnx::AttributeProto>) -> Vec<NodeProto> {
    vec![node(op, inputs, &["y"], attrs)]
}

/// A Constant node holding a float64 scalar.
fn double_constant(output: &str, value: f64) -> NodeProto {
    let tensor = TensorProto {
        dims: vec![],
        data_type: Some(DOUBLE),
        raw_data: Some(value.to_le_bytes().to_vec().into()),
        ..Default::default()
    };
    node(
        "Constant",
        &[],
        &[output],
        vec![ldam_onnx::autodiff::tensor_attr("value", tensor)],
    )
}

fn int_constant(output: &str, values: &[i64]) -> NodeProto {
    let tensor = i64_tensor("", &[values.len() as i64], values);
    node(
        "Constant",
        &[],
        &[output],
        vec![ldam_onnx::autodiff::tensor_attr("value", tensor)],
    )
}

const END: i64 = i64::MAX;

// ---------------------------------------------------------------------------
// Reshapes and transposes.

#[test]
fn flatten_gradient_reshapes_back_for_axis_1_and_2() {
    for axis in [1, 2] {
        Case::new(one("Flatten", &["x"], vec![attr_int("axis", axis)]))
            .input("x", &[-1, 3, 2, 2])
            .check(&["x"]);
    }
}

#[test]
fn reshape_gradient_undoes_a_shape_with_zero_and_minus_one() {
    Case::new(one("Reshape", &["x", "shape"], vec![]))
        .input("x", &[-1, 3, 4])
        .ints("shape", &[0, -1, 2])
        .check(&["x"]);
}

#[test]
fn squeeze_and_unsqueeze_with_axes_input_reshape_back() {
    Case::new(one("Squeeze", &["x", "axes"], vec![]))
        .input("x", &[-1, 1, 4, 1])
        .ints("axes", &[1, -1])
        .opset(13)
        .check(&["x"]);
    Case::new(one("Unsqueeze", &["x", "axes"], vec![]))
        .input("x", &[-1, 4])
        .ints("axes", &[1, -1])
        .check(&["x"]);
}

#[test]
fn transpose_gradient_applies_the_inverse_permutation() {
    Case::new(one(
        "Transpose",
        &["x"],
        vec![attr_ints("perm", &[0, 2, 3, 1])],
    ))
    .input("x", &[-1, 2, 3, 4])
    .check(&["x"]);
    // No perm: axes reversed.
    Case::new(one("Transpose", &["x"], vec![]))
        .input("x", &[-1, 2, 3])
        .batch(2)
        .check(&["x"]);
}

#[test]
fn expand_gradient_sums_over_the_broadcast_axes() {
    // [1, C] -> [N, C], the target shape read from another input at run time.
    let nodes = vec![
        node("Shape", &["z"], &["target"], vec![]),
        node("Expand", &["x", "target"], &["y"], vec![]),
    ];
    Case::new(nodes.clone())
        .input("x", &[1, 4])
        .input("z", &[-1, 4])
        .check(&["x"]);
    // [C, 1] -> [N, C, 3]: a new leading axis and a size-1 axis.
    Case::new(one("Expand", &["x", "target"], vec![]))
        .input("x", &[2, 1])
        .ints("target", &[3, 2, 3])
        .check(&["x"]);
}

#[test]
fn tile_gradient_sums_the_copies() {
    // [N, 2, 3] tiled 1 x 3 x 2: the batch symbolic, two axes repeated.
    Case::new(one("Tile", &["x", "repeats"], vec![]))
        .input("x", &[-1, 2, 3])
        .ints("repeats", &[1, 3, 2])
        .batch(2)
        .check(&["x"]);
    // Repeats computed at run time, as XCiT's positional encoding repeats over
    // the batch: here [1, N, 1] from Shape(z).
    let nodes = vec![
        node("Shape", &["z"], &["z_shape"], vec![]),
        node(
            "Concat",
            &["one", "z_shape", "one"],
            &["repeats"],
            vec![attr_int("axis", 0)],
        ),
        node("Tile", &["x", "repeats"], &["y"], vec![]),
    ];
    Case::new(nodes)
        .input("x", &[2, 3, 4])
        .input("z", &[-1])
        .ints("one", &[1])
        .batch(3)
        .check(&["x"]);
    // The batch itself repeated (a static input): every copy adds.
    Case::new(one("Tile", &["x", "repeats"], vec![]))
        .input("x", &[2, 3])
        .ints("repeats", &[2, 1])
        .check(&["x"]);
}

/// ConvIT's `select_scatter` as the default exporter writes it: data with some
/// elements replaced (their gradient zeroed) or increased, the updates
/// gathered back; a negative index counts from the end.
#[test]
fn scatter_elements_gradient_reaches_data_and_updates() {
    // Row 0 replaces columns 0, 2, 4; row 1 columns 1, 3 and the last (-1).
    let indices = [0, 2, 4, 1, 3, -1];
    for reduction in ["none", "add"] {
        Case::new(one(
            "ScatterElements",
            &["data", "indices", "updates"],
            vec![attr_int("axis", 1), attr_string("reduction", reduction)],
        ))
        .input("data", &[2, 5])
        .input("updates", &[2, 3])
        .int_tensor("indices", &[2, 3], &indices)
        .check(&["data", "updates"]);
    }
}

/// GatherND as the default exporter writes attention-bias lookups (TinyViT,
/// LeViT): index pairs into the first two axes, one pair repeated, one
/// negative; whole rows (k = 1) too.
#[test]
fn gather_nd_gradient_adds_repeated_index_tuples() {
    Case::new(one("GatherND", &["data", "indices"], vec![]))
        .input("data", &[3, 4, 2])
        .int_tensor("indices", &[2, 2, 2], &[0, 1, 2, 3, 0, 1, -1, 0])
        .check(&["data"]);
    Case::new(one("GatherND", &["data", "indices"], vec![]))
        .input("data", &[3, 4])
        .int_tensor("indices", &[4, 1], &[2, 0, 2, 1])
        .check(&["data"]);
}

/// GatherElements reads data at the indices, some of them twice: their
/// gradients add up.
#[test]
fn gather_elements_gradient_adds_repeated_indices() {
    Case::new(one(
        "GatherElements",
        &["data", "indices"],
        vec![attr_int("axis", 0)],
    ))
    .input("data", &[3, 4])
    .int_tensor("indices", &[2, 4], &[0, 1, 2, 0, 0, 1, -1, 0])
    .check(&["data"]);
}

// ---------------------------------------------------------------------------
// Concat and Split.

#[test]
fn concat_gradient_slices_three_inputs_apart_along_channels() {
    Case::new(one("Concat", &["a", "b", "c"], vec![attr_int("axis", 1)]))
        .input("a", &[-1, 2, 3])
        .input("b", &[-1, 1, 3])
        .input("c", &[-1, 4, 3])
        .check(&["a", "b", "c"]);
}

#[test]
fn concat_gradient_along_the_symbolic_batch_axis_uses_run_time_offsets() {
    Case::new(one("Concat", &["a", "b", "c"], vec![attr_int("axis", 0)]))
        .input("a", &[-1, 3])
        .input("b", &[2, 3])
        .input("c", &[-1, 3])
        .check(&["a", "b", "c"]);
    // Only the last input trainable: its offset still counts the others; axis -1.
    Case::new(one("Concat", &["a", "b"], vec![attr_int("axis", -1)]))
        .input("a", &[-1, 2])
        .input("b", &[-1, 3])
        .batch(2)
        .check(&["b"]);
}

/// Split into a, b, c; the loss sees `Concat(c, a)` only, so b gets zeros.
fn split_nodes(
    split_inputs: &[&str],
    attrs: Vec<ldam_onnx::onnx::AttributeProto>,
) -> Vec<NodeProto> {
    vec![
        node("Split", split_inputs, &["a", "b", "c"], attrs),
        node("Concat", &["c", "a"], &["y"], vec![attr_int("axis", 1)]),
    ]
}

#[test]
fn split_gradient_concatenates_with_zeros_for_an_unused_output() {
    // Explicit sizes as the opset-13 input.
    Case::new(split_nodes(&["x", "sizes"], vec![attr_int("axis", 1)]))
        .input("x", &[-1, 6, 2])
        .ints("sizes", &[1, 2, 3])
        .check(&["x"]);
    // No sizes: equal parts (opset 17), then opset 18's num_outputs with a short last part.
    Case::new(split_nodes(&["x"], vec![attr_int("axis", 1)]))
        .input("x", &[-1, 6])
        .check(&["x"]);
    Case::new(split_nodes(
        &["x"],
        vec![attr_int("axis", -1), attr_int("num_outputs", 3)],
    ))
    .input("x", &[-1, 7])
    .opset(18)
    .batch(2)
    .check(&["x"]);
}

// ---------------------------------------------------------------------------
// Slice.

/// A Slice of `x` with constant starts, ends, axes and steps.
fn slice_case(dims: &[i64], starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]) -> Case {
    Case::new(one(
        "Slice",
        &["x", "starts", "ends", "axes", "steps"],
        vec![],
    ))
    .input("x", dims)
    .ints("starts", starts)
    .ints("ends", ends)
    .ints("axes", axes)
    .ints("steps", steps)
}

fn assert_placed_without_scatter(case: &Case) {
    let ops = case.backward_ops("x");
    assert!(!ops.contains(&"ScatterElements".to_string()), "{ops:?}");
}

#[test]
fn strided_slice_gradient_pads_into_blocks_on_two_axes() {
    // x[:, :, ::2, ::2], odd and even spatial sizes (the odd one overruns and is cropped).
    let case = slice_case(&[-1, 2, 5, 4], &[0, 0], &[END, END], &[2, 3], &[2, 2]);
    assert_placed_without_scatter(&case);
    case.check(&["x"]);
    // Stride 3 from an offset, on a negative axis.
    let case = slice_case(&[-1, 8], &[1], &[-1], &[-1], &[3]).batch(2);
    assert_placed_without_scatter(&case);
    case.check(&["x"]);
}

#[test]
fn strided_slice_gradient_with_offsets_steps_2_and_3_and_a_unit_step_axis() {
    // x[:, 1:, 2:7:3, 1:4]: offsets that are not multiples of the step.
    let case = slice_case(
        &[-1, 3, 8, 5],
        &[1, 2, 1],
        &[END, 7, 4],
        &[1, 2, 3],
        &[2, 3, 1],
    )
    .batch(2);
    assert_placed_without_scatter(&case);
    case.check(&["x"]);
}

#[test]
fn strided_slice_gradient_before_a_symbolic_axis() {
    // x[1::2] on [4, N]: the merged shape infers N with -1.
    let case = slice_case(&[5, -1], &[1], &[END], &[0], &[2]);
    assert_placed_without_scatter(&case);
    case.check(&["x"]);
    // Two symbolic axes after the strided one cannot both be inferred: scatter.
    let case = slice_case(&[5, -1, -1], &[0], &[END], &[0], &[2]).batch(2);
    assert!(case
        .backward_ops("x")
        .contains(&"ScatterElements".to_string()));
    case.check(&["x"]);
}

#[test]
fn negative_step_slice_gradient_reverses_then_pads() {
    // x[:, ::-1]: start -1, end "before the beginning"; reversing g is all it takes.
    let case = slice_case(&[-1, 5], &[-1], &[i64::MIN], &[1], &[-1]);
    assert!(!case.backward_ops("x").contains(&"Pad".to_string()));
    assert_placed_without_scatter(&case);
    case.check(&["x"]);
    // x[:, 4:0:-2, 1:]: a clamped start past the end, mixed with a unit step.
    let case = slice_case(&[-1, 6, 3], &[40, 1], &[0, END], &[1, 2], &[-2, 1]);
    assert_placed_without_scatter(&case);
    case.check(&["x"]);
    // x[:, ::-3, 5:1:-2] on odd sizes: reversed strided selections on two axes.
    let case = slice_case(&[-1, 7, 6], &[-1, 5], &[i64::MIN, 1], &[1, 2], &[-3, -2]).batch(2);
    assert_placed_without_scatter(&case);
    case.check(&["x"]);
}

#[test]
fn empty_strided_selection_gradient_is_all_zeros() {
    // x[:, 5:2:2] selects nothing; concatenated with x so that the loss is not empty.
    let nodes = vec![
        node(
            "Slice",
            &["x", "starts", "ends", "axes", "steps"],
            &["empty"],
            vec![],
        ),
        node("Concat", &["empty", "x"], &["y"], vec![attr_int("axis", 1)]),
    ];
    Case::new(nodes)
        .input("x", &[-1, 6])
        .ints("starts", &[5])
        .ints("ends", &[2])
        .ints("axes", &[1])
        .ints("steps", &[2])
        .check(&["x"]);
}

#[test]
fn unit_step_slice_gradient_pads_back_with_negative_and_large_bounds() {
    let case = Case::new(one("Slice", &["x", "starts", "ends", "axes"], vec![]))
        .input("x", &[-1, 5, 4])
        .ints("starts", &[1, -3])
        .ints("ends", &[100, -1])
        .ints("axes", &[1, 2]);
    let ops = case.backward_ops("x");
    assert!(
        ops.contains(&"Pad".to_string()) && !ops.contains(&"ScatterElements".to_string()),
        "{ops:?}"
    );
    case.check(&["x"]);
    // Default axes and steps, an empty selection on one axis (x[:, 3:1], shape
    // [N, 0]), concatenated with x so that the loss is not empty.
    let nodes = vec![
        node("Slice", &["x", "starts", "ends"], &["empty"], vec![]),
        node("Concat", &["empty", "x"], &["y"], vec![attr_int("axis", 1)]),
    ];
    let case = Case::new(nodes)
        .input("x", &[-1, 4])
        .ints("starts", &[0, 3])
        .ints("ends", &[END, 1]);
    assert!(case.backward_ops("x").contains(&"Pad".to_string()));
    case.check(&["x"]);
}

#[test]
fn slice_of_the_batch_axis_or_with_run_time_bounds_scatters() {
    // The sliced dimension is symbolic: no static pads, so positions are scattered.
    Case::new(one("Slice", &["x", "starts", "ends", "axes"], vec![]))
        .input("x", &[-1, 3])
        .ints("starts", &[1])
        .ints("ends", &[END])
        .ints("axes", &[0])
        .check(&["x"]);
    // Bounds and steps only known at run time.
    Case::new(one(
        "Slice",
        &["x", "starts", "ends", "axes", "steps"],
        vec![],
    ))
    .input("x", &[-1, 7])
    .fed_ints("starts", &[5])
    .fed_ints("ends", &[0])
    .ints("axes", &[1])
    .fed_ints("steps", &[-2])
    .check(&["x"]);
}

// ---------------------------------------------------------------------------
// Pad.

#[test]
fn pad_gradient_crops_with_pads_computed_at_run_time() {
    // pads = Concat([0, 1, 0, 2], [0, 1, 1, 0]): begins then ends of [N, C, H, W].
    let nodes = vec![
        node(
            "Concat",
            &["begins", "ends"],
            &["pads"],
            vec![attr_int("axis", 0)],
        ),
        node("Pad", &["x", "pads", "value"], &["y"], vec![]),
    ];
    Case::new(nodes)
        .input("x", &[-1, 2, 3, 2])
        .input("value", &[])
        .ints("begins", &[0, 1, 0, 2])
        .ints("ends", &[0, 1, 1, 0])
        .check(&["x", "value"]);
    // Pads fed as a graph input: unknown until the step runs.
    Case::new(one("Pad", &["x", "pads"], vec![]))
        .input("x", &[-1, 2, 3])
        .fed_ints("pads", &[0, 1, 2, 0, 0, 1])
        .batch(2)
        .check(&["x"]);
}

#[test]
fn pad_gradient_for_zero_channels_negative_pads_and_axes() {
    // Zeros on both sides of the channels, ResNet's option-A shortcut.
    Case::new(one(
        "Pad",
        &["x", "pads"],
        vec![attr_string("mode", "constant")],
    ))
    .input("x", &[-1, 2, 3, 3])
    .ints("pads", &[0, 2, 0, 0, 0, 2, 0, 0])
    .check(&["x"]);
    // Negative pads crop: the cropped elements get zero gradient.
    Case::new(one("Pad", &["x", "pads"], vec![]))
        .input("x", &[-1, 3, 5])
        .ints("pads", &[0, -1, 1, 0, 2, -2])
        .check(&["x"]);
    // Opset 18: pads for the listed axes only.
    Case::new(one("Pad", &["x", "pads", "", "axes"], vec![]))
        .input("x", &[-1, 3, 4])
        .ints("pads", &[1, 0, 2, 3])
        .ints("axes", &[-1, 1])
        .opset(18)
        .check(&["x"]);
}

#[test]
fn pad_in_reflect_mode_is_refused_naming_the_mode() {
    let error = Case::new(one(
        "Pad",
        &["x", "pads"],
        vec![attr_string("mode", "reflect")],
    ))
    .input("x", &[-1, 4])
    .ints("pads", &[0, 1, 0, 1])
    .gradient_error("x");
    assert!(
        error.contains("mode 'reflect'") && error.contains("Pad"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------
// Gather.

#[test]
fn gather_gradient_adds_repeated_rows_on_axis_0() {
    // 2-D indices with repeats: y is [2, 2, 3].
    let mut case = Case::new(one("Gather", &["x", "indices"], vec![]));
    case.constants
        .push(i64_tensor("indices", &[2, 2], &[0, 2, 0, 0]));
    case.input("x", &[-1, 3]).check(&["x"]);
}

#[test]
fn gather_gradient_on_axis_1_with_negative_and_scalar_indices() {
    // 3 and -1 name the same column: its gradient is the sum of both.
    Case::new(one("Gather", &["x", "indices"], vec![attr_int("axis", 1)]))
        .input("x", &[-1, 4, 2])
        .ints("indices", &[3, -1, 0])
        .check(&["x"]);
    // A scalar index removes the axis.
    Case::new(one("Gather", &["x", "index"], vec![attr_int("axis", 1)]))
        .input("x", &[-1, 4])
        .scalar_int("index", 2)
        .batch(2)
        .check(&["x"]);
}

// ---------------------------------------------------------------------------
// A composite: ResNet-32's option-A shortcut as the TorchScript exporter writes it.

/// `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))`: two
/// strided Slices, then pads computed in the graph from PyTorch's last-axis-first
/// pairs (Concat with zeros, Reshape to pairs, reverse, Transpose, flatten, Cast).
fn option_a_shortcut(extra_channels: i64) -> Vec<NodeProto> {
    vec![
        int_constant("zero", &[0]),
        int_constant("end", &[END]),
        int_constant("axis_h", &[2]),
        int_constant("axis_w", &[3]),
        int_constant("two", &[2]),
        node(
            "Slice",
            &["x", "zero", "end", "axis_h", "two"],
            &["rows"],
            vec![],
        ),
        node(
            "Slice",
            &["rows", "zero", "end", "axis_w", "two"],
            &["sub"],
            vec![],
        ),
        int_constant("torch_pads", &[0, 0, 0, 0, extra_channels, extra_channels]),
        node(
            "ConstantOfShape",
            &["two"],
            &["missing"],
            vec![ldam_onnx::autodiff::tensor_attr(
                "value",
                i64_tensor("", &[1], &[0]),
            )],
        ),
        node(
            "Concat",
            &["torch_pads", "missing"],
            &["all_pads"],
            vec![attr_int("axis", 0)],
        ),
        int_constant("pairs", &[-1, 2]),
        node("Reshape", &["all_pads", "pairs"], &["paired"], vec![]),
        int_constant("rev_start", &[-1]),
        int_constant("rev_end", &[i64::MIN]),
        int_constant("rev_step", &[-1]),
        node(
            "Slice",
            &["paired", "rev_start", "rev_end", "zero", "rev_step"],
            &["reversed"],
            vec![],
        ),
        node(
            "Transpose",
            &["reversed"],
            &["onnx_order"],
            vec![attr_ints("perm", &[1, 0])],
        ),
        int_constant("flat", &[-1]),
        node("Reshape", &["onnx_order", "flat"], &["pads_any"], vec![]),
        node(
            "Cast",
            &["pads_any"],
            &["pads"],
            vec![attr_int("to", INT64 as i64)],
        ),
        double_constant("fill", 0.0),
        node(
            "Pad",
            &["sub", "pads", "fill"],
            &["y"],
            vec![attr_string("mode", "constant")],
        ),
    ]
}

#[test]
fn resnet_option_a_shortcut_gradient_matches_end_to_end() {
    Case::new(option_a_shortcut(2))
        .input("x", &[-1, 4, 6, 5])
        .batch(2)
        .check(&["x"]);
}
