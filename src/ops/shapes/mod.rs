//! Static element types and shapes of graph values, inferred once over a graph so
//! that later passes (the loss patch, autodiff) can emit shape-correct nodes.
//!
//! Inference never fails: a value whose type cannot be derived stays unknown, and a
//! dimension that cannot be derived is `Dim::Unknown`. Besides types, integer
//! tensors whose contents are known at compile time are tracked element by element,
//! because shape arithmetic (`Shape -> Gather -> Concat -> Reshape`, computed `Pad`
//! amounts) decides the shapes downstream. An element may be `Dim::Symbolic("N")`:
//! the value equals the batch size, which lets `view(x.size(0), -1)` keep its `N`.
//!
//! The engine knows no op: each op's rule (its `shape` facet, and its `fold`
//! facet for integer contents) is found in [`crate::ops::registry`] and lives in
//! the op family's `shape.rs`.

pub mod dims;
pub(crate) mod prelude;
pub mod values;

pub use values::{Ctx, FoldRule, ShapeRule, ValueShapes};

use crate::onnx::tensor::f32_values;
use crate::onnx::types::{tensor_type, Dim, TensorType};
use crate::onnx::{GraphProto, NodeProto, TensorProto};
use crate::ops::registry;
use crate::ops::shapes::dims::{constant_floats, int_values, static_count};
use crate::ops::shapes::values::{refine, MAX_TRACKED_ELEMENTS};
use std::collections::HashSet;

impl ValueShapes {
    /// Seeds from the declared types (inputs, `value_info`, outputs) and the
    /// initializers, then walks the nodes in order. `opset` selects the operator
    /// forms (e.g. `Reduce*` axes as attribute or input).
    pub fn infer(graph: &GraphProto, opset: i64) -> ValueShapes {
        let mut shapes = ValueShapes::default();
        shapes.seed(graph);
        for node in &graph.node {
            shapes.visit(node, opset);
        }
        shapes
    }

    fn seed(&mut self, graph: &GraphProto) {
        for info in graph
            .value_info
            .iter()
            .chain(&graph.output)
            .chain(&graph.input)
        {
            if let Some(ty) = tensor_type(info) {
                let merged = refine(Some(ty), self.types.get(info.name()));
                if let Some(ty) = merged {
                    self.types.insert(info.name().to_string(), ty);
                }
            }
        }
        // An initializer that is also a graph input is only a default: a feed may
        // replace it, so its contents are not constants.
        let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
        for init in &graph.initializer {
            let ty = TensorType {
                elem_type: init.data_type(),
                shape: Some(init.dims.iter().map(|&d| Dim::Fixed(d)).collect()),
            };
            if inputs.contains(init.name()) {
                self.types.entry(init.name().to_string()).or_insert(ty);
                continue;
            }
            self.types.insert(init.name().to_string(), ty);
            self.record_contents(init.name(), init);
        }
    }

    fn visit(&mut self, node: &NodeProto, opset: i64) {
        // Other domains have their own semantics: only declared types are kept.
        if !matches!(node.domain(), "" | "ai.onnx") {
            return;
        }
        let ctx = Ctx {
            node,
            shapes: self,
            opset,
        };
        let op = registry::for_node(node, opset);
        let inferred = op
            .and_then(|op| op.shape)
            .map_or_else(Vec::new, |rule| rule.apply(&ctx));
        let values = op.and_then(|op| op.fold).and_then(|fold| fold(&ctx));
        let first = node.output.first().filter(|o| !o.is_empty());
        for (i, output) in node.output.iter().enumerate() {
            if output.is_empty() {
                continue;
            }
            let ty = inferred.get(i).cloned().flatten();
            if let Some(ty) = refine(ty, self.types.get(output)) {
                self.types.insert(output.clone(), ty);
            }
        }
        let Some(first) = first else { return };
        if let Some(values) = values {
            self.set_values(first, values);
        }
        let floats = match node.op_type() {
            "Constant" => constant_floats(node),
            "Concat" => self.concatenated_floats(node),
            _ => None,
        };
        if let Some(floats) = floats {
            self.floats.insert(first.clone(), floats);
        }
    }

    /// A 1-D Concat of known float constants: the legacy exporter writes Resize's
    /// scales as `Concat(Constant [1, 1], Constant [2, 2])`.
    fn concatenated_floats(&self, node: &NodeProto) -> Option<Vec<f64>> {
        let mut joined = Vec::new();
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if self.rank(input) != Some(1) {
                return None;
            }
            joined.extend_from_slice(self.floats.get(input)?);
        }
        (joined.len() <= MAX_TRACKED_ELEMENTS).then_some(joined)
    }

    fn record_contents(&mut self, name: &str, tensor: &TensorProto) {
        let dims: Vec<Dim> = tensor.dims.iter().map(|&d| Dim::Fixed(d)).collect();
        if static_count(&dims).is_none_or(|c| c > MAX_TRACKED_ELEMENTS) {
            return;
        }
        if let Some(ints) = int_values(tensor) {
            self.set_values(name, ints.into_iter().map(Dim::Fixed).collect());
        } else if let Some(floats) = f32_values(tensor) {
            self.floats.insert(
                name.to_string(),
                floats.into_iter().map(f64::from).collect(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::builder::{attr_int, attr_ints, attr_string};
    use crate::onnx::tensor::{f32_tensor, i64_tensor};
    use crate::onnx::types::value_info;
    use crate::onnx::AttributeProto;
    use crate::ops::movement::shape::{slice_range, SliceAxis};
    use crate::ops::shapes::prelude::*;

    fn n() -> Dim {
        Dim::Symbolic("N".into())
    }
    fn fixed(dims: &[i64]) -> Vec<Dim> {
        dims.iter().map(|&d| Dim::Fixed(d)).collect()
    }
    fn with_batch(rest: &[i64]) -> Vec<Dim> {
        std::iter::once(n()).chain(fixed(rest)).collect()
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        }
    }

    /// A graph over float input `x` of the given dims.
    fn graph(x: &[Dim], nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> GraphProto {
        GraphProto {
            input: vec![value_info("x", FLOAT, x)],
            node: nodes,
            initializer: initializers,
            ..Default::default()
        }
    }

    fn infer(x: &[Dim], nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> ValueShapes {
        ValueShapes::infer(&graph(x, nodes, initializers), 20)
    }

    fn weights(name: &str, dims: &[i64]) -> TensorProto {
        let len = dims.iter().product::<i64>() as usize;
        f32_tensor(name, dims, &vec![0.5; len])
    }

    #[test]
    fn conv_applies_pads_strides_dilations_and_groups() {
        let shapes = infer(
            &with_batch(&[4, 11, 13]),
            vec![
                node(
                    "Conv",
                    &["x", "w"],
                    &["y"],
                    vec![
                        attr_ints("pads", &[1, 2, 0, 1]),
                        attr_ints("strides", &[2, 1]),
                        attr_ints("dilations", &[1, 2]),
                    ],
                ),
                // Depthwise-style: 4 groups, weight [8, 4/4, 3, 3].
                node(
                    "Conv",
                    &["x", "g"],
                    &["z"],
                    vec![
                        attr_int("group", 4),
                        attr_string("auto_pad", "SAME_UPPER"),
                        attr_ints("strides", &[2, 3]),
                    ],
                ),
            ],
            vec![weights("w", &[6, 4, 3, 3]), weights("g", &[8, 1, 3, 3])],
        );
        // H: (11 + 1 + 0 - 3) / 2 + 1 = 5; W: (13 + 2 + 1 - 5) / 1 + 1 = 12.
        assert_eq!(shapes.shape("y"), Some(&with_batch(&[6, 5, 12])[..]));
        // SAME keeps ceil(in / stride): ceil(11 / 2) = 6, ceil(13 / 3) = 5.
        assert_eq!(shapes.shape("z"), Some(&with_batch(&[8, 6, 5])[..]));
        assert_eq!(shapes.elem_type("y"), Some(FLOAT));
    }

    #[test]
    fn max_pool_ceil_mode_drops_a_last_window_starting_in_the_padding() {
        let pool = |pads: &[i64], out: &str| {
            node(
                "MaxPool",
                &["x"],
                &[out, &format!("{out}_indices")],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                    attr_ints("pads", pads),
                    attr_int("ceil_mode", 1),
                ],
            )
        };
        let shapes = infer(
            &with_batch(&[2, 11, 7]),
            vec![pool(&[1, 1, 1, 1], "padded"), pool(&[0, 0, 0, 0], "plain")],
            vec![],
        );
        // H = 11 padded to 13: ceil(11 / 2) + 1 = 7 windows, but the 7th would start
        // at 12 >= 11 + 1, inside the end padding, so 6. W = 7 + 2: 5 -> 4.
        assert_eq!(shapes.shape("padded"), Some(&with_batch(&[2, 6, 4])[..]));
        // Without padding: ceil((11 - 2) / 2) + 1 = 6, ceil((7 - 2) / 2) + 1 = 4.
        assert_eq!(shapes.shape("plain"), Some(&with_batch(&[2, 6, 4])[..]));
        assert_eq!(shapes.elem_type("plain_indices"), Some(INT64));
        assert_eq!(shapes.shape("plain_indices"), shapes.shape("plain"));
    }

    #[test]
    fn reshape_copies_zeros_and_solves_minus_one_symbolically() {
        let shapes = infer(
            &with_batch(&[4, 6, 6]),
            vec![
                node("Reshape", &["x", "keep_batch"], &["a"], vec![]),
                node(
                    "Reshape",
                    &["x", "batch_last"],
                    &["b"],
                    vec![attr_int("allowzero", 1)],
                ),
                node(
                    "Reshape",
                    &["x", "fixed_zero"],
                    &["c"],
                    vec![attr_int("allowzero", 1)],
                ),
                node("Reshape", &["x", "runtime"], &["d"], vec![]),
            ],
            vec![
                i64_tensor("keep_batch", &[3], &[0, -1, 9]),
                i64_tensor("batch_last", &[3], &[4, 36, -1]),
                i64_tensor("fixed_zero", &[2], &[0, 5]),
                // A graph input: its contents may be replaced, so they are not constant.
                i64_tensor("runtime", &[2], &[0, -1]),
            ],
        );
        assert_eq!(shapes.shape("a"), Some(&with_batch(&[16, 9])[..]));
        assert_eq!(
            shapes.shape("b"),
            Some(&[Dim::Fixed(4), Dim::Fixed(36), n()][..])
        );
        assert_eq!(shapes.shape("c"), Some(&fixed(&[0, 5])[..]));
        assert_eq!(shapes.shape("d"), Some(&with_batch(&[144])[..]));

        let mut g = graph(
            &with_batch(&[4]),
            vec![node("Reshape", &["x", "runtime"], &["d"], vec![])],
            vec![i64_tensor("runtime", &[2], &[0, -1])],
        );
        g.input.push(value_info("runtime", INT64, &fixed(&[2])));
        let shapes = ValueShapes::infer(&g, 20);
        assert_eq!(shapes.const_ints("runtime"), None);
        assert_eq!(shapes.shape("d"), Some(&[Dim::Unknown, Dim::Unknown][..]));
    }

    #[test]
    fn slice_handles_negative_steps_and_int64_max_bounds() {
        let shapes = infer(
            &with_batch(&[10, 7]),
            vec![
                node(
                    "Slice",
                    &["x", "starts", "ends", "axes", "steps"],
                    &["y"],
                    vec![],
                ),
                node(
                    "Slice",
                    &["x", "whole_start", "whole_end", "batch_axis", "minus_one"],
                    &["reversed"],
                    vec![],
                ),
                node(
                    "Slice",
                    &["x", "starts", "ends", "axes", "steps"],
                    &["y2"],
                    vec![],
                ),
            ],
            vec![
                // axis 1: from the last, backwards by 3 to the front: 9, 6, 3, 0 -> 4;
                // axis 2: from 2 to INT64_MAX by 2: 2, 4, 6 -> 3.
                i64_tensor("starts", &[2], &[-1, 2]),
                i64_tensor("ends", &[2], &[-i64::MAX, i64::MAX]),
                i64_tensor("axes", &[2], &[1, -1]),
                i64_tensor("steps", &[2], &[-3, 2]),
                i64_tensor("whole_start", &[1], &[-1]),
                i64_tensor("whole_end", &[1], &[i64::MIN]),
                i64_tensor("batch_axis", &[1], &[0]),
                i64_tensor("minus_one", &[1], &[-1]),
            ],
        );
        assert_eq!(shapes.shape("y"), Some(&with_batch(&[4, 3])[..]));
        // The batch axis reversed whole keeps its symbol.
        assert_eq!(shapes.shape("reversed"), Some(&with_batch(&[10, 7])[..]));
    }

    #[test]
    fn slice_range_follows_the_onnx_clamping_rules() {
        let axis = |start, end, step| SliceAxis {
            axis: 0,
            start,
            end,
            step,
        };
        assert_eq!(slice_range(5, &axis(0, i64::MAX, 1)), (0, 5));
        assert_eq!(slice_range(5, &axis(-1, i64::MIN, -1)), (4, 5));
        assert_eq!(slice_range(5, &axis(10, -10, -2)), (4, 3));
        assert_eq!(slice_range(5, &axis(3, 1, 1)), (3, 0));
        assert_eq!(slice_range(5, &axis(-2, -1, 1)), (3, 1));
        assert_eq!(slice_range(0, &axis(-1, i64::MIN, -1)), (0, 0));
    }

    #[test]
    fn split_by_num_outputs_makes_the_last_chunk_smaller() {
        let split = |attrs, outputs: &[&str]| node("Split", &["x"], outputs, attrs);
        let shapes = infer(
            &with_batch(&[3, 13]),
            vec![
                split(
                    vec![attr_int("axis", -1), attr_int("num_outputs", 3)],
                    &["a", "b", "c"],
                ),
                node(
                    "Split",
                    &["x", "sizes"],
                    &["d", "e"],
                    vec![attr_int("axis", 1)],
                ),
                split(vec![], &["whole"]),
            ],
            vec![i64_tensor("sizes", &[2], &[1, 2])],
        );
        assert_eq!(shapes.shape("a"), Some(&with_batch(&[3, 5])[..]));
        assert_eq!(shapes.shape("b"), Some(&with_batch(&[3, 5])[..]));
        assert_eq!(shapes.shape("c"), Some(&with_batch(&[3, 3])[..]));
        assert_eq!(shapes.shape("d"), Some(&with_batch(&[1, 13])[..]));
        assert_eq!(shapes.shape("e"), Some(&with_batch(&[2, 13])[..]));
        // One output along the symbolic axis keeps it.
        assert_eq!(shapes.shape("whole"), Some(&with_batch(&[3, 13])[..]));
    }

    #[test]
    fn gemm_honours_trans_flags() {
        let shapes = infer(
            &with_batch(&[64]),
            vec![
                node(
                    "Gemm",
                    &["x", "w", "b"],
                    &["y"],
                    vec![attr_int("transB", 1)],
                ),
                node("Transpose", &["x"], &["xt"], vec![]),
                node("Gemm", &["xt", "v"], &["z"], vec![attr_int("transA", 1)]),
            ],
            vec![
                weights("w", &[10, 64]),
                weights("b", &[10]),
                weights("v", &[64, 7]),
            ],
        );
        assert_eq!(shapes.shape("y"), Some(&with_batch(&[10])[..]));
        assert_eq!(shapes.shape("xt"), Some(&[Dim::Fixed(64), n()][..]));
        assert_eq!(shapes.shape("z"), Some(&with_batch(&[7])[..]));
    }

    #[test]
    fn broadcasting_keeps_the_symbolic_batch() {
        let shapes = infer(
            &with_batch(&[1, 5]),
            vec![
                node("Add", &["x", "row"], &["a"], vec![]),
                node("Mul", &["x", "table"], &["b"], vec![]),
                node("Less", &["x", "other"], &["c"], vec![]),
                node("Where", &["c", "x", "row"], &["d"], vec![]),
            ],
            vec![
                weights("row", &[5]),
                weights("table", &[4, 1, 5]),
                weights("other", &[7, 1]),
            ],
        );
        assert_eq!(shapes.shape("a"), Some(&with_batch(&[1, 5])[..]));
        // N against a fixed 4 must be 4 (or broadcasting fails at run time).
        assert_eq!(shapes.shape("b"), Some(&fixed(&[4, 1, 5])[..]));
        assert_eq!(shapes.shape("c"), Some(&with_batch(&[7, 5])[..]));
        assert_eq!(shapes.elem_type("c"), Some(BOOL));
        assert_eq!(shapes.elem_type("d"), Some(FLOAT));
        assert_eq!(
            broadcast_dim(&n(), &Dim::Symbolic("M".into())),
            Dim::Unknown
        );
        assert_eq!(broadcast_dim(&Dim::Fixed(2), &Dim::Fixed(3)), Dim::Unknown);
        assert_eq!(broadcast_dim(&Dim::Unknown, &Dim::Fixed(1)), Dim::Unknown);
    }

    /// `x.view(x.size(0), -1)` as TorchScript exports it.
    #[test]
    fn const_ints_flow_through_shape_gather_unsqueeze_concat() {
        let shapes = infer(
            &with_batch(&[64, 1, 1]),
            vec![
                node("Shape", &["x"], &["shape"], vec![]),
                node(
                    "Constant",
                    &[],
                    &["zero"],
                    vec![tensor_attr("value", i64_tensor("", &[], &[0]))],
                ),
                node(
                    "Gather",
                    &["shape", "zero"],
                    &["batch"],
                    vec![attr_int("axis", 0)],
                ),
                node("Unsqueeze", &["batch", "axes"], &["batch1"], vec![]),
                node(
                    "Concat",
                    &["batch1", "minus_one"],
                    &["target"],
                    vec![attr_int("axis", 0)],
                ),
                node("Reshape", &["x", "target"], &["flat"], vec![]),
                // The same on a fully static tensor gives plain constants.
                node("Shape", &["w"], &["w_shape"], vec![attr_int("start", 1)]),
                node("Gather", &["w_shape", "zero"], &["w1"], vec![]),
                node("Unsqueeze", &["w1", "axes"], &["w1u"], vec![]),
                node("Mul", &["w1u", "minus_one"], &["neg"], vec![]),
                node(
                    "Concat",
                    &["w_shape", "neg"],
                    &["joined"],
                    vec![attr_int("axis", 0)],
                ),
                node(
                    "Cast",
                    &["joined"],
                    &["joined32"],
                    vec![attr_int("to", DataType::Int32 as i64)],
                ),
                node("Squeeze", &["neg", "axes"], &["neg_scalar"], vec![]),
                node("Sub", &["neg_scalar", "w1"], &["diff"], vec![]),
                node("Size", &["w"], &["size"], vec![]),
            ],
            vec![
                i64_tensor("axes", &[1], &[0]),
                i64_tensor("minus_one", &[1], &[-1]),
                weights("w", &[2, 3, 4]),
            ],
        );
        assert_eq!(
            shapes.const_ints("shape"),
            None,
            "the batch size is not a constant"
        );
        assert_eq!(shapes.shape("shape"), Some(&fixed(&[4])[..]));
        assert_eq!(shapes.shape("batch"), Some(&[][..]));
        assert_eq!(shapes.shape("target"), Some(&fixed(&[2])[..]));
        assert_eq!(shapes.shape("flat"), Some(&with_batch(&[64])[..]));
        assert_eq!(shapes.const_ints("w_shape"), Some(&[3, 4][..]));
        assert_eq!(shapes.const_ints("w1"), Some(&[3][..]));
        assert_eq!(shapes.const_ints("w1u"), Some(&[3][..]));
        assert_eq!(shapes.const_ints("neg"), Some(&[-3][..]));
        assert_eq!(shapes.const_ints("joined"), Some(&[3, 4, -3][..]));
        assert_eq!(shapes.const_ints("joined32"), Some(&[3, 4, -3][..]));
        assert_eq!(shapes.elem_type("joined32"), Some(DataType::Int32 as i32));
        assert_eq!(shapes.const_ints("neg_scalar"), Some(&[-3][..]));
        assert_eq!(shapes.const_ints("diff"), Some(&[-6][..]));
        assert_eq!(shapes.const_ints("size"), Some(&[24][..]));
    }

    /// HRNet's upsampling from the legacy exporter: Resize's scales are a Concat of
    /// two float constants, and the output's spatial size follows from them.
    #[test]
    fn resize_scales_concatenated_from_constants_are_folded() {
        let shapes = infer(
            &with_batch(&[8, 5, 7]),
            vec![
                node(
                    "Concat",
                    &["keep", "double"],
                    &["scales"],
                    vec![attr_int("axis", 0)],
                ),
                node("Resize", &["x", "", "scales"], &["up"], vec![]),
                node(
                    "Concat",
                    &["keep", "x_scale"],
                    &["unknown_scales"],
                    vec![attr_int("axis", 0)],
                ),
                node("Resize", &["x", "", "unknown_scales"], &["unknown"], vec![]),
            ],
            vec![
                f32_tensor("keep", &[2], &[1.0, 1.0]),
                f32_tensor("double", &[2], &[2.0, 3.0]),
            ],
        );
        assert_eq!(shapes.shape("up"), Some(&with_batch(&[8, 10, 21])[..]));
        // One operand not known: nothing is claimed about the scales.
        assert_eq!(shapes.shape("unknown"), None);
    }

    /// The option-A shortcut of the CIFAR ResNet: pads computed from constants via
    /// ConstantOfShape, Concat, Reshape, a reversing Slice, Transpose and Cast.
    #[test]
    fn computed_pad_amounts_are_folded() {
        let shapes = infer(
            &with_batch(&[16, 16, 16]),
            vec![
                node(
                    "ConstantOfShape",
                    &["two"],
                    &["zeros"],
                    vec![tensor_attr("value", i64_tensor("", &[1], &[0]))],
                ),
                node(
                    "Concat",
                    &["channel_pads", "zeros"],
                    &["pads8"],
                    vec![attr_int("axis", 0)],
                ),
                node("Reshape", &["pads8", "pairs"], &["pairs4x2"], vec![]),
                node(
                    "Slice",
                    &["pairs4x2", "start", "end", "axis0", "step"],
                    &["reversed"],
                    vec![],
                ),
                node(
                    "Transpose",
                    &["reversed"],
                    &["by_side"],
                    vec![attr_ints("perm", &[1, 0])],
                ),
                node("Reshape", &["by_side", "flat"], &["pads"], vec![]),
                node(
                    "Cast",
                    &["pads"],
                    &["pads_i64"],
                    vec![attr_int("to", INT64 as i64)],
                ),
                node("Pad", &["x", "pads_i64"], &["y"], vec![]),
            ],
            vec![
                i64_tensor("two", &[1], &[2]),
                // F.pad order: (W begin, W end, H begin, H end, C begin, C end).
                i64_tensor("channel_pads", &[6], &[0, 0, 0, 0, 8, 8]),
                i64_tensor("pairs", &[2], &[-1, 2]),
                i64_tensor("start", &[1], &[-1]),
                i64_tensor("end", &[1], &[-i64::MAX]),
                i64_tensor("axis0", &[1], &[0]),
                i64_tensor("step", &[1], &[-1]),
                i64_tensor("flat", &[1], &[-1]),
            ],
        );
        // Pairs (begin, end) from the last axis, [0,0],[0,0],[8,8],[0,0] (W, H, C, N),
        // reversed to N, C, H, W and transposed to all begins, then all ends.
        assert_eq!(
            shapes.const_ints("pads"),
            Some(&[0, 8, 0, 0, 0, 8, 0, 0][..])
        );
        assert_eq!(shapes.shape("y"), Some(&with_batch(&[32, 16, 16])[..]));
    }

    #[test]
    fn reduce_axes_come_from_the_attribute_or_input_by_opset() {
        let nodes = |axes_as_input: bool| {
            let (inputs, attrs): (&[&str], Vec<AttributeProto>) = if axes_as_input {
                (&["x", "axes"], vec![])
            } else {
                (&["x"], vec![attr_ints("axes", &[2, 3])])
            };
            let mut keep0 = attrs.clone();
            keep0.push(attr_int("keepdims", 0));
            vec![
                node("ReduceMean", inputs, &["mean"], keep0),
                node("ReduceMax", inputs, &["max"], attrs),
            ]
        };
        let init = || vec![i64_tensor("axes", &[2], &[2, 3])];
        for (opset, as_input) in [(13, false), (17, false), (18, true), (20, true)] {
            let shapes = ValueShapes::infer(
                &graph(&with_batch(&[8, 4, 4]), nodes(as_input), init()),
                opset,
            );
            assert_eq!(
                shapes.shape("mean"),
                Some(&with_batch(&[8])[..]),
                "opset {opset}"
            );
            assert_eq!(
                shapes.shape("max"),
                Some(&with_batch(&[8, 1, 1])[..]),
                "opset {opset}"
            );
        }
        // ReduceSum took the input form at 13; empty axes with noop is the identity.
        let g = graph(
            &with_batch(&[8]),
            vec![
                node(
                    "ReduceSum",
                    &["x", "axes"],
                    &["sum"],
                    vec![attr_int("keepdims", 0)],
                ),
                node(
                    "ReduceSum",
                    &["x"],
                    &["noop"],
                    vec![attr_int("noop_with_empty_axes", 1)],
                ),
                node("ReduceSum", &["x"], &["all"], vec![attr_int("keepdims", 0)]),
            ],
            vec![i64_tensor("axes", &[1], &[-1])],
        );
        let shapes = ValueShapes::infer(&g, 13);
        assert_eq!(shapes.shape("sum"), Some(&[n()][..]));
        assert_eq!(shapes.shape("noop"), Some(&with_batch(&[8])[..]));
        assert_eq!(shapes.shape("all"), Some(&[][..]));
    }

    #[test]
    fn losses_batch_norm_and_layer_norm_outputs() {
        let shapes = infer(
            &with_batch(&[10]),
            vec![
                node(
                    "SoftmaxCrossEntropyLoss",
                    &["x", "labels"],
                    &["loss", "log_prob"],
                    vec![],
                ),
                node(
                    "SoftmaxCrossEntropyLoss",
                    &["x", "labels"],
                    &["per_example"],
                    vec![attr_string("reduction", "none")],
                ),
                node(
                    "NegativeLogLikelihoodLoss",
                    &["x", "labels"],
                    &["nll"],
                    vec![attr_string("reduction", "sum")],
                ),
                node(
                    "BatchNormalization",
                    &["x", "s", "s", "s", "s"],
                    &["bn", "mean", "var"],
                    vec![attr_int("training_mode", 1)],
                ),
                node(
                    "LayerNormalization",
                    &["x", "s"],
                    &["ln", "ln_mean", "ln_inv_std"],
                    vec![],
                ),
                node("Dropout", &["x"], &["dropped", "mask"], vec![]),
            ],
            vec![weights("s", &[10])],
        );
        assert_eq!(shapes.shape("loss"), Some(&[][..]));
        assert_eq!(shapes.shape("log_prob"), Some(&with_batch(&[10])[..]));
        assert_eq!(shapes.shape("per_example"), Some(&[n()][..]));
        assert_eq!(shapes.shape("nll"), Some(&[][..]));
        assert_eq!(shapes.shape("bn"), Some(&with_batch(&[10])[..]));
        assert_eq!(shapes.shape("mean"), Some(&fixed(&[10])[..]));
        assert_eq!(shapes.shape("ln_mean"), Some(&with_batch(&[1])[..]));
        assert_eq!(shapes.elem_type("mask"), Some(BOOL));
    }

    #[test]
    fn constants_ranges_and_one_hot() {
        let shapes = infer(
            &with_batch(&[3]),
            vec![
                node(
                    "Constant",
                    &[],
                    &["ints"],
                    vec![AttributeProto {
                        name: Some("value_ints".into()),
                        ints: vec![4, 5],
                        ..Default::default()
                    }],
                ),
                node(
                    "Constant",
                    &[],
                    &["one"],
                    vec![AttributeProto {
                        name: Some("value_float".into()),
                        f: Some(1.0),
                        ..Default::default()
                    }],
                ),
                node("ConstantOfShape", &["ints"], &["filled"], vec![]),
                node("Range", &["ten", "zero", "minus_three"], &["down"], vec![]),
                node(
                    "Range",
                    &["half", "three", "half"],
                    &["float_range"],
                    vec![],
                ),
                node(
                    "OneHot",
                    &["labels", "depth", "values"],
                    &["onehot"],
                    vec![attr_int("axis", -1)],
                ),
                node("NonZero", &["x"], &["nz"], vec![]),
                node("Custom", &["x"], &["mystery"], vec![]),
            ],
            vec![
                i64_tensor("ten", &[], &[10]),
                i64_tensor("zero", &[], &[0]),
                i64_tensor("minus_three", &[], &[-3]),
                f32_tensor("half", &[], &[0.5]),
                f32_tensor("three", &[], &[3.0]),
                i64_tensor("labels", &[2, 3], &[0, 1, 2, 3, 4, 0]),
                i64_tensor("depth", &[1], &[5]),
                f32_tensor("values", &[2], &[0.0, 1.0]),
            ],
        );
        assert_eq!(shapes.const_ints("ints"), Some(&[4, 5][..]));
        assert_eq!(shapes.shape("one"), Some(&[][..]));
        assert_eq!(shapes.shape("filled"), Some(&fixed(&[4, 5])[..]));
        assert_eq!(shapes.elem_type("filled"), Some(FLOAT));
        assert_eq!(shapes.const_ints("down"), Some(&[10, 7, 4, 1][..]));
        assert_eq!(shapes.shape("float_range"), Some(&fixed(&[5])[..]));
        assert_eq!(shapes.shape("onehot"), Some(&fixed(&[2, 3, 5])[..]));
        assert_eq!(shapes.shape("nz"), Some(&[Dim::Fixed(2), Dim::Unknown][..]));
        assert_eq!(shapes.get("mystery"), None, "an unknown op stays unknown");
    }

    #[test]
    fn declared_types_fill_gaps_and_insert_records_new_values() {
        let mut g = graph(
            &with_batch(&[4]),
            vec![
                node("Custom", &["x"], &["y"], vec![]),
                node("Relu", &["y"], &["z"], vec![]),
            ],
            vec![],
        );
        g.value_info.push(value_info("y", FLOAT, &with_batch(&[2])));
        let mut shapes = ValueShapes::infer(&g, 20);
        assert_eq!(shapes.shape("z"), Some(&with_batch(&[2])[..]));
        shapes.insert(
            "new",
            TensorType {
                elem_type: INT64,
                shape: Some(fixed(&[3])),
            },
        );
        assert_eq!(shapes.rank("new"), Some(1));
        assert_eq!(shapes.elem_type("new"), Some(INT64));
        assert_eq!(shapes.rank("absent"), None);
    }

    #[test]
    fn narrow_integer_initializers_are_read() {
        let int32 = TensorProto {
            name: Some("i32".into()),
            dims: vec![3],
            data_type: Some(DataType::Int32 as i32),
            raw_data: Some(
                [-2i32, 0, 7]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
            ),
            ..Default::default()
        };
        let int8 = TensorProto {
            name: Some("i8".into()),
            dims: vec![2],
            data_type: Some(DataType::Int8 as i32),
            int32_data: vec![-5, 5],
            ..Default::default()
        };
        let shapes = infer(&with_batch(&[1]), vec![], vec![int32, int8]);
        assert_eq!(shapes.const_ints("i32"), Some(&[-2, 0, 7][..]));
        assert_eq!(shapes.const_ints("i8"), Some(&[-5, 5][..]));
    }

    fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            t: Some(t),
            ..Default::default()
        }
    }
}
