//! The gradient rules, one small function per op, registered in one table.
//!
//! A rule returns one entry per node input: the gradient for inputs that
//! `ctx.needs(k)`, `None` otherwise.

mod elementwise;
mod linalg;
mod loss;
mod nn;
mod reduce;
mod shape;

use super::GradCtx;
use crate::error::Result;

pub type Rule = fn(&mut GradCtx) -> Result<Vec<Option<String>>>;

/// The registry: op type -> rule.
const RULES: &[(&str, Rule)] = &[
    ("Identity", elementwise::identity),
    ("Cast", elementwise::cast),
    ("Neg", elementwise::neg),
    ("Add", elementwise::add),
    ("Sub", elementwise::sub),
    ("Mul", elementwise::mul),
    ("Div", elementwise::div),
    ("Pow", elementwise::pow),
    ("Sqrt", elementwise::sqrt),
    ("Exp", elementwise::exp),
    ("Log", elementwise::log),
    ("Abs", elementwise::abs),
    ("Reciprocal", elementwise::reciprocal),
    ("Relu", elementwise::relu),
    ("LeakyRelu", elementwise::leaky_relu),
    ("Sigmoid", elementwise::sigmoid),
    ("Tanh", elementwise::tanh),
    ("HardSigmoid", elementwise::hard_sigmoid),
    ("HardSwish", elementwise::hard_swish),
    ("Clip", elementwise::clip),
    ("Erf", elementwise::erf),
    ("Gelu", elementwise::gelu),
    ("Max", elementwise::max),
    ("Min", elementwise::min),
    ("Where", elementwise::where_),
    ("Sum", elementwise::sum),
    ("MatMul", linalg::matmul),
    ("Gemm", linalg::gemm),
    ("ReduceSum", reduce::reduce_sum),
    ("ReduceMean", reduce::reduce_mean),
    ("ReduceL2", reduce::reduce_l2),
    ("Softmax", loss::softmax),
    ("LogSoftmax", loss::log_softmax),
    ("SoftmaxCrossEntropyLoss", loss::softmax_cross_entropy),
    ("LpNormalization", reduce::lp_normalization),
    ("Conv", nn::conv),
    ("MaxPool", nn::max_pool),
    ("AveragePool", nn::average_pool),
    ("GlobalAveragePool", nn::global_average_pool),
    ("BatchNormalization", nn::batch_normalization),
    ("LayerNormalization", nn::layer_normalization),
    ("Dropout", nn::dropout),
    ("Flatten", shape::reshape_like),
    ("Reshape", shape::reshape_like),
    ("Squeeze", shape::reshape_like),
    ("Unsqueeze", shape::reshape_like),
    ("Transpose", shape::transpose),
    ("Concat", shape::concat),
    ("Split", shape::split),
    ("Slice", shape::slice),
    ("Pad", shape::pad),
    ("Gather", shape::gather),
    ("Expand", shape::expand),
];

pub fn rule_for(op: &str) -> Option<Rule> {
    RULES
        .iter()
        .find(|(name, _)| *name == op)
        .map(|(_, rule)| *rule)
}

/// Every op with a gradient rule, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut ops: Vec<&str> = RULES.iter().map(|(name, _)| *name).collect();
    ops.sort_unstable();
    ops
}
