//! What a libtorch kernel is. Each op's kernel (in its family's `torch.rs`,
//! registered in the op registry) is called once per node when the interpreter's
//! program is built: it reads the node's attributes through [`NodeCtx`], with the
//! ONNX default written at the point of use, and the inputs the graph fixes
//! (shapes, axes, pads that are constants), and returns the [`Step`] that runs on
//! every execution and sees only tensors ([`OpCtx`]). So no attribute is looked
//! up, no string compared and no constant read back from the device per step.

use crate::onnx::{AttributeProto, NodeAttributes, NodeProto, TensorProto};
use crate::ops::torch_tensor as convert;
use std::borrow::Cow;
use tch::{Device, Kind, Tensor};

/// Why an op failed; the interpreter adds the node's label.
#[derive(Debug)]
pub struct OpError(pub String);

impl From<tch::TchError> for OpError {
    fn from(e: tch::TchError) -> Self {
        OpError(e.to_string())
    }
}

impl From<crate::Error> for OpError {
    fn from(e: crate::Error) -> Self {
        OpError(e.to_string())
    }
}

/// A node's outputs in order (an optional output nobody reads may be left out).
pub type OpResult = std::result::Result<Vec<Tensor>, OpError>;

/// One execution of a prepared node.
pub type Step = Box<dyn Fn(&OpCtx) -> OpResult + Send>;

/// A node as its kernel prepared it.
pub enum Prepared {
    /// Runs on every execution.
    Step(Step),
    /// Outputs the graph alone determines (a Constant), computed once.
    Fixed(Vec<Tensor>),
}

pub type Prepare = std::result::Result<Prepared, OpError>;

/// A libtorch kernel: prepares one node.
pub type Kernel = fn(&NodeCtx) -> Prepare;

/// The prepared form of a node that runs `f` on every execution.
pub fn step(f: impl Fn(&OpCtx) -> OpResult + Send + 'static) -> Prepare {
    Ok(Prepared::Step(Box::new(f)))
}

/// What a kernel sees of a node when the program is built.
pub struct NodeCtx<'a> {
    pub node: &'a NodeProto,
    pub opset: i64,
    /// Where the node's tensors live: constants are made there once.
    pub device: Device,
    /// Per node input: its value when the graph fixes it (an initializer that is
    /// not trained state, a Constant's output).
    fixed: Vec<Option<&'a Tensor>>,
    /// Per node input: whether an earlier node computes it (not a graph input or
    /// an initializer).
    computed: Vec<bool>,
}

impl<'a> NodeCtx<'a> {
    pub fn new(
        node: &'a NodeProto,
        opset: i64,
        device: Device,
        fixed: Vec<Option<&'a Tensor>>,
    ) -> Self {
        NodeCtx {
            node,
            opset,
            device,
            fixed,
            computed: Vec::new(),
        }
    }

    /// Records which inputs earlier nodes compute.
    pub fn with_computed(mut self, computed: Vec<bool>) -> Self {
        self.computed = computed;
        self
    }

    /// Whether input `i` is computed by an earlier node of the graph.
    pub fn is_computed(&self, i: usize) -> bool {
        self.computed.get(i).copied().unwrap_or(false)
    }

    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        self.node.int_attr(name, default)
    }

    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        self.node.float_attr(name, default)
    }

    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.node.ints_attr(name).map(<[i64]>::to_vec)
    }

    pub fn attr_string(&self, name: &str, default: &str) -> String {
        self.node.string_attr(name).unwrap_or(default).to_string()
    }

    /// The raw attribute, for ops whose attributes come in alternative forms.
    pub fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        crate::onnx::attribute(self.node, name)
    }

    pub fn attr_tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.node.tensor_attr(name)
    }

    /// Whether output `index` is read by anything (named in the node).
    pub fn wants_output(&self, index: usize) -> bool {
        self.node.output.get(index).is_some_and(|o| !o.is_empty())
    }

    /// Whether input `index` is given (named in the node).
    pub fn has_input(&self, index: usize) -> bool {
        self.node.input.get(index).is_some_and(|i| !i.is_empty())
    }

    /// Input `index`'s value when the graph fixes it.
    pub fn fixed_input(&self, index: usize) -> Option<&'a Tensor> {
        self.fixed.get(index).copied().flatten()
    }

    /// An integer input the op needs on the host (shapes, axes, pads, slice
    /// bounds): read here when the graph fixes it, else on every step.
    pub fn ints_input(&self, index: usize) -> Result<Host<Vec<i64>>, OpError> {
        if !self.has_input(index) {
            return Ok(Host::Fixed(None));
        }
        match self.fixed_input(index) {
            Some(t) => Ok(Host::Fixed(Some(convert::i64_vec(t)?))),
            None => Ok(Host::Input(index)),
        }
    }

    /// A scalar input the op needs on the host, as f64 (ratios, depths, fill values).
    pub fn scalar_input(&self, index: usize) -> Result<Host<f64>, OpError> {
        if !self.has_input(index) {
            return Ok(Host::Fixed(None));
        }
        match self.fixed_input(index) {
            Some(t) => Ok(Host::Fixed(Some(scalar(t)?))),
            None => Ok(Host::Input(index)),
        }
    }

    /// Axes the op lists: an attribute before `input_from_opset`, input `index` from it.
    pub fn axes(&self, input_from_opset: i64, index: usize) -> Result<Host<Vec<i64>>, OpError> {
        if self.opset >= input_from_opset {
            self.ints_input(index)
        } else {
            Ok(Host::Fixed(self.attr_ints("axes")))
        }
    }

    pub fn error(&self, reason: impl Into<String>) -> OpError {
        OpError(reason.into())
    }
}

/// A value an op needs on the host: known when the program is built (`None` for
/// an omitted optional input or absent attribute), or read from input `index` on
/// every step.
pub enum Host<T> {
    Fixed(Option<T>),
    Input(usize),
}

impl Host<Vec<i64>> {
    /// The values, `None` when omitted.
    pub fn get(&self, ctx: &OpCtx) -> Result<Option<Cow<'_, [i64]>>, OpError> {
        match self {
            Host::Fixed(values) => Ok(values.as_deref().map(Cow::Borrowed)),
            Host::Input(index) => match ctx.opt_input(*index) {
                Some(t) => Ok(Some(Cow::Owned(convert::i64_vec(t)?))),
                None => Ok(None),
            },
        }
    }

    /// The values of an input the op requires (`what` names it in the error).
    pub fn required(&self, ctx: &OpCtx, what: &str) -> Result<Cow<'_, [i64]>, OpError> {
        self.get(ctx)?
            .ok_or_else(|| OpError(format!("{what} is missing")))
    }
}

impl Host<f64> {
    pub fn get(&self, ctx: &OpCtx) -> Result<Option<f64>, OpError> {
        match self {
            Host::Fixed(value) => Ok(*value),
            Host::Input(index) => ctx.opt_input(*index).map(scalar).transpose(),
        }
    }
}

/// A one-element tensor read to the host as f64.
fn scalar(t: &Tensor) -> Result<f64, OpError> {
    Ok(t.f_to_kind(Kind::Double)?.f_double_value(&[])?)
}

/// What a prepared node sees of one execution: its input tensors.
pub struct OpCtx<'a> {
    /// Training step (BatchNorm in training mode uses batch statistics, Dropout
    /// follows its `training_mode` input) rather than evaluation.
    pub training: bool,
    /// Per node input, its value slot; `None` for an omitted optional input.
    inputs: &'a [Option<usize>],
    values: &'a [Option<Tensor>],
}

impl<'a> OpCtx<'a> {
    pub fn new(training: bool, inputs: &'a [Option<usize>], values: &'a [Option<Tensor>]) -> Self {
        OpCtx {
            training,
            inputs,
            values,
        }
    }

    pub fn input(&self, index: usize) -> Result<&'a Tensor, OpError> {
        self.opt_input(index)
            .ok_or_else(|| OpError(format!("input {index} is missing")))
    }

    pub fn opt_input(&self, index: usize) -> Option<&'a Tensor> {
        let slot = self.inputs.get(index).copied().flatten()?;
        self.values.get(slot)?.as_ref()
    }

    /// The present inputs, in order (variadic ops).
    pub fn present_inputs(&self) -> impl Iterator<Item = &'a Tensor> + '_ {
        (0..self.inputs.len()).filter_map(|i| self.opt_input(i))
    }

    pub fn error(&self, reason: impl Into<String>) -> OpError {
        OpError(reason.into())
    }
}

/// `axis` (possibly negative) as an index into `rank` dimensions.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<i64, OpError> {
    let rank = rank as i64;
    let resolved = if axis < 0 { axis + rank } else { axis };
    if (0..rank.max(1)).contains(&resolved) {
        Ok(resolved)
    } else {
        Err(OpError(format!(
            "axis {axis} is out of range for rank {rank}"
        )))
    }
}

/// [`normalize_axis`] of each axis; borrowed when all are indices already.
pub fn normalize_axes(axes: &[i64], rank: usize) -> Result<Cow<'_, [i64]>, OpError> {
    if axes.iter().all(|&a| (0..rank as i64).contains(&a)) {
        return Ok(Cow::Borrowed(axes));
    }
    axes.iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>, _>>()
        .map(Cow::Owned)
}

pub fn one(t: Tensor) -> OpResult {
    Ok(vec![t])
}
