//! Static element types and shapes of graph values, inferred once over a graph so
//! that later passes (the loss patch, autodiff) can emit shape-correct nodes.
//!
//! Inference never fails: a value whose type cannot be derived stays unknown, and a
//! dimension that cannot be derived is `Dim::Unknown`. Besides types, integer
//! tensors whose contents are known at compile time are tracked element by element,
//! because shape arithmetic (`Shape -> Gather -> Concat -> Reshape`, computed `Pad`
//! amounts) decides the shapes downstream. An element may be `Dim::Symbolic("N")`:
//! the value equals the batch size, which lets `view(x.size(0), -1)` keep its `N`.

use super::proto::tensor_proto::DataType;
use super::tensor::{f32_values, i64_values, is_external, BOOL, FLOAT, INT64};
use super::types::{tensor_type, Dim, TensorType};
use super::{attribute, GraphProto, NodeProto, TensorProto};
use std::collections::{HashMap, HashSet};

/// Integer tensors with more elements than this are not tracked: shape arithmetic
/// works on a handful of elements, and copying weight-sized tensors buys nothing.
const MAX_TRACKED_ELEMENTS: usize = 4096;

/// Slice bounds at least this large (in magnitude) mean "to the end": exporters
/// write `INT64_MAX` / `-INT64_MAX`, and no real dimension comes close.
const OPEN_BOUND: i64 = i64::MAX / 2;

/// Element type and shape of every value that can be inferred.
#[derive(Debug, Clone, Default)]
pub struct ValueShapes {
    types: HashMap<String, TensorType>,
    /// Known integer contents, row-major; `Symbolic` elements equal that dimension.
    values: HashMap<String, Vec<Dim>>,
    /// The fully known subset of `values`, kept as plain integers for `const_ints`.
    consts: HashMap<String, Vec<i64>>,
    /// Small float constants: `Range` and `OneHot` may take their bounds as floats.
    floats: HashMap<String, Vec<f64>>,
}

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

    pub fn get(&self, name: &str) -> Option<&TensorType> {
        self.types.get(name)
    }

    /// The dimensions, or `None` if the rank is unknown.
    pub fn shape(&self, name: &str) -> Option<&[Dim]> {
        self.types.get(name)?.shape.as_deref()
    }

    pub fn rank(&self, name: &str) -> Option<usize> {
        self.shape(name).map(<[Dim]>::len)
    }

    /// The element type, `None` when unknown (`UNDEFINED`).
    pub fn elem_type(&self, name: &str) -> Option<i32> {
        self.types
            .get(name)
            .map(|t| t.elem_type)
            .filter(|&e| e != 0)
    }

    /// Constant integer values known at compile time (initializers, Constant nodes,
    /// and simple shape arithmetic on them: Shape of a fully static tensor,
    /// Gather/Concat/Unsqueeze/Squeeze/Slice/Cast/Mul/Add/Sub on known ints).
    pub fn const_ints(&self, name: &str) -> Option<&[i64]> {
        self.consts.get(name).map(Vec::as_slice)
    }

    /// Record a value's type (used when new nodes are appended by later passes).
    pub fn insert(&mut self, name: &str, ty: TensorType) {
        // Known contents stay only while they still fit the recorded shape.
        if let Some(count) = ty.shape.as_deref().and_then(static_count) {
            if self.values.get(name).is_some_and(|v| v.len() != count) {
                self.forget_values(name);
            }
        } else {
            self.forget_values(name);
        }
        self.types.insert(name.to_string(), ty);
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
        let inferred = infer_outputs(&ctx);
        let values = fold_values(&ctx);
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
        if node.op_type() == "Constant" {
            if let Some(floats) = constant_floats(node) {
                self.floats.insert(first.clone(), floats);
            }
        }
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

    /// Stores known contents when they match the value's static element count (a
    /// mismatch means an inconsistent model; then nothing is claimed).
    fn set_values(&mut self, name: &str, values: Vec<Dim>) {
        let count = self.shape(name).and_then(static_count);
        if count != Some(values.len()) || values.len() > MAX_TRACKED_ELEMENTS {
            return;
        }
        let ints: Option<Vec<i64>> = values
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => Some(*v),
                _ => None,
            })
            .collect();
        match ints {
            Some(ints) => self.consts.insert(name.to_string(), ints),
            None => self.consts.remove(name),
        };
        self.values.insert(name.to_string(), values);
    }

    fn forget_values(&mut self, name: &str) {
        self.values.remove(name);
        self.consts.remove(name);
    }
}

// ---------------------------------------------------------------------------
// Per-node view

/// One node with read access to everything inferred before it.
struct Ctx<'a> {
    node: &'a NodeProto,
    shapes: &'a ValueShapes,
    opset: i64,
}

/// An operand that moved from an attribute to an input between opsets.
enum Operand {
    Absent,
    Known(Vec<i64>),
    /// Given, but not a compile-time constant.
    Unknown,
}

impl<'a> Ctx<'a> {
    fn op(&self) -> &'a str {
        self.node.op_type()
    }
    fn input(&self, i: usize) -> Option<&'a str> {
        self.node
            .input
            .get(i)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
    fn inputs(&self) -> impl Iterator<Item = &'a str> {
        self.node
            .input
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
    fn ty(&self, i: usize) -> Option<&'a TensorType> {
        self.shapes.types.get(self.input(i)?)
    }
    fn shape(&self, i: usize) -> Option<&'a [Dim]> {
        self.ty(i)?.shape.as_deref()
    }
    /// Element type of input `i`, 0 (`UNDEFINED`) when unknown.
    fn elem(&self, i: usize) -> i32 {
        self.ty(i).map_or(0, |t| t.elem_type)
    }
    fn values(&self, i: usize) -> Option<&'a [Dim]> {
        self.shapes.values.get(self.input(i)?).map(Vec::as_slice)
    }
    fn ints(&self, i: usize) -> Option<&'a [i64]> {
        self.shapes.consts.get(self.input(i)?).map(Vec::as_slice)
    }
    fn static_dims(&self, i: usize) -> Option<Vec<usize>> {
        static_dims(self.shape(i)?)
    }
    /// A scalar (or one-element) numeric constant, integer or float.
    fn scalar(&self, i: usize) -> Option<f64> {
        let name = self.input(i)?;
        if let Some(ints) = self.shapes.consts.get(name) {
            return single(ints).map(|&v| v as f64);
        }
        self.shapes
            .floats
            .get(name)
            .and_then(|f| single(f))
            .copied()
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        super::attr_int(self.node, name, default)
    }
    fn ints_attr(&self, name: &str) -> Option<&'a [i64]> {
        attribute(self.node, name).map(|a| a.ints.as_slice())
    }
    fn string(&self, name: &str, default: &'a str) -> &'a str {
        attribute(self.node, name)
            .and_then(|a| a.s.as_deref())
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or(default)
    }
    /// Reads an operand that is an attribute before opset `since` and input `input`
    /// from then on; the other form is accepted as a fallback for mixed exporters.
    fn operand(&self, attr: &str, input: usize, since: i64) -> Operand {
        let from_input = match self.input(input) {
            None => Operand::Absent,
            Some(_) => self
                .ints(input)
                .map_or(Operand::Unknown, |v| Operand::Known(v.to_vec())),
        };
        let from_attr = self
            .ints_attr(attr)
            .map_or(Operand::Absent, |v| Operand::Known(v.to_vec()));
        let (preferred, fallback) = if self.opset >= since {
            (from_input, from_attr)
        } else {
            (from_attr, from_input)
        };
        match preferred {
            Operand::Absent => fallback,
            found => found,
        }
    }
    /// A 1-D shape tensor's elements (Reshape, Expand, ConstantOfShape): known ones,
    /// or, when computed at run time, as many unknowns as its length (the rank).
    fn shape_operand(&self, i: usize) -> Option<Vec<Dim>> {
        if let Some(values) = self.values(i) {
            return Some(values.to_vec());
        }
        match self.static_dims(i)?.as_slice() {
            [len] if *len <= MAX_TRACKED_ELEMENTS => Some(vec![Dim::Unknown; *len]),
            _ => None,
        }
    }
    /// Input `i`'s shape with the given element type.
    fn like(&self, i: usize, elem: i32) -> Option<TensorType> {
        typed(elem, self.shape(i).map(<[Dim]>::to_vec))
    }
}

fn typed(elem: i32, shape: Option<Vec<Dim>>) -> Option<TensorType> {
    (elem != 0 || shape.is_some()).then_some(TensorType {
        elem_type: elem,
        shape,
    })
}

fn single<T>(values: &[T]) -> Option<&T> {
    match values {
        [v] => Some(v),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Type inference, one function per op family

fn infer_outputs(n: &Ctx) -> Vec<Option<TensorType>> {
    let op = n.op();
    let one = |t: Option<TensorType>| vec![t];
    match op {
        "Constant" => one(constant_type(n.node)),
        "Cast" => one(n.like(0, n.int("to", 0) as i32)),
        "CastLike" => one(n.like(0, n.elem(1))),
        "Not" | "IsNaN" | "IsInf" => one(n.like(0, BOOL)),
        "Dropout" => vec![n.like(0, n.elem(0)), n.like(0, BOOL)],
        _ if is_same_shape(op) => one(n.like(0, n.elem(0))),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" => {
            one(broadcast_inputs(n, BOOL))
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Max" | "Min" | "Sum" | "Mean" => {
            one(broadcast_inputs(n, n.elem(0)))
        }
        "Where" => one(broadcast_inputs(n, n.elem(1))),
        "MatMul" => one(matmul(n)),
        "Gemm" => one(gemm(n)),
        "Conv" => one(conv(n)),
        "ConvTranspose" => one(conv_transpose(n)),
        "MaxPool" | "AveragePool" | "LpPool" => pool(n),
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => one(global_pool(n)),
        "BatchNormalization" => batch_norm(n),
        "LayerNormalization" => layer_norm(n),
        "Flatten" => one(flatten(n)),
        "Reshape" => one(reshape(n)),
        "Transpose" => one(transpose(n)),
        "Squeeze" => one(squeeze(n)),
        "Unsqueeze" => one(unsqueeze(n)),
        "Concat" => one(concat(n)),
        "Split" => split(n),
        "Slice" => one(slice(n)),
        "Pad" => one(pad(n)),
        "Gather" => one(gather(n)),
        "GatherElements" => one(n.like(1, n.elem(0))),
        "Expand" => one(expand(n)),
        "Tile" => one(tile(n)),
        "Shape" => one(shape_of(n)),
        "Size" => one(typed(INT64, Some(vec![]))),
        "ConstantOfShape" => one(constant_of_shape(n)),
        "Range" => one(range(n)),
        "OneHot" => one(one_hot(n)),
        "ReduceSum" | "ReduceMean" | "ReduceL1" | "ReduceL2" | "ReduceMax" | "ReduceMin"
        | "ReduceProd" | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => one(reduce(n)),
        "ArgMax" | "ArgMin" => one(arg_reduce(n)),
        "TopK" => top_k(n),
        "SoftmaxCrossEntropyLoss" | "NegativeLogLikelihoodLoss" => loss(n),
        "NonZero" => one(non_zero(n)),
        _ => vec![],
    }
}

/// Ops whose single output has input 0's shape and element type.
fn is_same_shape(op: &str) -> bool {
    matches!(
        op,
        "Identity"
            | "Neg"
            | "Abs"
            | "Relu"
            | "LeakyRelu"
            | "PRelu"
            | "Sigmoid"
            | "Tanh"
            | "HardSigmoid"
            | "HardSwish"
            | "Exp"
            | "Log"
            | "Sqrt"
            | "Erf"
            | "Gelu"
            | "Reciprocal"
            | "Softplus"
            | "Softsign"
            | "Clip"
            | "Elu"
            | "Selu"
            | "Celu"
            | "ThresholdedRelu"
            | "Mish"
            | "Sign"
            | "Floor"
            | "Ceil"
            | "Round"
            | "Sin"
            | "Cos"
            | "Tan"
            | "Asin"
            | "Acos"
            | "Atan"
            | "Sinh"
            | "Cosh"
            | "Asinh"
            | "Acosh"
            | "Atanh"
            | "Shrink"
            | "Softmax"
            | "LogSoftmax"
            | "Hardmax"
            | "LpNormalization"
            | "InstanceNormalization"
            | "MeanVarianceNormalization"
            | "CumSum"
            | "Trilu"
            | "ScatterND"
            | "ScatterElements"
            | "BitwiseNot"
    )
}

fn constant_type(node: &NodeProto) -> Option<TensorType> {
    let (elem, dims): (i32, Vec<i64>) =
        if let Some(t) = attribute(node, "value").and_then(|a| a.t.as_ref()) {
            (t.data_type(), t.dims.clone())
        } else if attribute(node, "value_float").is_some() {
            (FLOAT, vec![])
        } else if let Some(a) = attribute(node, "value_floats") {
            (FLOAT, vec![a.floats.len() as i64])
        } else if attribute(node, "value_int").is_some() {
            (INT64, vec![])
        } else if let Some(a) = attribute(node, "value_ints") {
            (INT64, vec![a.ints.len() as i64])
        } else {
            return None;
        };
    typed(elem, Some(dims.into_iter().map(Dim::Fixed).collect()))
}

/// Multidirectional (numpy) broadcasting of every input.
fn broadcast_inputs(n: &Ctx, elem: i32) -> Option<TensorType> {
    let shapes: Option<Vec<&[Dim]>> = n.inputs().map(|name| n.shapes.shape(name)).collect();
    typed(elem, shapes.map(|s| broadcast_shapes(&s)))
}

fn matmul(n: &Ctx) -> Option<TensorType> {
    let shape = match (n.shape(0), n.shape(1)) {
        (Some(a), Some(b)) => matmul_dims(a, b),
        _ => None,
    };
    typed(n.elem(0), shape)
}

/// numpy.matmul: 1-D operands gain (and then lose) a unit axis; batch axes broadcast.
fn matmul_dims(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2 = if a.len() == 1 {
        vec![Dim::Fixed(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2 = if b.len() == 1 {
        vec![b[0].clone(), Dim::Fixed(1)]
    } else {
        b.to_vec()
    };
    let mut out = broadcast_shapes(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]]);
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Some(out)
}

/// `Y = op(A) @ op(B) + C`: always rank 2, [M, N].
fn gemm(n: &Ctx) -> Option<TensorType> {
    let pick = |i: usize, index: usize| {
        n.shape(i)
            .and_then(|s| s.get(index))
            .cloned()
            .unwrap_or(Dim::Unknown)
    };
    // M is A's row count (its column count when transposed); N is B's columns.
    let m = pick(0, usize::from(n.int("transA", 0) != 0));
    let cols = pick(1, usize::from(n.int("transB", 0) == 0));
    typed(n.elem(0), Some(vec![m, cols]))
}

/// Kernel window attributes shared by Conv, ConvTranspose and the pools.
struct Window {
    kernel: Option<Vec<i64>>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    /// `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`.
    pads: Vec<i64>,
    auto_pad: String,
}

impl Window {
    fn read(n: &Ctx, spatial: usize, weight_kernel: Option<Vec<i64>>) -> Window {
        let or_fill = |name: &str, fill: i64, len: usize| {
            n.ints_attr(name)
                .map(<[i64]>::to_vec)
                .unwrap_or_else(|| vec![fill; len])
        };
        Window {
            kernel: n
                .ints_attr("kernel_shape")
                .map(<[i64]>::to_vec)
                .or(weight_kernel),
            strides: or_fill("strides", 1, spatial),
            dilations: or_fill("dilations", 1, spatial),
            pads: or_fill("pads", 0, 2 * spatial),
            auto_pad: n.string("auto_pad", "NOTSET").to_string(),
        }
    }
    fn at(&self, i: usize, spatial: usize) -> Option<WindowAxis> {
        let at =
            |v: &[i64], i: usize, default: i64| i128::from(v.get(i).copied().unwrap_or(default));
        Some(WindowAxis {
            kernel: i128::from(*self.kernel.as_ref()?.get(i)?),
            stride: at(&self.strides, i, 1),
            dilation: at(&self.dilations, i, 1),
            pad_begin: at(&self.pads, i, 0),
            pad_end: at(&self.pads, i + spatial, 0),
        })
        .filter(|w| w.stride > 0 && w.dilation > 0 && w.kernel > 0)
    }
}

/// One spatial axis of a window, widened so that the size formulas cannot overflow
/// whatever the attributes say.
#[derive(Clone, Copy)]
struct WindowAxis {
    kernel: i128,
    stride: i128,
    dilation: i128,
    pad_begin: i128,
    pad_end: i128,
}

impl WindowAxis {
    fn extent(&self) -> i128 {
        (self.kernel - 1) * self.dilation + 1
    }
}

fn conv(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let Some(x) = n.shape(0).filter(|x| x.len() >= 2) else {
        return typed(elem, None);
    };
    let spatial = x.len() - 2;
    let weight = n.shape(1);
    let weight_kernel = weight.and_then(|w| static_ints(w.get(2..)?));
    let window = Window::read(n, spatial, weight_kernel);
    let out_channels = weight
        .and_then(|w| w.first())
        .cloned()
        .unwrap_or(Dim::Unknown);
    let mut out = vec![x[0].clone(), out_channels];
    for i in 0..spatial {
        let dim = match (&x[i + 2], window.at(i, spatial)) {
            (Dim::Fixed(size), Some(w)) => conv_out_size(*size, &w, &window.auto_pad),
            _ => None,
        };
        out.push(dim.map_or(Dim::Unknown, Dim::Fixed));
    }
    typed(elem, Some(out))
}

/// Conv output length: `floor((in + pads - extent) / stride) + 1`; SAME keeps
/// `ceil(in / stride)`; VALID pads nothing.
fn conv_out_size(size: i64, w: &WindowAxis, auto_pad: &str) -> Option<i64> {
    let size = i128::from(size);
    let numerator = match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => return narrow(ceil_div(size, w.stride)),
        "VALID" => size - w.extent(),
        _ => size + w.pad_begin + w.pad_end - w.extent(),
    };
    (numerator >= 0)
        .then(|| narrow(numerator / w.stride + 1))
        .flatten()
}

fn conv_transpose(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let Some(x) = n.shape(0).filter(|x| x.len() >= 2) else {
        return typed(elem, None);
    };
    let spatial = x.len() - 2;
    let weight = n.shape(1);
    let weight_kernel = weight.and_then(|w| static_ints(w.get(2..)?));
    let window = Window::read(n, spatial, weight_kernel);
    // Weight is [C_in, C_out / group, k...].
    let out_channels = match weight.and_then(|w| w.get(1)) {
        Some(Dim::Fixed(c)) => c
            .checked_mul(n.int("group", 1))
            .map_or(Dim::Unknown, Dim::Fixed),
        _ => Dim::Unknown,
    };
    let output_padding = n.ints_attr("output_padding").unwrap_or(&[]);
    // output_shape names the spatial sizes (some exporters include N and C too).
    let output_shape = n.ints_attr("output_shape").map(|s| match s.len() {
        l if l == x.len() => &s[2..],
        _ => s,
    });
    let mut out = vec![x[0].clone(), out_channels];
    for i in 0..spatial {
        let size = match (output_shape, &x[i + 2], window.at(i, spatial)) {
            (Some(explicit), _, _) => explicit.get(i).copied(),
            (None, Dim::Fixed(size), Some(w)) => {
                let extra = output_padding.get(i).copied().unwrap_or(0);
                conv_transpose_size(*size, &w, extra, &window.auto_pad)
            }
            _ => None,
        };
        out.push(size.map_or(Dim::Unknown, Dim::Fixed));
    }
    typed(elem, Some(out))
}

/// `stride * (in - 1) + output_padding + extent - pads`; SAME gives `in * stride`.
fn conv_transpose_size(
    size: i64,
    w: &WindowAxis,
    output_padding: i64,
    auto_pad: &str,
) -> Option<i64> {
    let size = i128::from(size);
    let pads = match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => return narrow(size * w.stride),
        "VALID" => 0,
        _ => w.pad_begin + w.pad_end,
    };
    narrow(w.stride * (size - 1) + i128::from(output_padding) + w.extent() - pads)
}

/// MaxPool (with its int64 `Indices`), AveragePool, LpPool.
fn pool(n: &Ctx) -> Vec<Option<TensorType>> {
    let elem = n.elem(0);
    let Some(x) = n.shape(0).filter(|x| x.len() >= 2) else {
        return vec![typed(elem, None), typed(INT64, None)];
    };
    let spatial = x.len() - 2;
    let window = Window::read(n, spatial, None);
    let ceil_mode = n.int("ceil_mode", 0) != 0;
    let mut out = x[..2].to_vec();
    for i in 0..spatial {
        let dim = match (&x[i + 2], window.at(i, spatial)) {
            (Dim::Fixed(size), Some(w)) => pool_out_size(*size, &w, &window.auto_pad, ceil_mode),
            _ => None,
        };
        out.push(dim.map_or(Dim::Unknown, Dim::Fixed));
    }
    vec![typed(elem, Some(out.clone())), typed(INT64, Some(out))]
}

/// Pool output length as ONNX Runtime computes it: SAME pads are derived from the
/// legacy target `ceil(in / stride)`, and in ceil mode a last window that would
/// start in the end padding is dropped (onnx/onnx#5741).
fn pool_out_size(size: i64, w: &WindowAxis, auto_pad: &str, ceil_mode: bool) -> Option<i64> {
    let size = i128::from(size);
    let (begin, end) = match auto_pad {
        "VALID" => (0, 0),
        "SAME_UPPER" | "SAME_LOWER" => {
            let needed = (ceil_div(size, w.stride) - 1) * w.stride + w.kernel - size;
            let begin = if auto_pad == "SAME_LOWER" {
                (needed + 1) / 2
            } else {
                needed / 2
            };
            (begin, needed - begin)
        }
        _ => (w.pad_begin, w.pad_end),
    };
    let numerator = size + begin + end - w.extent();
    if numerator < 0 {
        return None;
    }
    if !ceil_mode {
        return narrow(numerator / w.stride + 1);
    }
    let out = ceil_div(numerator, w.stride) + 1;
    narrow(if (out - 1) * w.stride >= size + begin {
        out - 1
    } else {
        out
    })
}

fn global_pool(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).filter(|x| x.len() >= 2).map(|x| {
        let mut out = x[..2].to_vec();
        out.resize(x.len(), Dim::Fixed(1));
        out
    });
    typed(n.elem(0), shape)
}

/// Output 0 is X; the statistics outputs (running mean/var in opset 14+, also the
/// saved mean/var before) are per channel, like the `mean` input.
fn batch_norm(n: &Ctx) -> Vec<Option<TensorType>> {
    let channel = n
        .shape(0)
        .and_then(|x| x.get(1))
        .cloned()
        .unwrap_or(Dim::Unknown);
    let stat = |i: usize| {
        n.ty(i)
            .cloned()
            .or_else(|| typed(n.elem(0), Some(vec![channel.clone()])))
    };
    vec![n.like(0, n.elem(0)), stat(3), stat(4), stat(3), stat(4)]
}

/// Output 0 is X; Mean and InvStdDev keep the leading axes and are 1 from `axis`
/// on, in the `stash_type` precision.
fn layer_norm(n: &Ctx) -> Vec<Option<TensorType>> {
    let stash = n.int("stash_type", i64::from(FLOAT)) as i32;
    let stats = n.shape(0).and_then(|x| {
        let axis = norm_axis(n.int("axis", -1), x.len())?;
        let mut dims = x[..axis].to_vec();
        dims.resize(x.len(), Dim::Fixed(1));
        Some(dims)
    });
    vec![
        n.like(0, n.elem(0)),
        typed(stash, stats.clone()),
        typed(stash, stats),
    ]
}

fn flatten(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|x| {
        // axis may equal the rank (everything in the first factor).
        let axis = norm_axis_inclusive(n.int("axis", 1), x.len())?;
        Some(vec![dim_product(&x[..axis]), dim_product(&x[axis..])])
    });
    typed(n.elem(0), shape)
}

fn reshape(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let Some(target) = n.shape_operand(1) else {
        return typed(elem, None);
    };
    let allowzero = n.int("allowzero", 0) != 0;
    typed(elem, Some(reshape_dims(n.shape(0), &target, allowzero)))
}

/// Reshape's target: 0 copies the input dimension (unless `allowzero`), -1 is
/// whatever makes the element counts agree.
fn reshape_dims(input: Option<&[Dim]>, target: &[Dim], allowzero: bool) -> Vec<Dim> {
    let mut out: Vec<Dim> = target
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Dim::Fixed(0) if !allowzero => input
                .and_then(|x| x.get(i))
                .cloned()
                .unwrap_or(Dim::Unknown),
            Dim::Fixed(v) if *v >= 0 => Dim::Fixed(*v),
            Dim::Fixed(_) => Dim::Unknown,
            other => other.clone(),
        })
        .collect();
    if let Some(pos) = target.iter().position(|t| *t == Dim::Fixed(-1)) {
        let others: Vec<Dim> = out
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != pos)
            .map(|(_, d)| d.clone())
            .collect();
        out[pos] = input.map_or(Dim::Unknown, |x| missing_factor(x, &others));
    }
    out
}

fn transpose(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|x| {
        let perm = permutation(n, x.len())?;
        Some(perm.iter().map(|&p| x[p].clone()).collect())
    });
    typed(n.elem(0), shape)
}

/// Transpose's `perm`, reversing the axes by default.
fn permutation(n: &Ctx, rank: usize) -> Option<Vec<usize>> {
    let perm: Vec<usize> = match n.ints_attr("perm") {
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Option<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let distinct: HashSet<usize> = perm.iter().copied().collect();
    (perm.len() == rank && distinct.len() == rank).then_some(perm)
}

fn squeeze(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|x| match n.operand("axes", 1, 13) {
        Operand::Known(axes) => {
            let axes: HashSet<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, x.len()))
                .collect::<Option<_>>()?;
            Some(without_axes(x, &axes))
        }
        // Without axes every 1 goes; a symbolic size might be 1 at run time.
        Operand::Absent if x.iter().all(|d| matches!(d, Dim::Fixed(_))) => {
            Some(x.iter().filter(|d| **d != Dim::Fixed(1)).cloned().collect())
        }
        _ => None,
    });
    typed(n.elem(0), shape)
}

fn unsqueeze(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|x| {
        let Operand::Known(axes) = n.operand("axes", 1, 13) else {
            return None;
        };
        let rank = x.len() + axes.len();
        let axes: HashSet<usize> = axes
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Option<_>>()?;
        let mut rest = x.iter();
        (0..rank)
            .map(|i| match axes.contains(&i) {
                true => Some(Dim::Fixed(1)),
                false => rest.next().cloned(),
            })
            .collect()
    });
    typed(n.elem(0), shape)
}

fn concat(n: &Ctx) -> Option<TensorType> {
    let elem = n.elem(0);
    let shapes: Vec<Option<&[Dim]>> = n.inputs().map(|name| n.shapes.shape(name)).collect();
    let Some(first) = shapes.iter().flatten().next() else {
        return typed(elem, None);
    };
    let rank = first.len();
    let Some(axis) = norm_axis(n.int("axis", 0), rank) else {
        return typed(elem, None);
    };
    let known: Vec<&[Dim]> = shapes
        .iter()
        .flatten()
        .copied()
        .filter(|s| s.len() == rank)
        .collect();
    let mut out: Vec<Dim> = (0..rank)
        .map(|i| {
            known
                .iter()
                .fold(Dim::Unknown, |acc, s| refine_dim(&acc, &s[i]))
        })
        .collect();
    let parts: Option<Vec<Dim>> = shapes
        .iter()
        .map(|s| s.and_then(|s| s.get(axis).cloned()))
        .collect();
    out[axis] = match parts {
        Some(parts) => dim_sum(&parts),
        None => Dim::Unknown,
    };
    typed(elem, Some(out))
}

fn split(n: &Ctx) -> Vec<Option<TensorType>> {
    let elem = n.elem(0);
    let count = n.node.output.len();
    let axis_of = |x: &[Dim]| norm_axis(n.int("axis", 0), x.len());
    let Some((x, axis)) = n.shape(0).and_then(|x| Some((x, axis_of(x)?))) else {
        return vec![typed(elem, None); count];
    };
    split_sizes(n, &x[axis], count)
        .into_iter()
        .map(|size| {
            let mut dims = x.to_vec();
            dims[axis] = size;
            typed(elem, Some(dims))
        })
        .collect()
}

/// Split sizes: the `split` operand (input from opset 13), else `num_outputs`
/// (opset 18; the last chunk is smaller when uneven) or the output count.
fn split_sizes(n: &Ctx, dim: &Dim, count: usize) -> Vec<Dim> {
    match n.operand("split", 1, 13) {
        Operand::Known(sizes) => sizes.into_iter().map(Dim::Fixed).collect(),
        Operand::Unknown => vec![Dim::Unknown; count],
        Operand::Absent => {
            let parts = n.int("num_outputs", count as i64).max(1);
            // Sizes past the node's outputs would name nothing.
            (0..parts.min(count as i64))
                .map(|i| match dim {
                    Dim::Fixed(d) => {
                        let (d, i, parts) = (i128::from(*d), i128::from(i), i128::from(parts));
                        let chunk = ceil_div(d, parts);
                        narrow(chunk.min((d - i * chunk).max(0))).map_or(Dim::Unknown, Dim::Fixed)
                    }
                    whole if parts == 1 => whole.clone(),
                    _ => Dim::Unknown,
                })
                .collect()
        }
    }
}

/// One sliced axis with its raw (unnormalized) bounds.
struct SliceAxis {
    axis: usize,
    start: i64,
    end: i64,
    step: i64,
}

fn slice(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).map(|x| match slice_axes(n, x.len()) {
        Some(axes) => {
            let mut out = x.to_vec();
            for a in axes {
                out[a.axis] = slice_dim(&x[a.axis], &a);
            }
            out
        }
        // Bounds computed at run time: only the rank survives.
        None => vec![Dim::Unknown; x.len()],
    });
    typed(n.elem(0), shape)
}

/// Slice's starts/ends/axes/steps (inputs from opset 10, attributes before).
fn slice_axes(n: &Ctx, rank: usize) -> Option<Vec<SliceAxis>> {
    let known = |op: Operand| match op {
        Operand::Known(v) => Some(Some(v)),
        Operand::Absent => Some(None),
        Operand::Unknown => None,
    };
    let starts = known(n.operand("starts", 1, 10))??;
    let ends = known(n.operand("ends", 2, 10))??;
    let axes =
        known(n.operand("axes", 3, 10))?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = known(n.operand("steps", 4, 10))?.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return None;
    }
    (0..starts.len())
        .map(|i| {
            Some(SliceAxis {
                axis: norm_axis(axes[i], rank)?,
                start: starts[i],
                end: ends[i],
                step: steps[i],
            })
            .filter(|a| a.step != 0)
        })
        .collect()
}

fn slice_dim(dim: &Dim, a: &SliceAxis) -> Dim {
    match dim {
        Dim::Fixed(size) => Dim::Fixed(slice_range(*size, a).1),
        // A symbolic axis keeps its symbol only when taken whole (either direction).
        Dim::Symbolic(_) if a.step == 1 && a.start == 0 && a.end >= OPEN_BOUND => dim.clone(),
        Dim::Symbolic(_)
            if a.step == -1 && (a.start == -1 || a.start >= OPEN_BOUND) && a.end <= -OPEN_BOUND =>
        {
            dim.clone()
        }
        _ => Dim::Unknown,
    }
}

/// ONNX Slice on one axis of length `size`: (first index, element count).
fn slice_range(size: i64, a: &SliceAxis) -> (i64, i64) {
    // i128: bounds are often ±INT64_MAX, and adding the size must not overflow.
    if size <= 0 {
        return (0, 0);
    }
    let (size, step) = (i128::from(size), i128::from(a.step));
    let resolve = |v: i64| {
        let v = i128::from(v);
        if v < 0 {
            v + size
        } else {
            v
        }
    };
    let (start, end) = (resolve(a.start), resolve(a.end));
    let (start, end) = if step > 0 {
        (start.clamp(0, size), end.clamp(0, size))
    } else {
        (start.clamp(0, size - 1), end.clamp(-1, size - 1))
    };
    let span = end - start;
    let count = if step > 0 {
        (span + step - 1).div_euclid(step)
    } else {
        (span + step + 1).div_euclid(step)
    };
    (start as i64, count.max(0) as i64)
}

fn pad(n: &Ctx) -> Option<TensorType> {
    let shape = n
        .shape(0)
        .map(|x| pad_dims(n, x).unwrap_or_else(|| vec![Dim::Unknown; x.len()]));
    typed(n.elem(0), shape)
}

/// Pad amounts `[begin..., end...]` over `axes` (input 3 from opset 18, else all).
fn pad_dims(n: &Ctx, x: &[Dim]) -> Option<Vec<Dim>> {
    let Operand::Known(pads) = n.operand("pads", 1, 11) else {
        return None;
    };
    let axes: Vec<usize> = match n.input(3) {
        Some(_) => n
            .ints(3)?
            .iter()
            .map(|&a| norm_axis(a, x.len()))
            .collect::<Option<_>>()?,
        None => (0..x.len()).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return None;
    }
    let mut out = x.to_vec();
    for (i, &axis) in axes.iter().enumerate() {
        out[axis] = match pads[i].checked_add(pads[i + axes.len()]) {
            Some(amount) => dim_offset(&x[axis], amount),
            None => Dim::Unknown,
        };
    }
    Some(out)
}

fn gather(n: &Ctx) -> Option<TensorType> {
    let shape = match (n.shape(0), n.shape(1)) {
        (Some(data), Some(indices)) => norm_axis(n.int("axis", 0), data.len()).map(|axis| {
            let mut out = data[..axis].to_vec();
            out.extend_from_slice(indices);
            out.extend_from_slice(&data[axis + 1..]);
            out
        }),
        _ => None,
    };
    typed(n.elem(0), shape)
}

fn expand(n: &Ctx) -> Option<TensorType> {
    let target: Option<Vec<Dim>> = n.shape_operand(1).map(|t| t.iter().map(as_size).collect());
    let shape = n
        .shape(0)
        .zip(target)
        .map(|(x, target)| broadcast_shapes(&[x, &target]));
    typed(n.elem(0), shape)
}

fn tile(n: &Ctx) -> Option<TensorType> {
    let shape = n
        .shape(0)
        .map(|x| match n.ints(1).filter(|r| r.len() == x.len()) {
            Some(repeats) => x
                .iter()
                .zip(repeats)
                .map(|(d, &r)| dim_arith("Mul", d, &Dim::Fixed(r)))
                .collect(),
            None => vec![Dim::Unknown; x.len()],
        });
    typed(n.elem(0), shape)
}

/// Shape's `[start, end)` window over the input's axes (opset 15), clamped.
fn shape_window(n: &Ctx, rank: usize) -> (usize, usize) {
    let clamp = |v: i64| {
        let v = if v < 0 { v + rank as i64 } else { v };
        v.clamp(0, rank as i64) as usize
    };
    let start = clamp(n.int("start", 0));
    let end = clamp(n.int("end", rank as i64));
    (start, end.max(start))
}

fn shape_of(n: &Ctx) -> Option<TensorType> {
    let len = match n.shape(0) {
        Some(x) => {
            let (start, end) = shape_window(n, x.len());
            Dim::Fixed((end - start) as i64)
        }
        None => Dim::Unknown,
    };
    typed(INT64, Some(vec![len]))
}

fn constant_of_shape(n: &Ctx) -> Option<TensorType> {
    let elem = attribute(n.node, "value")
        .and_then(|a| a.t.as_ref())
        .map_or(FLOAT, |t| t.data_type());
    let shape = n.shape_operand(0).map(|t| t.iter().map(as_size).collect());
    typed(elem, shape)
}

fn range(n: &Ctx) -> Option<TensorType> {
    typed(n.elem(0), Some(vec![range_len(n)]))
}

/// `max(ceil((limit - start) / delta), 0)`; `Range(0, N, 1)` has length N.
fn range_len(n: &Ctx) -> Dim {
    if let (Some(start), Some(limit), Some(delta)) = (n.ints(0), n.ints(1), n.ints(2)) {
        if let ([s], [l], [d]) = (start, limit, delta) {
            return range_count(*s, *l, *d).map_or(Dim::Unknown, Dim::Fixed);
        }
    }
    if let (Some(s), Some(l), Some(d)) = (n.scalar(0), n.scalar(1), n.scalar(2)) {
        let count = ((l - s) / d).ceil().max(0.0);
        if count.is_finite() && count < OPEN_BOUND as f64 {
            return Dim::Fixed(count as i64);
        }
    }
    let scalar_dim = |i: usize| n.values(i).and_then(single).cloned();
    match (scalar_dim(0), scalar_dim(1), scalar_dim(2)) {
        (Some(Dim::Fixed(0)), Some(limit @ Dim::Symbolic(_)), Some(Dim::Fixed(1))) => limit,
        _ => Dim::Unknown,
    }
}

fn range_count(start: i64, limit: i64, delta: i64) -> Option<i64> {
    if delta == 0 {
        return None;
    }
    let (span, delta) = (i128::from(limit) - i128::from(start), i128::from(delta));
    let quotient = span / delta;
    let ceil = if span % delta != 0 && ((span < 0) == (delta < 0)) {
        quotient + 1
    } else {
        quotient
    };
    i64::try_from(ceil.max(0)).ok()
}

/// Indices' shape with `depth` inserted at `axis` (default -1: last).
fn one_hot(n: &Ctx) -> Option<TensorType> {
    let shape = n.shape(0).and_then(|indices| {
        let rank = indices.len() + 1;
        let axis = norm_axis(n.int("axis", -1), rank)?;
        let depth = match n.scalar(1) {
            Some(d) if d.is_finite() && d >= 0.0 && d < OPEN_BOUND as f64 => Dim::Fixed(d as i64),
            _ => Dim::Unknown,
        };
        let mut out = indices.to_vec();
        out.insert(axis, depth);
        Some(out)
    });
    typed(n.elem(2), shape)
}

/// Reduce*: axes as an attribute before opset 18 and as input 1 from then on,
/// except ReduceSum, which took the input form at 13.
fn reduce(n: &Ctx) -> Option<TensorType> {
    let since = if n.op() == "ReduceSum" { 13 } else { 18 };
    let keepdims = n.int("keepdims", 1) != 0;
    let shape = n.shape(0).and_then(|x| {
        let all: Vec<usize> = (0..x.len()).collect();
        let axes: Vec<usize> = match n.operand("axes", 1, since) {
            Operand::Known(axes) if !axes.is_empty() => axes
                .iter()
                .map(|&a| norm_axis(a, x.len()))
                .collect::<Option<_>>()?,
            // Empty axes: identity when noop_with_empty_axes, else every axis.
            Operand::Known(_) | Operand::Absent if n.int("noop_with_empty_axes", 0) != 0 => vec![],
            Operand::Known(_) | Operand::Absent => all,
            // Unknown axes: with keepdims the rank survives.
            Operand::Unknown => return keepdims.then(|| vec![Dim::Unknown; x.len()]),
        };
        Some(reduced(x, &axes.into_iter().collect(), keepdims))
    });
    typed(n.elem(0), shape)
}

fn arg_reduce(n: &Ctx) -> Option<TensorType> {
    let keepdims = n.int("keepdims", 1) != 0;
    let shape = n.shape(0).and_then(|x| {
        let axis = norm_axis(n.int("axis", 0), x.len())?;
        Some(reduced(x, &HashSet::from([axis]), keepdims))
    });
    typed(INT64, shape)
}

fn reduced(x: &[Dim], axes: &HashSet<usize>, keepdims: bool) -> Vec<Dim> {
    if keepdims {
        x.iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Fixed(1)
                } else {
                    d.clone()
                }
            })
            .collect()
    } else {
        without_axes(x, axes)
    }
}

/// Values and int64 indices with `axis` cut to K (input 1 from opset 10).
fn top_k(n: &Ctx) -> Vec<Option<TensorType>> {
    let shape = n.shape(0).and_then(|x| {
        let axis = norm_axis(n.int("axis", -1), x.len())?;
        let k = match n.operand("k", 1, 10) {
            Operand::Known(k) => single(&k).map_or(Dim::Unknown, |&k| Dim::Fixed(k)),
            _ => Dim::Unknown,
        };
        let mut out = x.to_vec();
        out[axis] = k;
        Some(out)
    });
    vec![typed(n.elem(0), shape.clone()), typed(INT64, shape)]
}

/// Scores `[N, C, d1, ...]`: mean/sum give a scalar, none gives `[N, d1, ...]`;
/// SoftmaxCrossEntropyLoss's optional log_prob is shaped like the scores.
fn loss(n: &Ctx) -> Vec<Option<TensorType>> {
    let elem = n.elem(0);
    let shape = match n.string("reduction", "mean") {
        "none" => n.shape(0).filter(|s| s.len() >= 2).map(|s| {
            let mut out = vec![s[0].clone()];
            out.extend_from_slice(&s[2..]);
            out
        }),
        _ => Some(vec![]),
    };
    vec![typed(elem, shape), n.like(0, elem)]
}

/// `[rank, count]`: the count depends on the data.
fn non_zero(n: &Ctx) -> Option<TensorType> {
    let rank = n
        .shape(0)
        .map_or(Dim::Unknown, |x| Dim::Fixed(x.len() as i64));
    typed(INT64, Some(vec![rank, Dim::Unknown]))
}

// ---------------------------------------------------------------------------
// Known integer contents

fn fold_values(n: &Ctx) -> Option<Vec<Dim>> {
    match n.op() {
        "Constant" => constant_ints(n.node).map(|v| v.into_iter().map(Dim::Fixed).collect()),
        // Same elements, new shape.
        "Identity" | "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            n.values(0).map(<[Dim]>::to_vec)
        }
        "Cast" => cast_values(n),
        "Shape" => shape_values(n),
        "Size" => n.shape(0).map(|x| vec![dim_product(x)]),
        "Gather" => gather_values(n),
        "Concat" => concat_values(n),
        "Slice" => slice_values(n),
        "Transpose" => transpose_values(n),
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" => binary_values(n),
        "Neg" => n.values(0).map(|v| {
            v.iter()
                .map(|d| dim_arith("Sub", &Dim::Fixed(0), d))
                .collect()
        }),
        "ConstantOfShape" => fill_values(n),
        "Range" => range_values(n),
        _ => None,
    }
}

/// Integer-to-integer casts keep the numbers when they fit; other casts are not
/// followed (float contents are not tracked).
fn cast_values(n: &Ctx) -> Option<Vec<Dim>> {
    let to = n.int("to", 0) as i32;
    if !is_int_type(n.elem(0)) || !is_int_type(to) {
        return None;
    }
    let values = n.values(0)?;
    let fits = to == INT64
        || values.iter().all(|d| match d {
            Dim::Fixed(v) => fits_in(*v, to),
            _ => false,
        });
    fits.then(|| values.to_vec())
}

fn shape_values(n: &Ctx) -> Option<Vec<Dim>> {
    let x = n.shape(0)?;
    let (start, end) = shape_window(n, x.len());
    Some(x[start..end].to_vec())
}

fn gather_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (data, dims) = (n.values(0)?, n.static_dims(0)?);
    let indices = n.ints(1)?;
    let axis = norm_axis(n.int("axis", 0), dims.len())?;
    let size = dims[axis];
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for &index in indices {
            let index = usize::try_from(if index < 0 {
                index + size as i64
            } else {
                index
            })
            .ok()?;
            if index >= size {
                return None;
            }
            let base = (o * size + index) * inner;
            out.extend_from_slice(data.get(base..base + inner)?);
        }
    }
    Some(out)
}

fn concat_values(n: &Ctx) -> Option<Vec<Dim>> {
    let parts: Vec<(&[Dim], Vec<usize>)> = (0..n.node.input.len())
        .filter(|&i| n.input(i).is_some())
        .map(|i| Some((n.values(i)?, n.static_dims(i)?)))
        .collect::<Option<_>>()?;
    let rank = parts.first()?.1.len();
    if parts.iter().any(|(_, dims)| dims.len() != rank) {
        return None;
    }
    let axis = norm_axis(n.int("axis", 0), rank)?;
    let outer: usize = parts[0].1[..axis].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for (values, dims) in &parts {
            let chunk: usize = dims[axis..].iter().product();
            out.extend_from_slice(values.get(o * chunk..(o + 1) * chunk)?);
        }
    }
    Some(out)
}

fn slice_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (values, dims) = (n.values(0)?, n.static_dims(0)?);
    // Per axis, the source indices it keeps.
    let mut picks: Vec<Vec<usize>> = dims.iter().map(|&d| (0..d).collect()).collect();
    for a in slice_axes(n, dims.len())? {
        let (first, count) = slice_range(dims[a.axis] as i64, &a);
        picks[a.axis] = (0..count).map(|k| (first + k * a.step) as usize).collect();
    }
    let out_dims: Vec<usize> = picks.iter().map(Vec::len).collect();
    let strides = strides(&dims);
    gather_flat(values, &out_dims, |index| {
        index
            .iter()
            .enumerate()
            .map(|(axis, &i)| picks[axis][i] * strides[axis])
            .sum()
    })
}

fn transpose_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (values, dims) = (n.values(0)?, n.static_dims(0)?);
    let perm = permutation(n, dims.len())?;
    let strides = strides(&dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    gather_flat(values, &out_dims, |index| {
        index.iter().zip(&perm).map(|(&i, &p)| i * strides[p]).sum()
    })
}

/// Elementwise arithmetic with broadcasting; `N + 0`, `N * 1` keep the symbol.
fn binary_values(n: &Ctx) -> Option<Vec<Dim>> {
    if n.inputs().count() != 2 {
        return None;
    }
    let (a, a_dims) = (n.values(0)?, n.static_dims(0)?);
    let (b, b_dims) = (n.values(1)?, n.static_dims(1)?);
    let rank = a_dims.len().max(b_dims.len());
    let align = |d: &[usize]| {
        let mut full = vec![1; rank - d.len()];
        full.extend_from_slice(d);
        full
    };
    let (a_dims, b_dims) = (align(&a_dims), align(&b_dims));
    if a_dims
        .iter()
        .zip(&b_dims)
        .any(|(&x, &y)| x != y && x != 1 && y != 1)
    {
        return None;
    }
    let out_dims: Vec<usize> = a_dims
        .iter()
        .zip(&b_dims)
        .map(|(&x, &y)| if x == 1 { y } else { x })
        .collect();
    let (a_strides, b_strides) = (strides(&a_dims), strides(&b_dims));
    let source = |index: &[usize], dims: &[usize], strides: &[usize]| -> usize {
        index
            .iter()
            .enumerate()
            .map(|(k, &i)| if dims[k] == 1 { 0 } else { i * strides[k] })
            .sum()
    };
    let mut out = Vec::new();
    for index in multi_indices(&out_dims) {
        let x = a.get(source(&index, &a_dims, &a_strides))?;
        let y = b.get(source(&index, &b_dims, &b_strides))?;
        out.push(dim_arith(n.op(), x, y));
    }
    Some(out)
}

fn fill_values(n: &Ctx) -> Option<Vec<Dim>> {
    let count = n
        .ints(0)?
        .iter()
        .try_fold(1i64, |acc, &d| acc.checked_mul(d))?;
    let fill = match attribute(n.node, "value").and_then(|a| a.t.as_ref()) {
        Some(t) => *single(&int_values(t)?)?,
        None => return None, // the default fill is float 0.0
    };
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= MAX_TRACKED_ELEMENTS)?;
    Some(vec![Dim::Fixed(fill); count])
}

fn range_values(n: &Ctx) -> Option<Vec<Dim>> {
    let (&start, &limit, &delta) = (
        single(n.ints(0)?)?,
        single(n.ints(1)?)?,
        single(n.ints(2)?)?,
    );
    let count = usize::try_from(range_count(start, limit, delta)?).ok()?;
    if count > MAX_TRACKED_ELEMENTS {
        return None;
    }
    (0..count as i64)
        .map(|k| start.checked_add(k.checked_mul(delta)?).map(Dim::Fixed))
        .collect()
}

/// Reads `values[source(out_index)]` for every index of `out_dims`, row-major.
fn gather_flat(
    values: &[Dim],
    out_dims: &[usize],
    source: impl Fn(&[usize]) -> usize,
) -> Option<Vec<Dim>> {
    multi_indices(out_dims)
        .map(|index| values.get(source(&index)).cloned())
        .collect()
}

fn multi_indices(dims: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let count: usize = dims.iter().product();
    (0..count).map(move |mut flat| {
        let mut index = vec![0; dims.len()];
        for (k, &d) in dims.iter().enumerate().rev() {
            index[k] = flat % d;
            flat /= d;
        }
        index
    })
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * dims[k + 1];
    }
    strides
}

fn constant_ints(node: &NodeProto) -> Option<Vec<i64>> {
    if let Some(t) = attribute(node, "value").and_then(|a| a.t.as_ref()) {
        return int_values(t);
    }
    if let Some(a) = attribute(node, "value_int") {
        return a.i.map(|v| vec![v]);
    }
    attribute(node, "value_ints").map(|a| a.ints.clone())
}

fn constant_floats(node: &NodeProto) -> Option<Vec<f64>> {
    if let Some(t) = attribute(node, "value").and_then(|a| a.t.as_ref()) {
        return f32_values(t).map(|v| v.into_iter().map(f64::from).collect());
    }
    if let Some(a) = attribute(node, "value_float") {
        return a.f.map(|v| vec![f64::from(v)]);
    }
    attribute(node, "value_floats").map(|a| a.floats.iter().map(|&v| f64::from(v)).collect())
}

/// The contents of an inline integer tensor (int64 or a narrower integer type).
fn int_values(tensor: &TensorProto) -> Option<Vec<i64>> {
    let elem = tensor.data_type();
    if elem == INT64 {
        return i64_values(tensor);
    }
    if is_external(tensor) || !is_int_type(elem) || elem == DataType::Uint64 as i32 {
        return None;
    }
    let width = super::tensor::elem_size(elem)?;
    match &tensor.raw_data {
        Some(raw) => Some(raw.chunks_exact(width).map(|b| le_int(b, elem)).collect()),
        // Narrow integer types are stored one per int32_data entry.
        None => Some(tensor.int32_data.iter().map(|&v| i64::from(v)).collect()),
    }
}

fn le_int(bytes: &[u8], elem: i32) -> i64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    let unsigned = u64::from_le_bytes(buf);
    let signed = matches!(
        DataType::try_from(elem),
        Ok(DataType::Int8 | DataType::Int16 | DataType::Int32)
    );
    let bits = 8 * bytes.len() as u32;
    if signed && bits < 64 && (unsigned >> (bits - 1)) & 1 == 1 {
        (unsigned | (u64::MAX << bits)) as i64
    } else {
        unsigned as i64
    }
}

fn is_int_type(elem: i32) -> bool {
    matches!(
        DataType::try_from(elem),
        Ok(DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64)
    )
}

fn fits_in(v: i64, elem: i32) -> bool {
    match DataType::try_from(elem) {
        Ok(DataType::Int8) => i8::try_from(v).is_ok(),
        Ok(DataType::Int16) => i16::try_from(v).is_ok(),
        Ok(DataType::Int32) => i32::try_from(v).is_ok(),
        Ok(DataType::Uint8) => u8::try_from(v).is_ok(),
        Ok(DataType::Uint16) => u16::try_from(v).is_ok(),
        Ok(DataType::Uint32) => u32::try_from(v).is_ok(),
        Ok(DataType::Int64 | DataType::Uint64) => v >= 0 || elem == INT64,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Dimension algebra

/// Combines an inferred type with a declared one: inferred facts win, a declared
/// dimension fills in where inference found nothing more specific.
fn refine(inferred: Option<TensorType>, declared: Option<&TensorType>) -> Option<TensorType> {
    let Some(declared) = declared else {
        return inferred;
    };
    let Some(inferred) = inferred else {
        return Some(declared.clone());
    };
    let elem_type = match inferred.elem_type {
        0 => declared.elem_type,
        e => e,
    };
    let shape = match (inferred.shape, &declared.shape) {
        (Some(a), Some(b)) if a.len() == b.len() => {
            Some(a.iter().zip(b).map(|(x, y)| refine_dim(x, y)).collect())
        }
        (Some(a), _) => Some(a),
        (None, b) => b.clone(),
    };
    Some(TensorType { elem_type, shape })
}

/// The more specific of two descriptions of the same dimension.
fn refine_dim(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(_), _) => a.clone(),
        (_, Dim::Fixed(_)) => b.clone(),
        (Dim::Symbolic(_), _) => a.clone(),
        _ => b.clone(),
    }
}

/// Broadcasts one dimension pair: 1 yields to the other, equal dims stay, a fixed
/// size above 1 decides (the other must be 1 or equal), anything else is unknown.
fn broadcast_dim(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(1), other) | (other, Dim::Fixed(1)) => other.clone(),
        (x, y) if x == y => x.clone(),
        (Dim::Fixed(_), Dim::Fixed(_)) => Dim::Unknown,
        (Dim::Fixed(k), _) | (_, Dim::Fixed(k)) => Dim::Fixed(*k),
        _ => Dim::Unknown,
    }
}

fn broadcast_shapes(shapes: &[&[Dim]]) -> Vec<Dim> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..rank)
        .map(|i| {
            shapes.iter().fold(Dim::Fixed(1), |acc, s| {
                let dim = (i + s.len())
                    .checked_sub(rank)
                    .map_or(Dim::Fixed(1), |k| s[k].clone());
                broadcast_dim(&acc, &dim)
            })
        })
        .collect()
}

/// Product of dimensions: exact when fixed, a lone symbol times ones keeps it.
fn dim_product(dims: &[Dim]) -> Dim {
    dims.iter()
        .fold(Dim::Fixed(1), |acc, d| dim_arith("Mul", &acc, d))
}

/// Sum along a concatenation axis: exact when fixed, a lone symbol plus zeros keeps it.
fn dim_sum(dims: &[Dim]) -> Dim {
    dims.iter()
        .fold(Dim::Fixed(0), |acc, d| dim_arith("Add", &acc, d))
}

/// A dimension grown (or shrunk) by a fixed amount.
fn dim_offset(dim: &Dim, amount: i64) -> Dim {
    match dim_arith("Add", dim, &Dim::Fixed(amount)) {
        Dim::Fixed(v) if v < 0 => Dim::Unknown,
        other => other,
    }
}

/// Integer arithmetic on known values; a symbol survives only the identities
/// (`N + 0`, `N - 0`, `N * 1`, `N / 1`, `max/min(N, N)`).
fn dim_arith(op: &str, a: &Dim, b: &Dim) -> Dim {
    use Dim::{Fixed, Symbolic};
    match (a, b) {
        (Fixed(x), Fixed(y)) => {
            let value = match op {
                "Add" => x.checked_add(*y),
                "Sub" => x.checked_sub(*y),
                "Mul" => x.checked_mul(*y),
                // ONNX integer Div truncates toward zero, as Rust's.
                "Div" => x.checked_div(*y),
                "Max" => Some(*x.max(y)),
                "Min" => Some(*x.min(y)),
                _ => None,
            };
            value.map_or(Dim::Unknown, Fixed)
        }
        (Symbolic(_), Fixed(0)) if matches!(op, "Add" | "Sub") => a.clone(),
        (Fixed(0), Symbolic(_)) if op == "Add" => b.clone(),
        (Symbolic(_), Fixed(1)) if matches!(op, "Mul" | "Div") => a.clone(),
        (Fixed(1), Symbolic(_)) if op == "Mul" => b.clone(),
        (Symbolic(x), Symbolic(y)) if x == y && matches!(op, "Max" | "Min") => a.clone(),
        _ => Dim::Unknown,
    }
}

/// The size that makes `factors` (with it) hold as many elements as `total`:
/// fixed parts divide, symbols must cancel (one left over is the answer).
fn missing_factor(total: &[Dim], factors: &[Dim]) -> Dim {
    let (Some((total_fixed, mut symbols)), Some((part_fixed, part_symbols))) =
        (element_count(total), element_count(factors))
    else {
        return Dim::Unknown;
    };
    for s in part_symbols {
        match symbols.iter().position(|t| *t == s) {
            Some(i) => {
                symbols.remove(i);
            }
            None => return Dim::Unknown,
        }
    }
    if total_fixed.checked_rem(part_fixed) != Some(0) {
        return Dim::Unknown;
    }
    match (total_fixed.checked_div(part_fixed), symbols.as_slice()) {
        (Some(q), []) => Dim::Fixed(q),
        (Some(1), [s]) => Dim::Symbolic(s.clone()),
        _ => Dim::Unknown,
    }
}

/// Element count as (product of fixed sizes, symbols); `None` with an unknown dim.
fn element_count(dims: &[Dim]) -> Option<(i64, Vec<String>)> {
    let mut fixed: i64 = 1;
    let mut symbols = Vec::new();
    for d in dims {
        match d {
            Dim::Fixed(v) => fixed = fixed.checked_mul(*v)?,
            Dim::Symbolic(s) => symbols.push(s.clone()),
            Dim::Unknown => return None,
        }
    }
    Some((fixed, symbols))
}

/// A shape-tensor element read as a dimension size (negative sizes are invalid).
fn as_size(d: &Dim) -> Dim {
    match d {
        Dim::Fixed(v) if *v < 0 => Dim::Unknown,
        other => other.clone(),
    }
}

fn without_axes(x: &[Dim], axes: &HashSet<usize>) -> Vec<Dim> {
    x.iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect()
}

/// An axis in `[-rank, rank)` as an index.
fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    (0..rank).contains(&axis).then_some(axis as usize)
}

/// An axis in `[-rank, rank]` (Flatten may split after the last axis).
fn norm_axis_inclusive(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    (0..=rank).contains(&axis).then_some(axis as usize)
}

/// A size computed in wide arithmetic, if it is a valid (non-negative) `i64`.
fn narrow(v: i128) -> Option<i64> {
    i64::try_from(v).ok().filter(|&v| v >= 0)
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) != 0 {
        q + 1
    } else {
        q
    }
}

fn static_ints(dims: &[Dim]) -> Option<Vec<i64>> {
    dims.iter()
        .map(|d| match d {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        })
        .collect()
}

fn static_dims(dims: &[Dim]) -> Option<Vec<usize>> {
    static_ints(dims)?
        .into_iter()
        .map(|v| usize::try_from(v).ok())
        .collect()
}

/// Element count of a fully static type.
fn static_count(dims: &[Dim]) -> Option<usize> {
    static_dims(dims)?
        .into_iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::builder::{attr_int, attr_ints, attr_string};
    use crate::onnx::tensor::{f32_tensor, i64_tensor};
    use crate::onnx::types::value_info;
    use crate::onnx::AttributeProto;

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
