//! The op registry: the one table of every ONNX op the tool knows, each defined
//! once with all its facets (as tract's `register_all_ops` and burn's one-file-
//! per-op importer do): the opset it needs, its gradient rule or an explicit
//! non-differentiable mark (ONNX Runtime's `NO_GRADIENT`), and its libtorch
//! kernel. Facets are implemented in the op's family folder; this file only says
//! which op has which. Ops are found by (domain, op type): a custom-domain op
//! with a standard name is not the standard op.

use super::grad::GradRule;
use super::{elementwise, linalg, loss, movement, nn, reduce};
use std::collections::HashMap;
use std::sync::OnceLock;

/// A libtorch kernel (the `torch` feature), or nothing.
#[cfg(feature = "torch")]
pub type Kernel = super::kernel::Op;
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
    pub gradient: Gradient,
    pub kernel: Option<Kernel>,
}

const fn op(op_type: &'static str) -> OpDef {
    OpDef {
        domain: "",
        op_type,
        since: 1,
        gradient: Gradient::Missing,
        kernel: None,
    }
}

impl OpDef {
    const fn since(mut self, opset: i64) -> Self {
        self.since = opset;
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
    op("Identity")
        .gradient(elementwise::gradient::identity)
        .kernel(torch!(elementwise::torch::identity)),
    op("Cast")
        .gradient(elementwise::gradient::cast)
        .kernel(torch!(elementwise::torch::cast)),
    op("Neg")
        .gradient(elementwise::gradient::neg)
        .kernel(torch!(elementwise::torch::neg)),
    op("Add")
        .gradient(elementwise::gradient::add)
        .kernel(torch!(elementwise::torch::add)),
    op("Sub")
        .gradient(elementwise::gradient::sub)
        .kernel(torch!(elementwise::torch::sub)),
    op("Mul")
        .gradient(elementwise::gradient::mul)
        .kernel(torch!(elementwise::torch::mul)),
    op("Div")
        .gradient(elementwise::gradient::div)
        .kernel(torch!(elementwise::torch::div)),
    op("Pow")
        .gradient(elementwise::gradient::pow)
        .kernel(torch!(elementwise::torch::pow)),
    op("Sqrt")
        .gradient(elementwise::gradient::sqrt)
        .kernel(torch!(elementwise::torch::sqrt)),
    op("Exp")
        .gradient(elementwise::gradient::exp)
        .kernel(torch!(elementwise::torch::exp)),
    op("Log")
        .gradient(elementwise::gradient::log)
        .kernel(torch!(elementwise::torch::log)),
    op("Abs")
        .gradient(elementwise::gradient::abs)
        .kernel(torch!(elementwise::torch::abs)),
    op("Reciprocal")
        .gradient(elementwise::gradient::reciprocal)
        .kernel(torch!(elementwise::torch::reciprocal)),
    op("Relu")
        .gradient(elementwise::gradient::relu)
        .kernel(torch!(elementwise::torch::relu)),
    op("LeakyRelu")
        .gradient(elementwise::gradient::leaky_relu)
        .kernel(torch!(elementwise::torch::leaky_relu)),
    op("Sigmoid")
        .gradient(elementwise::gradient::sigmoid)
        .kernel(torch!(elementwise::torch::sigmoid)),
    op("Tanh")
        .gradient(elementwise::gradient::tanh)
        .kernel(torch!(elementwise::torch::tanh)),
    op("HardSigmoid")
        .gradient(elementwise::gradient::hard_sigmoid)
        .kernel(torch!(elementwise::torch::hard_sigmoid)),
    op("HardSwish")
        .gradient(elementwise::gradient::hard_swish)
        .kernel(torch!(elementwise::torch::hard_swish)),
    op("Clip")
        .gradient(elementwise::gradient::clip)
        .kernel(torch!(elementwise::torch::clip)),
    op("Erf")
        .gradient(elementwise::gradient::erf)
        .kernel(torch!(elementwise::torch::erf)),
    op("Gelu")
        .since(20)
        .gradient(elementwise::gradient::gelu)
        .kernel(torch!(elementwise::torch::gelu)),
    op("Max")
        .gradient(elementwise::gradient::max)
        .kernel(torch!(elementwise::torch::max)),
    op("Min")
        .gradient(elementwise::gradient::min)
        .kernel(torch!(elementwise::torch::min)),
    op("Where")
        .gradient(elementwise::gradient::where_)
        .kernel(torch!(elementwise::torch::where_)),
    op("Sum")
        .gradient(elementwise::gradient::sum)
        .kernel(torch!(elementwise::torch::sum)),
    op("Equal")
        .not_differentiable()
        .kernel(torch!(elementwise::torch::equal)),
    op("Less")
        .not_differentiable()
        .kernel(torch!(elementwise::torch::less)),
    op("Greater")
        .not_differentiable()
        .kernel(torch!(elementwise::torch::greater)),
    op("LessOrEqual")
        .not_differentiable()
        .kernel(torch!(elementwise::torch::less_or_equal)),
    op("GreaterOrEqual")
        .not_differentiable()
        .kernel(torch!(elementwise::torch::greater_or_equal)),
    op("Not")
        .not_differentiable()
        .kernel(torch!(elementwise::torch::not)),
    op("And")
        .not_differentiable()
        .kernel(torch!(elementwise::torch::and)),
    op("Or")
        .not_differentiable()
        .kernel(torch!(elementwise::torch::or)),
    op("Xor").not_differentiable(),
    op("IsNaN").not_differentiable(),
    op("IsInf").not_differentiable(),
    op("Sign").not_differentiable(),
    op("Floor").not_differentiable(),
    op("Ceil").not_differentiable(),
    op("Round").not_differentiable(),
    op("RandomNormalLike").not_differentiable(),
    op("RandomUniformLike").not_differentiable(),
    op("Bernoulli").not_differentiable(),
    op("CastLike").kernel(torch!(elementwise::torch::cast_like)),
    // linalg
    op("MatMul")
        .gradient(linalg::gradient::matmul)
        .kernel(torch!(linalg::torch::matmul)),
    op("Gemm")
        .gradient(linalg::gradient::gemm)
        .kernel(torch!(linalg::torch::gemm)),
    // reduce
    op("ReduceSum")
        .gradient(reduce::gradient::reduce_sum)
        .kernel(torch!(reduce::torch::reduce_sum)),
    op("ReduceMean")
        .gradient(reduce::gradient::reduce_mean)
        .kernel(torch!(reduce::torch::reduce_mean)),
    op("ReduceL2")
        .gradient(reduce::gradient::reduce_l2)
        .kernel(torch!(reduce::torch::reduce_l2)),
    op("LpNormalization")
        .gradient(reduce::gradient::lp_normalization)
        .kernel(torch!(reduce::torch::lp_normalization)),
    op("ArgMax").not_differentiable(),
    op("ArgMin").not_differentiable(),
    op("ReduceMax").kernel(torch!(reduce::torch::reduce_max)),
    op("ReduceMin").kernel(torch!(reduce::torch::reduce_min)),
    // loss
    op("Softmax")
        .gradient(loss::gradient::softmax)
        .kernel(torch!(loss::torch::softmax)),
    op("LogSoftmax")
        .gradient(loss::gradient::log_softmax)
        .kernel(torch!(loss::torch::log_softmax)),
    op("SoftmaxCrossEntropyLoss")
        .gradient(loss::gradient::softmax_cross_entropy)
        .kernel(torch!(loss::torch::softmax_cross_entropy)),
    op("OneHot")
        .not_differentiable()
        .kernel(torch!(loss::torch::one_hot)),
    // nn
    op("Conv")
        .gradient(nn::gradient::conv)
        .kernel(torch!(nn::torch::conv)),
    op("MaxPool")
        .gradient(nn::gradient::max_pool)
        .kernel(torch!(nn::torch::max_pool)),
    op("AveragePool")
        .gradient(nn::gradient::average_pool)
        .kernel(torch!(nn::torch::average_pool)),
    op("GlobalAveragePool")
        .gradient(nn::gradient::global_average_pool)
        .kernel(torch!(nn::torch::global_average_pool)),
    op("BatchNormalization")
        .gradient(nn::gradient::batch_normalization)
        .kernel(torch!(nn::torch::batch_normalization)),
    op("LayerNormalization")
        .since(17)
        .gradient(nn::gradient::layer_normalization)
        .kernel(torch!(nn::torch::layer_normalization)),
    op("Dropout")
        .gradient(nn::gradient::dropout)
        .kernel(torch!(nn::torch::dropout)),
    // movement
    op("Flatten")
        .gradient(movement::gradient::reshape_like)
        .kernel(torch!(movement::torch::flatten)),
    op("Reshape")
        .gradient(movement::gradient::reshape_like)
        .kernel(torch!(movement::torch::reshape)),
    op("Squeeze")
        .gradient(movement::gradient::reshape_like)
        .kernel(torch!(movement::torch::squeeze)),
    op("Unsqueeze")
        .gradient(movement::gradient::reshape_like)
        .kernel(torch!(movement::torch::unsqueeze)),
    op("Transpose")
        .gradient(movement::gradient::transpose)
        .kernel(torch!(movement::torch::transpose)),
    op("Concat")
        .gradient(movement::gradient::concat)
        .kernel(torch!(movement::torch::concat)),
    op("Split")
        .gradient(movement::gradient::split)
        .kernel(torch!(movement::torch::split)),
    op("Slice")
        .gradient(movement::gradient::slice)
        .kernel(torch!(movement::torch::slice)),
    op("Pad")
        .gradient(movement::gradient::pad)
        .kernel(torch!(movement::torch::pad)),
    op("Gather")
        .gradient(movement::gradient::gather)
        .kernel(torch!(movement::torch::gather)),
    op("Expand")
        .gradient(movement::gradient::expand)
        .kernel(torch!(movement::torch::expand)),
    op("Shape")
        .not_differentiable()
        .kernel(torch!(movement::torch::shape)),
    op("Size")
        .not_differentiable()
        .kernel(torch!(movement::torch::size)),
    op("NonZero").not_differentiable(),
    op("ConstantOfShape")
        .not_differentiable()
        .kernel(torch!(movement::torch::constant_of_shape)),
    op("Range").not_differentiable(),
    op("Constant")
        .not_differentiable()
        .kernel(torch!(movement::torch::constant)),
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
