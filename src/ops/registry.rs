//! The op registry: the one table of every ONNX op the tool knows, each defined
//! once with all its facets (as tract's `register_all_ops` and burn's one-file-
//! per-op importer do): the opset it needs, its shape and type rule, the integer
//! contents it folds (shape arithmetic), its gradient rule or an explicit
//! non-differentiable mark (ONNX Runtime's `NO_GRADIENT`), and its libtorch
//! kernel (which prepares a node once, its attributes parsed, into the step the
//! interpreter runs). Facets are implemented in the op's family folder; this file
//! only says which op has which. Ops are found by (domain, op type): a
//! custom-domain op with a standard name is not the standard op.

use super::elementwise;
use super::grad::GradRule;
use super::linalg;
use super::loss;
use super::movement;
use super::nn;
use super::reduce;
use super::shapes::values::{Ctx, FoldRule, ShapeRule};
use crate::onnx::types::TensorType;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A libtorch kernel (the `torch` feature), or nothing.
#[cfg(feature = "torch")]
pub type Kernel = super::kernel::Kernel;
/// A libtorch kernel (the `torch` feature), or nothing.
#[cfg(not(feature = "torch"))]
pub type Kernel = std::convert::Infallible;

/// `Some(kernel)` in builds with libtorch; the path is not even resolved without.
#[cfg(feature = "torch")]
macro_rules! torch {
    ($kernel:path) => {
        Some($kernel as Kernel)
    };
}
#[cfg(not(feature = "torch"))]
macro_rules! torch {
    ($kernel:path) => {
        None
    };
}

/// How an op's inputs get gradients from its outputs'.
#[derive(Clone, Copy)]
pub enum Gradient {
    /// The rule emitting the input gradients.
    Rule(GradRule),
    /// Its outputs never carry a gradient (indices, shapes, comparisons, constants).
    NotDifferentiable,
    /// Differentiable in principle, but the tool has no rule (an error when it lies
    /// between a trainable tensor and the loss).
    Missing,
}

/// One op and its facets.
#[derive(Clone, Copy)]
pub struct OpDef {
    /// `""` for the default ONNX domain.
    pub domain: &'static str,
    pub op_type: &'static str,
    /// The earliest default-domain opset that defines the op in the form handled.
    pub since: i64,
    pub shape: Option<ShapeRule>,
    pub fold: Option<FoldRule>,
    /// Inputs that must share one element type (ONNX's type constraint `T`).
    pub same_type_inputs: &'static [usize],
    /// An input holding class indices (int32 or int64).
    pub index_input: Option<usize>,
    /// Float inputs that configure the op rather than feed it (Resize's roi and
    /// scales): an initializer read only there is not a parameter.
    pub config_inputs: &'static [usize],
    pub gradient: Gradient,
    pub kernel: Option<Kernel>,
}

const fn op(op_type: &'static str) -> OpDef {
    OpDef {
        domain: "",
        op_type,
        since: 1,
        shape: None,
        fold: None,
        same_type_inputs: &[],
        index_input: None,
        config_inputs: &[],
        gradient: Gradient::Missing,
        kernel: None,
    }
}

impl OpDef {
    const fn since(mut self, opset: i64) -> Self {
        self.since = opset;
        self
    }
    const fn one(mut self, rule: fn(&Ctx) -> Option<TensorType>) -> Self {
        self.shape = Some(ShapeRule::One(rule));
        self
    }
    const fn many(mut self, rule: fn(&Ctx) -> Vec<Option<TensorType>>) -> Self {
        self.shape = Some(ShapeRule::Many(rule));
        self
    }
    const fn fold(mut self, rule: FoldRule) -> Self {
        self.fold = Some(rule);
        self
    }
    const fn same_type(mut self, inputs: &'static [usize]) -> Self {
        self.same_type_inputs = inputs;
        self
    }
    const fn index_input(mut self, input: usize) -> Self {
        self.index_input = Some(input);
        self
    }
    const fn config_inputs(mut self, inputs: &'static [usize]) -> Self {
        self.config_inputs = inputs;
        self
    }
    const fn gradient(mut self, rule: GradRule) -> Self {
        self.gradient = Gradient::Rule(rule);
        self
    }
    const fn not_differentiable(mut self) -> Self {
        self.gradient = Gradient::NotDifferentiable;
        self
    }
    const fn kernel(mut self, kernel: Option<Kernel>) -> Self {
        self.kernel = kernel;
        self
    }

    /// The gradient rule, if the op has one.
    pub fn gradient_rule(&self) -> Option<GradRule> {
        match self.gradient {
            Gradient::Rule(rule) => Some(rule),
            _ => None,
        }
    }
}

/// The registry, by family.
const OPS: &[OpDef] = &[
    // elementwise
    op("Xor")
        .one(elementwise::shape::compare)
        .not_differentiable(),
    op("IsNaN")
        .one(elementwise::shape::boolean)
        .not_differentiable(),
    op("IsInf")
        .one(elementwise::shape::boolean)
        .not_differentiable(),
    op("Sign")
        .one(elementwise::shape::same)
        .not_differentiable(),
    op("Floor")
        .one(elementwise::shape::same)
        .not_differentiable(),
    op("Ceil")
        .one(elementwise::shape::same)
        .not_differentiable(),
    op("Round")
        .one(elementwise::shape::same)
        .not_differentiable(),
    op("RandomNormalLike").not_differentiable(),
    op("RandomUniformLike").not_differentiable(),
    op("Bernoulli").not_differentiable(),
    op("CastLike")
        .one(elementwise::shape::cast_like)
        .kernel(torch!(elementwise::torch::cast_like)),
    op("Identity")
        .one(elementwise::shape::same)
        .fold(movement::shape::same_values)
        .gradient(elementwise::gradient::identity)
        .kernel(torch!(elementwise::torch::identity)),
    op("Neg")
        .one(elementwise::shape::same)
        .fold(elementwise::shape::neg_values)
        .gradient(elementwise::gradient::neg)
        .kernel(torch!(elementwise::torch::neg)),
    op("Abs")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::abs)
        .kernel(torch!(elementwise::torch::abs)),
    op("Relu")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::relu)
        .kernel(torch!(elementwise::torch::relu)),
    op("LeakyRelu")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::leaky_relu)
        .kernel(torch!(elementwise::torch::leaky_relu)),
    op("PRelu").one(elementwise::shape::same),
    op("Sigmoid")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::sigmoid)
        .kernel(torch!(elementwise::torch::sigmoid)),
    op("Tanh")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::tanh)
        .kernel(torch!(elementwise::torch::tanh)),
    op("HardSigmoid")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::hard_sigmoid)
        .kernel(torch!(elementwise::torch::hard_sigmoid)),
    op("HardSwish")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::hard_swish)
        .kernel(torch!(elementwise::torch::hard_swish)),
    op("Exp")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::exp)
        .kernel(torch!(elementwise::torch::exp)),
    op("Log")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::log)
        .kernel(torch!(elementwise::torch::log)),
    op("Sqrt")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::sqrt)
        .kernel(torch!(elementwise::torch::sqrt)),
    op("Erf")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::erf)
        .kernel(torch!(elementwise::torch::erf)),
    op("Gelu")
        .since(20)
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::gelu)
        .kernel(torch!(elementwise::torch::gelu)),
    op("Reciprocal")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::reciprocal)
        .kernel(torch!(elementwise::torch::reciprocal)),
    op("Softplus").one(elementwise::shape::same),
    op("Softsign").one(elementwise::shape::same),
    op("Clip")
        .one(elementwise::shape::same)
        .gradient(elementwise::gradient::clip)
        .kernel(torch!(elementwise::torch::clip)),
    op("Elu").one(elementwise::shape::same),
    op("Selu").one(elementwise::shape::same),
    op("Celu").one(elementwise::shape::same),
    op("ThresholdedRelu").one(elementwise::shape::same),
    op("Mish").one(elementwise::shape::same),
    op("Sin").one(elementwise::shape::same),
    op("Cos").one(elementwise::shape::same),
    op("Tan").one(elementwise::shape::same),
    op("Asin").one(elementwise::shape::same),
    op("Acos").one(elementwise::shape::same),
    op("Atan").one(elementwise::shape::same),
    op("Sinh").one(elementwise::shape::same),
    op("Cosh").one(elementwise::shape::same),
    op("Asinh").one(elementwise::shape::same),
    op("Acosh").one(elementwise::shape::same),
    op("Atanh").one(elementwise::shape::same),
    op("Shrink").one(elementwise::shape::same),
    op("BitwiseNot").one(elementwise::shape::same),
    op("Cast")
        .one(elementwise::shape::cast)
        .fold(elementwise::shape::cast_values)
        .gradient(elementwise::gradient::cast)
        .kernel(torch!(elementwise::torch::cast)),
    op("Not")
        .one(elementwise::shape::boolean)
        .not_differentiable()
        .kernel(torch!(elementwise::torch::not)),
    op("Equal")
        .same_type(&[0, 1])
        .one(elementwise::shape::compare)
        .fold(elementwise::shape::binary_values)
        .not_differentiable()
        .kernel(torch!(elementwise::torch::equal)),
    op("Less")
        .same_type(&[0, 1])
        .one(elementwise::shape::compare)
        .not_differentiable()
        .kernel(torch!(elementwise::torch::less)),
    op("Greater")
        .same_type(&[0, 1])
        .one(elementwise::shape::compare)
        .not_differentiable()
        .kernel(torch!(elementwise::torch::greater)),
    op("LessOrEqual")
        .same_type(&[0, 1])
        .one(elementwise::shape::compare)
        .not_differentiable()
        .kernel(torch!(elementwise::torch::less_or_equal)),
    op("GreaterOrEqual")
        .same_type(&[0, 1])
        .one(elementwise::shape::compare)
        .not_differentiable()
        .kernel(torch!(elementwise::torch::greater_or_equal)),
    op("And")
        .one(elementwise::shape::compare)
        .not_differentiable()
        .kernel(torch!(elementwise::torch::and)),
    op("Or")
        .one(elementwise::shape::compare)
        .not_differentiable()
        .kernel(torch!(elementwise::torch::or)),
    op("Add")
        .same_type(&[0, 1])
        .one(elementwise::shape::arithmetic)
        .fold(elementwise::shape::binary_values)
        .gradient(elementwise::gradient::add)
        .kernel(torch!(elementwise::torch::add)),
    op("Sub")
        .same_type(&[0, 1])
        .one(elementwise::shape::arithmetic)
        .fold(elementwise::shape::binary_values)
        .gradient(elementwise::gradient::sub)
        .kernel(torch!(elementwise::torch::sub)),
    op("Mul")
        .same_type(&[0, 1])
        .one(elementwise::shape::arithmetic)
        .fold(elementwise::shape::binary_values)
        .gradient(elementwise::gradient::mul)
        .kernel(torch!(elementwise::torch::mul)),
    op("Div")
        .same_type(&[0, 1])
        .one(elementwise::shape::arithmetic)
        .fold(elementwise::shape::binary_values)
        .gradient(elementwise::gradient::div)
        .kernel(torch!(elementwise::torch::div)),
    op("Pow")
        .same_type(&[0, 1])
        .one(elementwise::shape::arithmetic)
        .gradient(elementwise::gradient::pow)
        .kernel(torch!(elementwise::torch::pow)),
    op("Mod")
        .one(elementwise::shape::arithmetic)
        .fold(elementwise::shape::binary_values)
        .kernel(torch!(elementwise::torch::modulo)),
    op("Max")
        .same_type(&[0, 1, 2, 3])
        .one(elementwise::shape::arithmetic)
        .fold(elementwise::shape::binary_values)
        .gradient(elementwise::gradient::max)
        .kernel(torch!(elementwise::torch::max)),
    op("Min")
        .same_type(&[0, 1, 2, 3])
        .one(elementwise::shape::arithmetic)
        .fold(elementwise::shape::binary_values)
        .gradient(elementwise::gradient::min)
        .kernel(torch!(elementwise::torch::min)),
    op("Sum")
        .same_type(&[0, 1, 2, 3])
        .one(elementwise::shape::arithmetic)
        .gradient(elementwise::gradient::sum)
        .kernel(torch!(elementwise::torch::sum)),
    op("Mean")
        .same_type(&[0, 1, 2, 3])
        .one(elementwise::shape::arithmetic),
    op("Where")
        .same_type(&[1, 2])
        .one(elementwise::shape::where_)
        .fold(elementwise::shape::where_values)
        .gradient(elementwise::gradient::where_)
        .kernel(torch!(elementwise::torch::where_)),
    // linalg
    op("MatMul")
        .same_type(&[0, 1])
        .one(linalg::shape::matmul)
        .gradient(linalg::gradient::matmul)
        .kernel(torch!(linalg::torch::matmul)),
    op("Gemm")
        .same_type(&[0, 1, 2])
        .one(linalg::shape::gemm)
        .gradient(linalg::gradient::gemm)
        .kernel(torch!(linalg::torch::gemm)),
    // reduce
    op("ArgMax")
        .one(reduce::shape::arg_reduce)
        .not_differentiable(),
    op("ArgMin")
        .one(reduce::shape::arg_reduce)
        .not_differentiable(),
    op("ReduceMax")
        .one(reduce::shape::reduce)
        .kernel(torch!(reduce::torch::reduce_max)),
    op("ReduceMin")
        .one(reduce::shape::reduce)
        .kernel(torch!(reduce::torch::reduce_min)),
    op("LpNormalization")
        .one(elementwise::shape::same)
        .gradient(reduce::gradient::lp_normalization)
        .kernel(torch!(reduce::torch::lp_normalization)),
    op("CumSum").one(elementwise::shape::same),
    op("ReduceSum")
        .one(reduce::shape::reduce)
        .gradient(reduce::gradient::reduce_sum)
        .kernel(torch!(reduce::torch::reduce_sum)),
    op("ReduceMean")
        .one(reduce::shape::reduce)
        .gradient(reduce::gradient::reduce_mean)
        .kernel(torch!(reduce::torch::reduce_mean)),
    op("ReduceL1").one(reduce::shape::reduce),
    op("ReduceL2")
        .one(reduce::shape::reduce)
        .gradient(reduce::gradient::reduce_l2)
        .kernel(torch!(reduce::torch::reduce_l2)),
    op("ReduceProd").one(reduce::shape::reduce),
    op("ReduceSumSquare").one(reduce::shape::reduce),
    op("ReduceLogSum").one(reduce::shape::reduce),
    op("ReduceLogSumExp").one(reduce::shape::reduce),
    op("TopK").many(reduce::shape::top_k),
    // loss
    op("Softmax")
        .one(elementwise::shape::same)
        .gradient(loss::gradient::softmax)
        .kernel(torch!(loss::torch::softmax)),
    op("LogSoftmax")
        .one(elementwise::shape::same)
        .gradient(loss::gradient::log_softmax)
        .kernel(torch!(loss::torch::log_softmax)),
    op("Hardmax").one(elementwise::shape::same),
    op("OneHot")
        .index_input(0)
        .one(loss::shape::one_hot)
        .not_differentiable()
        .kernel(torch!(loss::torch::one_hot)),
    op("SoftmaxCrossEntropyLoss")
        .index_input(1)
        .same_type(&[0, 2])
        .many(loss::shape::loss)
        .gradient(loss::gradient::softmax_cross_entropy)
        .kernel(torch!(loss::torch::softmax_cross_entropy)),
    op("NegativeLogLikelihoodLoss")
        .index_input(1)
        .many(loss::shape::loss),
    // nn
    op("InstanceNormalization").one(elementwise::shape::same),
    op("MeanVarianceNormalization").one(elementwise::shape::same),
    op("Dropout")
        .many(nn::shape::dropout)
        .gradient(nn::gradient::dropout)
        .kernel(torch!(nn::torch::dropout)),
    op("Conv")
        .one(nn::shape::conv)
        .gradient(nn::gradient::conv)
        .kernel(torch!(nn::torch::conv)),
    op("ConvTranspose").one(nn::shape::conv_transpose),
    op("MaxPool")
        .many(nn::shape::pool)
        .gradient(nn::gradient::max_pool)
        .kernel(torch!(nn::torch::max_pool)),
    op("AveragePool")
        .many(nn::shape::pool)
        .gradient(nn::gradient::average_pool)
        .kernel(torch!(nn::torch::average_pool)),
    op("LpPool").many(nn::shape::pool),
    op("GlobalAveragePool")
        .one(nn::shape::global_pool)
        .gradient(nn::gradient::global_average_pool)
        .kernel(torch!(nn::torch::global_average_pool)),
    op("GlobalMaxPool").one(nn::shape::global_pool),
    op("Resize")
        .since(11)
        .config_inputs(&[1, 2])
        .one(nn::shape::resize)
        .gradient(nn::gradient::resize)
        .kernel(torch!(nn::torch::resize)),
    op("GlobalLpPool").one(nn::shape::global_pool),
    op("BatchNormalization")
        .many(nn::shape::batch_norm)
        .gradient(nn::gradient::batch_normalization)
        .kernel(torch!(nn::torch::batch_normalization)),
    op("LayerNormalization")
        .since(17)
        .many(nn::shape::layer_norm)
        .gradient(nn::gradient::layer_normalization)
        .kernel(torch!(nn::torch::layer_normalization)),
    // movement
    op("NonZero")
        .one(movement::shape::non_zero)
        .not_differentiable(),
    op("Range")
        .one(movement::shape::range)
        .fold(movement::shape::range_values)
        .not_differentiable(),
    op("Trilu").one(elementwise::shape::same),
    op("ScatterND").one(elementwise::shape::same),
    op("GatherND")
        .one(movement::shape::gather_nd)
        .gradient(movement::gradient::gather_nd)
        .kernel(torch!(movement::torch::gather_nd)),
    op("ScatterElements")
        .one(elementwise::shape::same)
        .gradient(movement::gradient::scatter_elements)
        .kernel(torch!(movement::torch::scatter_elements)),
    op("Constant")
        .one(movement::shape::constant)
        .fold(movement::shape::constant_values)
        .not_differentiable()
        .kernel(torch!(movement::torch::constant)),
    op("Flatten")
        .one(movement::shape::flatten)
        .fold(movement::shape::same_values)
        .gradient(movement::gradient::reshape_like)
        .kernel(torch!(movement::torch::flatten)),
    op("Reshape")
        .one(movement::shape::reshape)
        .fold(movement::shape::same_values)
        .gradient(movement::gradient::reshape_like)
        .kernel(torch!(movement::torch::reshape)),
    op("Transpose")
        .one(movement::shape::transpose)
        .fold(movement::shape::transpose_values)
        .gradient(movement::gradient::transpose)
        .kernel(torch!(movement::torch::transpose)),
    op("Squeeze")
        .one(movement::shape::squeeze)
        .fold(movement::shape::same_values)
        .gradient(movement::gradient::reshape_like)
        .kernel(torch!(movement::torch::squeeze)),
    op("Unsqueeze")
        .one(movement::shape::unsqueeze)
        .fold(movement::shape::same_values)
        .gradient(movement::gradient::reshape_like)
        .kernel(torch!(movement::torch::unsqueeze)),
    op("Concat")
        .same_type(&[0, 1, 2, 3])
        .one(movement::shape::concat)
        .fold(movement::shape::concat_values)
        .gradient(movement::gradient::concat)
        .kernel(torch!(movement::torch::concat)),
    op("Slice")
        .one(movement::shape::slice)
        .fold(movement::shape::slice_values)
        .gradient(movement::gradient::slice)
        .kernel(torch!(movement::torch::slice)),
    op("Pad")
        .one(movement::shape::pad)
        .gradient(movement::gradient::pad)
        .kernel(torch!(movement::torch::pad)),
    op("Gather")
        .one(movement::shape::gather)
        .fold(movement::shape::gather_values)
        .gradient(movement::gradient::gather)
        .kernel(torch!(movement::torch::gather)),
    op("Expand")
        .one(movement::shape::expand)
        .gradient(movement::gradient::expand)
        .kernel(torch!(movement::torch::expand)),
    op("Tile")
        .one(movement::shape::tile)
        .gradient(movement::gradient::tile)
        .kernel(torch!(movement::torch::tile)),
    op("Split")
        .many(movement::shape::split)
        .gradient(movement::gradient::split)
        .kernel(torch!(movement::torch::split)),
    op("GatherElements")
        .one(movement::shape::gather_elements)
        .gradient(movement::gradient::gather_elements)
        .kernel(torch!(movement::torch::gather_elements)),
    op("Shape")
        .one(movement::shape::shape_of)
        .fold(movement::shape::shape_values)
        .not_differentiable()
        .kernel(torch!(movement::torch::shape)),
    op("Size")
        .one(movement::shape::size)
        .fold(movement::shape::size_values)
        .not_differentiable()
        .kernel(torch!(movement::torch::size)),
    op("ConstantOfShape")
        .one(movement::shape::constant_of_shape)
        .fold(movement::shape::fill_values)
        .not_differentiable()
        .kernel(torch!(movement::torch::constant_of_shape)),
];

/// The domain as the registry keys it: the default domain has two spellings.
fn canonical_domain(domain: &str) -> &str {
    match domain {
        "ai.onnx" => "",
        other => other,
    }
}

/// The op `op_type` of `domain`, if the tool knows it.
pub fn find(domain: &str, op_type: &str) -> Option<&'static OpDef> {
    static INDEX: OnceLock<HashMap<(&'static str, &'static str), &'static OpDef>> = OnceLock::new();
    INDEX
        .get_or_init(|| OPS.iter().map(|d| ((d.domain, d.op_type), d)).collect())
        .get(&(canonical_domain(domain), op_type))
        .copied()
}

/// The op a node runs at the model's default-domain `opset`, if the tool knows it.
pub fn for_node(node: &crate::onnx::NodeProto, opset: i64) -> Option<&'static OpDef> {
    find(node.domain(), node.op_type()).filter(|d| d.domain != "" || d.since <= opset)
}

/// Every op in the registry, in table order.
pub fn all() -> &'static [OpDef] {
    OPS
}

/// The default-domain ops with a gradient rule, sorted.
pub fn differentiable_ops() -> Vec<&'static str> {
    sorted(|d| d.gradient_rule().is_some())
}

/// The default-domain ops with a libtorch kernel, sorted.
pub fn kernel_ops() -> Vec<&'static str> {
    sorted(|d| d.kernel.is_some())
}

fn sorted(keep: impl Fn(&OpDef) -> bool) -> Vec<&'static str> {
    let mut ops: Vec<&str> = OPS
        .iter()
        .filter(|d| d.domain.is_empty() && keep(d))
        .map(|d| d.op_type)
        .collect();
    ops.sort_unstable();
    ops
}
