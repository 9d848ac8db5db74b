//! Static shape inference checked against ONNX Runtime: every node output of every
//! exported model (original and LDAM-patched) and of hand-built graphs of tricky
//! ops is exposed as a graph output, run at two batch sizes, and its actual shape
//! and element type compared with the inferred ones. The batch sizes differ from
//! each other and from every other axis of the input (the hand-built graphs' input
//! is [N, 3, 11, 13]), so a rule that mixes up two axes cannot pass by chance.

mod common;

use common::{model_from_graph, Data, Rng};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::builder::{attr_float, attr_int, attr_ints, attr_string};
use ldam_onnx::onnx::io::load;
use ldam_onnx::onnx::proto::attribute_proto::AttributeType;
use ldam_onnx::onnx::tensor::{f32_tensor, i64_tensor, is_float_type, BOOL, FLOAT, INT64};
use ldam_onnx::onnx::types::{tensor_type, value_info, value_info_any_shape, Dim};
use ldam_onnx::onnx::{
    default_opset, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto,
};
use ldam_onnx::ops::shapes::ValueShapes;
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};
use ort::value::TensorElementType;
use std::collections::{BTreeSet, HashMap};

const COUNTS: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];
/// The batch sizes every graph runs at: neither is the size of another input axis
/// (1 or 3 channels, 28 or 32 pixels in the bundled models; 3, 11, 13 in the zoo).
const BATCHES: [i64; 2] = [2, 5];

/// What ONNX Runtime produced for one value.
struct Actual {
    shape: Vec<i64>,
    elem_type: Option<i32>,
}

/// A random batch for the model's first input, batch dimension set to `batch`,
/// which must differ from every fixed dimension of the input.
fn input_batch(model: &ModelProto, seed: u64, batch: i64) -> Data {
    let graph = model.graph.as_ref().expect("model has a graph");
    let input = tensor_type(&graph.input[0]).expect("input is a tensor");
    let shape: Vec<i64> = input
        .shape
        .expect("input shape is known")
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => {
                assert_ne!(*v, batch, "batch {batch} equals an input axis");
                *v
            }
            _ => batch,
        })
        .collect();
    let len = shape.iter().product::<i64>() as usize;
    Data::F32(shape, Rng::new(seed).floats(len, -1.0, 1.0))
}

fn labels_and_epoch(batch: i64) -> [(&'static str, Data); 2] {
    let labels = (0..batch).map(|i| (7 * i + 9) % 10).collect();
    [
        ("labels", Data::I64(vec![batch], labels)),
        ("epoch", Data::I64(vec![], vec![200])),
    ]
}

fn opset(model: &ModelProto) -> i64 {
    default_opset(model).expect("model imports the default opset")
}

/// Every non-empty node output of the graph, in order.
fn node_outputs(graph: &GraphProto) -> Vec<String> {
    graph
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .filter(|o| !o.is_empty())
        .cloned()
        .collect()
}

/// The model with its `value_info` removed: inference must then stand on its own.
fn without_value_info(model: &ModelProto) -> ModelProto {
    let mut bare = model.clone();
    bare.graph
        .as_mut()
        .expect("model has a graph")
        .value_info
        .clear();
    bare
}

/// Runs `model` with every node output exposed (declared with unknown dims of the
/// inferred rank and the inferred element type) and returns what ONNX Runtime made.
fn run_exposed(
    model: &ModelProto,
    shapes: &ValueShapes,
    feeds: &[(&str, Data)],
) -> HashMap<String, Actual> {
    let mut probe = without_value_info(model);
    let graph = probe.graph.as_mut().expect("model has a graph");
    let declared: BTreeSet<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    for name in node_outputs(graph) {
        if declared.contains(&name) {
            continue;
        }
        let elem = shapes.elem_type(&name).unwrap_or(FLOAT);
        graph.output.push(match shapes.rank(&name) {
            Some(rank) => value_info(&name, elem, &vec![Dim::Unknown; rank]),
            None => value_info_any_shape(&name, elem),
        });
    }
    let bytes = ldam_onnx::onnx::io::to_bytes(&probe);
    let mut session = ldam_onnx::runtime::session_from_bytes(&bytes)
        .expect("ONNX Runtime accepts the probe model");
    let inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = feeds
        .iter()
        .map(|(name, data)| {
            let value: ort::session::SessionInputValue<'_> = match data {
                Data::F32(shape, v) => ort::value::Tensor::from_array((shape.clone(), v.clone()))
                    .expect("float tensor")
                    .into(),
                Data::I64(shape, v) => ort::value::Tensor::from_array((shape.clone(), v.clone()))
                    .expect("int64 tensor")
                    .into(),
                other => panic!("unsupported feed {other:?}"),
            };
            (name.to_string(), value)
        })
        .collect();
    let names: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let outputs = session
        .run(inputs)
        .expect("ONNX Runtime runs the probe model");
    names
        .into_iter()
        .map(|name| {
            let dtype = outputs[name.as_str()].dtype();
            let shape = dtype
                .tensor_shape()
                .expect("every output is a tensor")
                .to_vec();
            let elem_type = dtype.tensor_type().and_then(onnx_elem_type);
            (name, Actual { shape, elem_type })
        })
        .collect()
}

fn onnx_elem_type(t: TensorElementType) -> Option<i32> {
    match t {
        TensorElementType::Float32 => Some(FLOAT),
        TensorElementType::Int64 => Some(INT64),
        TensorElementType::Bool => Some(BOOL),
        TensorElementType::Int32 => Some(6),
        _ => None,
    }
}

/// Compares every inferred shape with the actual one of a run at `batch` (a
/// symbolic dim must be the batch, `N`); returns the values whose shape is not
/// fully inferred.
fn check_against_runtime(
    what: &str,
    shapes: &ValueShapes,
    actual: &HashMap<String, Actual>,
    batch: i64,
) -> Vec<String> {
    let mut incomplete = Vec::new();
    for (name, got) in actual {
        let Some(ty) = shapes.get(name) else {
            incomplete.push(format!("{name}: no type"));
            continue;
        };
        if let (Some(elem), Some(expected)) = (shapes.elem_type(name), got.elem_type) {
            assert_eq!(elem, expected, "{what}: element type of '{name}'");
        }
        let Some(dims) = &ty.shape else {
            incomplete.push(format!("{name}: rank unknown (actual {:?})", got.shape));
            continue;
        };
        assert_eq!(
            dims.len(),
            got.shape.len(),
            "{what}: rank of '{name}' inferred {}, actual {:?}",
            ty.describe(),
            got.shape
        );
        for (i, (dim, &size)) in dims.iter().zip(&got.shape).enumerate() {
            match dim {
                Dim::Fixed(v) => assert_eq!(
                    *v,
                    size,
                    "{what}: '{name}' dim {i}: inferred {}, actual {:?} at batch {batch}",
                    ty.describe(),
                    got.shape
                ),
                Dim::Symbolic(s) => {
                    assert_eq!(s, "N", "{what}: '{name}' has an unexpected symbol");
                    assert_eq!(
                        size, batch,
                        "{what}: '{name}' dim {i} is N, actual {:?} at batch {batch}",
                        got.shape
                    );
                }
                Dim::Unknown => {}
            }
        }
        if dims.contains(&Dim::Unknown) || shapes.elem_type(name).is_none() {
            incomplete.push(format!(
                "{name}: {} (actual {:?})",
                ty.describe(),
                got.shape
            ));
        }
    }
    incomplete.sort();
    incomplete
}

/// The values left (partly) unknown at any batch size, one line per value (the
/// first batch's description), sorted by name.
fn union_by_name(lists: Vec<Vec<String>>) -> Vec<String> {
    let mut by_name: std::collections::BTreeMap<String, String> = Default::default();
    for line in lists.into_iter().flatten() {
        let name = line.split(": ").next().unwrap_or_default().to_string();
        by_name.entry(name).or_insert(line);
    }
    by_name.into_values().collect()
}

/// Checks both inference with the graph's own `value_info` and without it, at
/// every batch size; `feeds` gives the inputs for a batch size.
fn check_model(
    what: &str,
    model: &ModelProto,
    feeds: impl Fn(i64) -> Vec<(&'static str, Data)>,
) -> Vec<String> {
    let graph = model.graph.as_ref().expect("model has a graph");
    let shapes = ValueShapes::infer(graph, opset(model));
    let bare = without_value_info(model);
    let bare_shapes = ValueShapes::infer(bare.graph.as_ref().expect("graph"), opset(model));
    let mut lists = Vec::new();
    for batch in BATCHES {
        let actual = run_exposed(model, &shapes, &feeds(batch));
        let incomplete = check_against_runtime(what, &shapes, &actual, batch);
        eprintln!(
            "{what}: {} values compared with ONNX Runtime at batch {batch}",
            actual.len()
        );
        assert!(
            incomplete.is_empty(),
            "{what}: shapes not fully inferred:\n{}",
            incomplete.join("\n")
        );
        lists.push(check_against_runtime(
            &format!("{what} (no value_info)"),
            &bare_shapes,
            &actual,
            batch,
        ));
    }
    union_by_name(lists)
}

/// Float values without a full shape (the coverage the autodiff needs).
fn float_gaps(incomplete: &[String], model: &ModelProto) -> Vec<String> {
    let graph = model.graph.as_ref().expect("graph");
    let shapes = ValueShapes::infer(graph, opset(model));
    incomplete
        .iter()
        .filter(|line| {
            let name = line.split(':').next().unwrap_or_default();
            shapes.elem_type(name).is_none_or(is_float_type)
        })
        .cloned()
        .collect()
}

#[test]
fn every_value_of_every_model_has_its_runtime_shape() {
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let model = load(&path).unwrap().model;
        let incomplete = check_model(&name, &model, |batch| {
            vec![("input", input_batch(&model, 7, batch))]
        });
        assert!(
            float_gaps(&incomplete, &model).is_empty(),
            "{name}: {incomplete:#?}"
        );
        assert!(
            incomplete.is_empty(),
            "{name}: values without a full shape: {incomplete:#?}"
        );
    }
}

#[test]
fn every_value_of_every_patched_model_has_its_runtime_shape() {
    let options = PatchOptions {
        batchnorm: Default::default(),
        config: LossConfig::reference(COUNTS.to_vec()),
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    for path in common::model_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let original = load(&path).unwrap().model;
        let (patched, _) = patch(&original, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        let incomplete = check_model(&format!("patched {name}"), &patched, |batch| {
            let [labels, epoch] = labels_and_epoch(batch);
            vec![("input", input_batch(&original, 8, batch)), labels, epoch]
        });
        assert!(
            incomplete.is_empty(),
            "patched {name}: values without a full shape: {incomplete:#?}"
        );
        let shapes = ValueShapes::infer(patched.graph.as_ref().unwrap(), opset(&patched));
        assert_eq!(
            shapes.shape("loss"),
            Some(&[][..]),
            "{name}: the mean loss is a scalar"
        );
        assert_eq!(
            shapes.shape("logits"),
            Some(&[Dim::Symbolic("N".into()), Dim::Fixed(10)][..]),
            "{name}"
        );
    }
}

/// Builds a graph of many ops, each output named after its node.
struct Zoo {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    count: usize,
}

impl Zoo {
    fn new() -> Self {
        Zoo {
            nodes: Vec::new(),
            initializers: Vec::new(),
            count: 0,
        }
    }

    /// One node with `outputs` outputs named `<label>`, `<label>.1`, ...
    fn ops(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        label: &str,
        outputs: usize,
    ) -> Vec<String> {
        self.count += 1;
        let base = format!("{label}#{}", self.count);
        let names: Vec<String> = (0..outputs)
            .map(|i| {
                if i == 0 {
                    base.clone()
                } else {
                    format!("{base}.{i}")
                }
            })
            .collect();
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("node_{base}")),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: names.clone(),
            attribute: attrs,
            ..Default::default()
        });
        names
    }

    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, label: &str) -> String {
        self.ops(op, inputs, attrs, label, 1).remove(0)
    }

    fn ints(&mut self, dims: &[i64], values: &[i64]) -> String {
        self.count += 1;
        let name = format!("ints#{}", self.count);
        self.initializers.push(i64_tensor(&name, dims, values));
        name
    }

    fn floats(&mut self, dims: &[i64], seed: u64) -> String {
        self.count += 1;
        let name = format!("floats#{}", self.count);
        let len = dims.iter().product::<i64>() as usize;
        self.initializers.push(f32_tensor(
            &name,
            dims,
            &Rng::new(seed).floats(len, -1.0, 1.0),
        ));
        name
    }

    /// `inputs` plus `values` as one more input (`as_input`) or as attribute `name`:
    /// the two forms an operand takes in different opsets.
    fn operand(
        &mut self,
        inputs: &[&str],
        name: &str,
        values: &[i64],
        as_input: bool,
    ) -> (Vec<String>, Vec<AttributeProto>) {
        let mut inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        if !as_input {
            return (inputs, vec![attr_ints(name, values)]);
        }
        inputs.push(self.ints(&[values.len() as i64], values));
        (inputs, vec![])
    }

    fn model(self, input: &str, dims: &[Dim], opset: i64) -> ModelProto {
        let graph = GraphProto {
            name: Some("zoo".into()),
            input: vec![value_info(input, FLOAT, dims)],
            output: vec![],
            node: self.nodes,
            initializer: self.initializers,
            ..Default::default()
        };
        model_from_graph(graph, opset)
    }
}

fn attr_tensor(name: &str, tensor: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(tensor),
        ..Default::default()
    }
}

fn n_dim() -> Dim {
    Dim::Symbolic("N".into())
}

/// The zoo's input axes after the batch: channels, height, width.
const ZOO_CHW: [i64; 3] = [3, 11, 13];

/// Runs the zoo at every batch size and checks every value; returns the values
/// left (partly) unknown at any of them.
fn check_zoo(what: &str, zoo: Zoo, opset: i64) -> Vec<String> {
    let [c, h, w] = ZOO_CHW;
    for (i, a) in [BATCHES[0], BATCHES[1], c, h, w].iter().enumerate() {
        for b in &[BATCHES[0], BATCHES[1], c, h, w][i + 1..] {
            assert_ne!(a, b, "batch sizes and input axes must all differ");
        }
    }
    let dims = [n_dim(), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)];
    let mut model = zoo.model("x", &dims, opset);
    let shapes = ValueShapes::infer(model.graph.as_ref().unwrap(), opset);
    // A graph needs at least one output; the probe adds the rest.
    let first = model.graph.as_ref().unwrap().node[0].output[0].clone();
    let elem = shapes.elem_type(&first).unwrap_or(FLOAT);
    model
        .graph
        .as_mut()
        .unwrap()
        .output
        .push(value_info_any_shape(&first, elem));
    let mut lists = Vec::new();
    for batch in BATCHES {
        let len = (batch * c * h * w) as usize;
        let x = Data::F32(vec![batch, c, h, w], Rng::new(11).floats(len, -1.0, 1.0));
        let actual = run_exposed(&model, &shapes, &[("x", x)]);
        eprintln!(
            "{what}: {} values compared with ONNX Runtime at batch {batch}",
            actual.len()
        );
        lists.push(check_against_runtime(what, &shapes, &actual, batch));
    }
    union_by_name(lists)
}

/// Convolutions, pools and their windows (pads, strides, dilations, groups,
/// auto_pad, ceil_mode), at opset 20.
#[test]
fn windowed_ops_match_onnx_runtime() {
    let mut z = Zoo::new();
    let w = z.floats(&[6, 3, 3, 3], 1);
    z.op(
        "Conv",
        &["x", &w],
        vec![
            attr_ints("pads", &[1, 2, 0, 1]),
            attr_ints("strides", &[2, 1]),
            attr_ints("dilations", &[1, 2]),
        ],
        "conv_pads_strides_dilations",
    );
    let grouped = z.floats(&[6, 1, 3, 3], 2);
    z.op(
        "Conv",
        &["x", &grouped],
        vec![
            attr_int("group", 3),
            attr_string("auto_pad", "SAME_UPPER"),
            attr_ints("strides", &[2, 3]),
        ],
        "conv_group_same_upper",
    );
    z.op(
        "Conv",
        &["x", &w],
        vec![
            attr_string("auto_pad", "SAME_LOWER"),
            attr_ints("strides", &[3, 2]),
        ],
        "conv_same_lower",
    );
    let w5 = z.floats(&[4, 3, 5, 2], 3);
    let b = z.floats(&[4], 4);
    z.op(
        "Conv",
        &["x", &w5, &b],
        vec![
            attr_string("auto_pad", "VALID"),
            attr_ints("strides", &[2, 2]),
        ],
        "conv_valid_bias",
    );
    let wt = z.floats(&[3, 2, 3, 3], 5);
    z.op(
        "ConvTranspose",
        &["x", &wt],
        vec![
            attr_ints("strides", &[2, 3]),
            attr_ints("pads", &[1, 0, 1, 1]),
            attr_ints("output_padding", &[1, 2]),
        ],
        "convt_output_padding",
    );
    z.op(
        "ConvTranspose",
        &["x", &wt],
        vec![attr_int("group", 3), attr_ints("strides", &[2, 2])],
        "convt_group",
    );
    z.op(
        "ConvTranspose",
        &["x", &wt],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("output_shape", &[22, 26]),
        ],
        "convt_output_shape",
    );
    z.ops(
        "MaxPool",
        &["x"],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("ceil_mode", 1),
        ],
        "maxpool_ceil_last_window_dropped",
        2,
    );
    z.ops(
        "MaxPool",
        &["x"],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_int("ceil_mode", 1),
        ],
        "maxpool_ceil",
        2,
    );
    z.op(
        "MaxPool",
        &["x"],
        vec![
            attr_ints("kernel_shape", &[3, 2]),
            attr_ints("dilations", &[2, 1]),
            attr_ints("pads", &[2, 0, 1, 1]),
        ],
        "maxpool_dilated",
    );
    z.op(
        "MaxPool",
        &["x"],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 4]),
            attr_string("auto_pad", "SAME_LOWER"),
        ],
        "maxpool_same_lower",
    );
    z.op(
        "AveragePool",
        &["x"],
        vec![
            attr_ints("kernel_shape", &[3, 2]),
            attr_ints("strides", &[2, 3]),
            attr_string("auto_pad", "SAME_UPPER"),
        ],
        "avgpool_same_upper",
    );
    z.op(
        "AveragePool",
        &["x"],
        vec![
            attr_ints("kernel_shape", &[4, 4]),
            attr_ints("strides", &[3, 3]),
            attr_string("auto_pad", "VALID"),
            attr_int("ceil_mode", 1),
        ],
        "avgpool_valid_ceil",
    );
    z.op("GlobalAveragePool", &["x"], vec![], "gap");
    z.op("GlobalMaxPool", &["x"], vec![], "gmp");
    let scale = z.floats(&[3], 6);
    let bias = z.floats(&[3], 7);
    z.ops(
        "BatchNormalization",
        &["x", &scale, &bias, &scale, &bias],
        vec![attr_int("training_mode", 1)],
        "batchnorm_training",
        3,
    );
    let gamma = z.floats(&[11, 13], 8);
    z.ops(
        "LayerNormalization",
        &["x", &gamma],
        vec![attr_int("axis", -2)],
        "layernorm",
        3,
    );
    let incomplete = check_zoo("windowed ops", z, 20);
    assert!(incomplete.is_empty(), "{incomplete:#?}");
}

/// Shape arithmetic and data movement at opset 20: Reshape 0/-1, Slice with
/// negative steps and INT64_MAX bounds, Split num_outputs, Pad with axes, const
/// propagation through Shape/Gather/Unsqueeze/Concat, and more.
#[test]
fn shape_ops_match_onnx_runtime() {
    let mut z = Zoo::new();
    // view(x.size(0), 3, H * W) from Shape -> Gather -> Mul -> Unsqueeze -> Concat.
    let shape = z.op("Shape", &["x"], vec![], "shape");
    let (i0, i2, i3) = (z.ints(&[], &[0]), z.ints(&[], &[2]), z.ints(&[], &[3]));
    let batch = z.op("Gather", &[&shape, &i0], vec![], "batch");
    let h = z.op("Gather", &[&shape, &i2], vec![], "h");
    let w = z.op("Gather", &[&shape, &i3], vec![], "w");
    let hw = z.op("Mul", &[&h, &w], vec![], "hw");
    let axes0 = z.ints(&[1], &[0]);
    let batch1 = z.op("Unsqueeze", &[&batch, &axes0], vec![], "batch1");
    let hw1 = z.op("Unsqueeze", &[&hw, &axes0], vec![], "hw1");
    let three = z.ints(&[1], &[3]);
    let target = z.op(
        "Concat",
        &[&batch1, &three, &hw1],
        vec![attr_int("axis", 0)],
        "target",
    );
    let flat = z.op("Reshape", &["x", &target], vec![], "reshape_computed");
    let zero_minus_one = z.ints(&[3], &[0, -1, 13]);
    z.op("Reshape", &["x", &zero_minus_one], vec![], "reshape_0_-1");
    let minus_one = z.ints(&[2], &[-1, 429]);
    z.op(
        "Reshape",
        &["x", &minus_one],
        vec![attr_int("allowzero", 1)],
        "reshape_-1_is_N",
    );
    // -1 is 11N here: a product with a symbol has no Dim, so it stays unknown.
    let minus_one = z.ints(&[2], &[-1, 39]);
    z.op("Reshape", &["x", &minus_one], vec![], "reshape_-1_is_11N");
    z.op("Flatten", &["x"], vec![], "flatten");
    z.op(
        "Flatten",
        &["x"],
        vec![attr_int("axis", -1)],
        "flatten_last",
    );
    z.op("Transpose", &["x"], vec![], "transpose_default");
    z.op(
        "Transpose",
        &["x"],
        vec![attr_ints("perm", &[0, 2, 3, 1])],
        "transpose_perm",
    );
    // Slices: reversed with a stride, INT64_MAX end, negative start.
    let (s, e, a, st) = (
        z.ints(&[2], &[-1, 1]),
        z.ints(&[2], &[-i64::MAX, i64::MAX]),
        z.ints(&[2], &[3, 2]),
        z.ints(&[2], &[-2, 3]),
    );
    z.op(
        "Slice",
        &["x", &s, &e, &a, &st],
        vec![],
        "slice_reverse_and_stride",
    );
    let (s, e, a) = (
        z.ints(&[1], &[-4]),
        z.ints(&[1], &[i64::MAX]),
        z.ints(&[1], &[-1]),
    );
    z.op("Slice", &["x", &s, &e, &a], vec![], "slice_tail");
    let (s, e, a, st) = (
        z.ints(&[1], &[-1]),
        z.ints(&[1], &[i64::MIN]),
        z.ints(&[1], &[0]),
        z.ints(&[1], &[-1]),
    );
    z.op(
        "Slice",
        &["x", &s, &e, &a, &st],
        vec![],
        "slice_batch_reversed",
    );
    let (s, e) = (z.ints(&[1], &[1]), z.ints(&[1], &[i64::MAX]));
    z.op("Slice", &[&shape, &s, &e], vec![], "slice_of_shape");
    z.ops(
        "Split",
        &["x"],
        vec![attr_int("axis", 3), attr_int("num_outputs", 3)],
        "split_num_outputs",
        3,
    );
    let sizes = z.ints(&[2], &[1, 2]);
    z.ops(
        "Split",
        &["x", &sizes],
        vec![attr_int("axis", 1)],
        "split_sizes",
        2,
    );
    z.ops(
        "Split",
        &["x"],
        vec![attr_int("axis", -2), attr_int("num_outputs", 1)],
        "split_one",
        1,
    );
    let pads = z.ints(&[8], &[0, 0, 1, 2, 0, 1, 0, 3]);
    z.op("Pad", &["x", &pads], vec![], "pad");
    let (pads, pad_axes) = (z.ints(&[4], &[2, 0, 1, 4]), z.ints(&[2], &[-1, 1]));
    z.op("Pad", &["x", &pads, "", &pad_axes], vec![], "pad_axes");
    let idx = z.ints(&[2, 2], &[0, 2, 1, -1]);
    z.op(
        "Gather",
        &["x", &idx],
        vec![attr_int("axis", 1)],
        "gather_2d_indices",
    );
    z.op(
        "Gather",
        &["x", &i2],
        vec![attr_int("axis", -1)],
        "gather_scalar_index",
    );
    let (small, to) = (z.floats(&[3, 1, 1], 1), z.ints(&[4], &[2, 1, 4, 5]));
    z.op("Expand", &[&small, &to], vec![], "expand");
    let to = z.ints(&[2], &[11, 1]);
    z.op("Expand", &["x", &to], vec![], "expand_keep");
    let repeats = z.ints(&[4], &[1, 2, 1, 3]);
    z.op("Tile", &["x", &repeats], vec![], "tile");
    z.op(
        "Shape",
        &["x"],
        vec![attr_int("start", 1), attr_int("end", -1)],
        "shape_window",
    );
    z.op("Size", &["x"], vec![], "size");
    z.op("ConstantOfShape", &[&shape], vec![], "constant_of_shape_x");
    let dims = z.ints(&[2], &[2, 5]);
    z.op(
        "ConstantOfShape",
        &[&dims],
        vec![attr_tensor("value", i64_tensor("", &[1], &[7]))],
        "constant_of_shape_int",
    );
    let (ten, minus3, minus4, nine, one) = (
        z.ints(&[], &[10]),
        z.ints(&[], &[-3]),
        z.ints(&[], &[-4]),
        z.ints(&[], &[9]),
        z.ints(&[], &[1]),
    );
    z.op("Range", &[&ten, &minus3, &minus4], vec![], "range_int_down");
    z.op(
        "Range",
        &[&batch, &nine, &one],
        vec![],
        "range_from_batch_unknown",
    );
    z.op("Range", &[&i0, &batch, &one], vec![], "range_to_batch");
    let f = |z: &mut Zoo, v: f32| {
        z.count += 1;
        let name = format!("scalar#{}", z.count);
        z.initializers.push(f32_tensor(&name, &[], &[v]));
        name
    };
    let (fs, fl, fd) = (f(&mut z, 0.5), f(&mut z, 3.0), f(&mut z, 0.75));
    z.op("Range", &[&fs, &fl, &fd], vec![], "range_float");
    let (indices, depth, on_off) = (
        z.ints(&[4], &[0, 3, 1, 4]),
        z.ints(&[], &[5]),
        z.floats(&[2], 2),
    );
    z.op(
        "OneHot",
        &[&indices, &depth, &on_off],
        vec![attr_int("axis", 0)],
        "onehot_axis0",
    );
    let axes = z.ints(&[2], &[-1, 1]);
    let unsqueezed = z.op("Unsqueeze", &["x", &axes], vec![], "unsqueeze_two");
    let axis1 = z.ints(&[1], &[1]);
    z.op("Squeeze", &[&unsqueezed, &axis1], vec![], "squeeze_one");
    z.op(
        "Constant",
        &[],
        vec![attr_tensor("value", f32_tensor("", &[2, 3], &[0.0; 6]))],
        "constant_tensor",
    );
    let c_ints = z.op(
        "Constant",
        &[],
        vec![AttributeProto {
            name: Some("value_ints".into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: vec![2, 3, 4],
            ..Default::default()
        }],
        "constant_ints",
    );
    z.op(
        "Constant",
        &[],
        vec![attr_float("value_float", 1.5)],
        "constant_float",
    );
    z.op(
        "ConstantOfShape",
        &[&c_ints],
        vec![],
        "constant_of_shape_from_constant",
    );
    z.op(
        "Cast",
        &[&flat],
        vec![attr_int("to", i64::from(INT64))],
        "cast_to_int64",
    );
    z.op("NonZero", &["x"], vec![], "nonzero");
    let incomplete = check_zoo("shape ops", z, 20);
    // Not expressible as a Dim (33N, 11N, 9 - N) or data-dependent (NonZero).
    let expected = [
        "flatten_last",
        "nonzero",
        "range_from_batch_unknown",
        "reshape_-1_is_11N",
    ];
    let labels: Vec<&str> = incomplete
        .iter()
        .map(|l| l.split('#').next().unwrap_or_default())
        .collect();
    assert_eq!(labels, expected, "{incomplete:#?}");
}

/// Elementwise ops, broadcasting against the symbolic batch, MatMul/Gemm forms,
/// reductions and losses, at opset 20.
#[test]
fn elementwise_linear_reduction_and_loss_ops_match_onnx_runtime() {
    let mut z = Zoo::new();
    for op in [
        "Neg",
        "Abs",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Exp",
        "Log",
        "Sqrt",
        "Erf",
        "Gelu",
        "Reciprocal",
        "Softplus",
        "Softmax",
        "LogSoftmax",
        "LpNormalization",
        "Identity",
    ] {
        z.op(op, &["x"], vec![], op);
    }
    let (lo, hi) = (z.floats(&[], 1), z.floats(&[], 2));
    z.op("Clip", &["x", &lo, &hi], vec![], "clip");
    z.ops("Dropout", &["x"], vec![], "dropout", 2);
    z.op("IsNaN", &["x"], vec![], "isnan");
    let row = z.floats(&[13], 3);
    let channel = z.floats(&[3, 1, 1], 4);
    let column = z.floats(&[11, 1], 5);
    let scalar = z.floats(&[], 6);
    z.op("Add", &["x", &row], vec![], "add_row");
    z.op("Sub", &[&channel, "x"], vec![], "sub_channel");
    z.op("Mul", &["x", &scalar], vec![], "mul_scalar");
    z.op("Div", &[&column, &row], vec![], "div_outer");
    z.op("Pow", &["x", &scalar], vec![], "pow");
    z.op("Max", &["x", &column, &row], vec![], "max3");
    z.op("Min", &[&channel, &column], vec![], "min2");
    let less = z.op("Less", &["x", &row], vec![], "less");
    let greater = z.op("Greater", &[&channel, "x"], vec![], "greater");
    z.op("Equal", &["x", "x"], vec![], "equal");
    z.op("LessOrEqual", &["x", &scalar], vec![], "less_or_equal");
    z.op(
        "GreaterOrEqual",
        &[&column, "x"],
        vec![],
        "greater_or_equal",
    );
    let both = z.op("And", &[&less, &greater], vec![], "and");
    z.op("Or", &[&less, &both], vec![], "or");
    z.op("Not", &[&both], vec![], "not");
    z.op("Where", &[&both, "x", &column], vec![], "where");
    // MatMul: batched, vector on either side, broadcast batch.
    let (w, v13, v11, batched) = (
        z.floats(&[13, 5], 7),
        z.floats(&[13], 8),
        z.floats(&[11], 9),
        z.floats(&[3, 13, 4], 10),
    );
    z.op("MatMul", &["x", &w], vec![], "matmul");
    z.op("MatMul", &["x", &v13], vec![], "matmul_vector_right");
    let t = z.op(
        "Transpose",
        &["x"],
        vec![attr_ints("perm", &[0, 1, 3, 2])],
        "transpose",
    );
    z.op("MatMul", &[&t, &v11], vec![], "matmul_vector_right_t");
    z.op("MatMul", &[&v11, "x"], vec![], "matmul_vector_left");
    z.op("MatMul", &["x", &batched], vec![], "matmul_broadcast_batch");
    let flat = z.op("Flatten", &["x"], vec![], "flatten");
    let (wb, bias) = (z.floats(&[7, 429], 11), z.floats(&[7], 12));
    z.op(
        "Gemm",
        &[&flat, &wb, &bias],
        vec![attr_int("transB", 1)],
        "gemm_trans_b",
    );
    let flat_t = z.op("Transpose", &[&flat], vec![], "flat_t");
    let b2 = z.floats(&[429, 2], 13);
    z.op(
        "Gemm",
        &[&flat_t, &b2],
        vec![attr_int("transA", 1)],
        "gemm_trans_a",
    );
    // Reductions: axes as input (opset 18+), keepdims, noop_with_empty_axes.
    let (axis1, last, first_and_h) = (
        z.ints(&[1], &[1]),
        z.ints(&[1], &[-1]),
        z.ints(&[2], &[0, 2]),
    );
    z.op(
        "ReduceSum",
        &["x", &axis1],
        vec![attr_int("keepdims", 0)],
        "reduce_sum",
    );
    z.op("ReduceMean", &["x", &last], vec![], "reduce_mean_keep");
    z.op("ReduceMax", &["x"], vec![], "reduce_max_all_keep");
    z.op(
        "ReduceL2",
        &["x"],
        vec![attr_int("keepdims", 0)],
        "reduce_l2_all",
    );
    z.op(
        "ReduceSumSquare",
        &["x", &first_and_h],
        vec![attr_int("keepdims", 0)],
        "reduce_sum_square",
    );
    z.op(
        "ReduceMin",
        &["x"],
        vec![attr_int("noop_with_empty_axes", 1)],
        "reduce_min_noop",
    );
    z.op(
        "ArgMax",
        &["x"],
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
        "argmax",
    );
    let k = z.ints(&[1], &[4]);
    z.ops("TopK", &["x", &k], vec![], "topk", 2);
    // Losses on [N, C, d1] scores with labels computed from them.
    let to = z.ints(&[3], &[0, 3, -1]);
    let scores = z.op("Reshape", &["x", &to], vec![], "scores");
    let labels = z.op(
        "ArgMax",
        &[&scores],
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
        "labels",
    );
    let class_weights = z.floats(&[3], 14);
    z.ops(
        "SoftmaxCrossEntropyLoss",
        &[&scores, &labels],
        vec![attr_string("reduction", "none")],
        "sce_none",
        2,
    );
    z.ops(
        "SoftmaxCrossEntropyLoss",
        &[&scores, &labels, &class_weights],
        vec![],
        "sce_mean",
        2,
    );
    let log_prob = z.op(
        "LogSoftmax",
        &[&scores],
        vec![attr_int("axis", 1)],
        "log_prob",
    );
    z.op(
        "NegativeLogLikelihoodLoss",
        &[&log_prob, &labels],
        vec![attr_string("reduction", "sum")],
        "nll_sum",
    );
    z.op(
        "NegativeLogLikelihoodLoss",
        &[&log_prob, &labels],
        vec![attr_string("reduction", "none")],
        "nll_none",
    );
    let incomplete = check_zoo("elementwise, linear, reduction and loss ops", z, 20);
    assert!(incomplete.is_empty(), "{incomplete:#?}");
}

/// The attribute forms of older opsets: Reduce* axes (before 18; ReduceSum before
/// 13), Split `split`, Squeeze/Unsqueeze axes (before 13), and the opset-13 forms.
#[test]
fn older_opset_forms_match_onnx_runtime() {
    for opset in [11, 13, 17] {
        let mut z = Zoo::new();
        // Squeeze/Unsqueeze axes, Split sizes and ReduceSum axes became inputs at 13;
        // the other Reduce* ops keep the attribute until 18.
        let inputs_13 = opset >= 13;
        let (inputs, mut attrs) = z.operand(&["x"], "axes", &[2, 3], false);
        attrs.push(attr_int("keepdims", 0));
        z.op("ReduceMean", &strs(&inputs), attrs, "reduce_mean");
        let (inputs, attrs) = z.operand(&["x"], "axes", &[1], inputs_13);
        z.op("ReduceSum", &strs(&inputs), attrs, "reduce_sum");
        let (inputs, mut attrs) = z.operand(&["x"], "split", &[4, 9], inputs_13);
        attrs.push(attr_int("axis", -1));
        z.ops("Split", &strs(&inputs), attrs, "split", 2);
        z.ops("Split", &["x"], vec![attr_int("axis", 1)], "split_equal", 3);
        let (inputs, attrs) = z.operand(&["x"], "axes", &[0, -1], inputs_13);
        let unsqueezed = z.op("Unsqueeze", &strs(&inputs), attrs, "unsqueeze");
        let (inputs, attrs) = z.operand(&[&unsqueezed], "axes", &[-1], inputs_13);
        z.op("Squeeze", &strs(&inputs), attrs, "squeeze");
        let pads = z.ints(&[8], &[0, 1, 0, 2, 0, 0, 3, 0]);
        z.op("Pad", &["x", &pads], vec![], "pad");
        let window = vec![
            attr_ints("kernel_shape", &[2, 3]),
            attr_int("ceil_mode", 1),
            attr_ints("strides", &[2, 2]),
        ];
        z.ops("MaxPool", &["x"], window, "maxpool", 2);
        let incomplete = check_zoo(&format!("opset {opset}"), z, opset);
        assert!(incomplete.is_empty(), "opset {opset}: {incomplete:#?}");
    }
}

fn strs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}
