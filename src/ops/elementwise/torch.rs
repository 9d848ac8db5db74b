//! Element-wise ops. libtorch broadcasts exactly as ONNX's multidirectional
//! broadcasting (numpy rules), so binary ops map one to one.

use crate::ops::kernel::{one, step, NodeCtx, Prepare};
use crate::ops::torch_tensor::kind_of;
use tch::{Kind, Tensor};

type Unary = fn(&Tensor) -> Result<Tensor, tch::TchError>;
type Binary = fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>;

fn unary(f: Unary) -> Prepare {
    step(move |ctx| one(f(ctx.input(0)?)?))
}

fn binary(f: Binary) -> Prepare {
    step(move |ctx| one(f(ctx.input(0)?, ctx.input(1)?)?))
}

/// `f` folded over the present inputs, left to right.
fn variadic(node: &NodeCtx, f: Binary) -> Prepare {
    if !(0..node.node.input.len()).any(|i| node.has_input(i)) {
        return Err(node.error("needs at least one input"));
    }
    step(move |ctx| {
        let mut inputs = ctx.present_inputs();
        let first = inputs
            .next()
            .ok_or_else(|| ctx.error("needs at least one input"))?;
        let acc = match inputs.next() {
            None => return one(first.shallow_clone()),
            Some(second) => f(first, second)?,
        };
        one(inputs.try_fold(acc, |acc, x| f(&acc, x))?)
    })
}

pub fn identity(_: &NodeCtx) -> Prepare {
    step(|ctx| one(ctx.input(0)?.shallow_clone()))
}

pub fn cast(node: &NodeCtx) -> Prepare {
    let to = node.attr_int("to", 0);
    let kind = kind_of(to as i32)
        .ok_or_else(|| node.error(format!("cannot cast to element type {to}")))?;
    step(move |ctx| one(ctx.input(0)?.f_to_kind(kind)?))
}

pub fn cast_like(_: &NodeCtx) -> Prepare {
    step(|ctx| one(ctx.input(0)?.f_to_kind(ctx.input(1)?.kind())?))
}

pub fn neg(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_neg)
}
pub fn add(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_add)
}
pub fn sub(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_sub)
}
pub fn mul(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_mul)
}
/// ONNX Mod: the divisor's sign (Python's %, libtorch's remainder), or C's
/// fmod with `fmod=1`.
pub fn modulo(node: &NodeCtx) -> Prepare {
    use crate::onnx::NodeAttributes;
    if node.node.int_attr("fmod", 0) != 0 {
        binary(Tensor::f_fmod_tensor)
    } else {
        binary(Tensor::f_remainder_tensor)
    }
}

/// Integer division truncates (ONNX Div on integer types), float division is exact.
pub fn div(_: &NodeCtx) -> Prepare {
    step(|ctx| {
        let (a, b) = (ctx.input(0)?, ctx.input(1)?);
        if is_integral(a.kind()) {
            one(a.f_div_tensor_mode(b, "trunc")?)
        } else {
            one(a.f_div(b)?)
        }
    })
}

fn is_integral(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
    )
}

/// The result has the base's type (ONNX), libtorch would promote.
pub fn pow(_: &NodeCtx) -> Prepare {
    step(|ctx| {
        let x = ctx.input(0)?;
        one(x.f_pow(ctx.input(1)?)?.f_to_kind(x.kind())?)
    })
}
pub fn sqrt(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_sqrt)
}
pub fn exp(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_exp)
}
pub fn log(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_log)
}
pub fn abs(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_abs)
}
pub fn reciprocal(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_reciprocal)
}
pub fn relu(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_relu)
}
pub fn sigmoid(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_sigmoid)
}
pub fn tanh(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_tanh)
}
pub fn erf(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_erf)
}

/// `x if x >= 0 else alpha * x`, alpha default 0.01.
pub fn leaky_relu(node: &NodeCtx) -> Prepare {
    let alpha = f64::from(node.attr_float("alpha", 0.01));
    step(move |ctx| {
        let x = ctx.input(0)?;
        one(x.f_where_self(&x.f_ge(0.0)?, &x.f_mul_scalar(alpha)?)?)
    })
}

/// `max(0, min(1, alpha * x + beta))`, alpha 0.2 and beta 0.5 by default.
pub fn hard_sigmoid(node: &NodeCtx) -> Prepare {
    let alpha = f64::from(node.attr_float("alpha", 0.2));
    let beta = f64::from(node.attr_float("beta", 0.5));
    step(move |ctx| {
        let affine = ctx.input(0)?.f_mul_scalar(alpha)?.f_add_scalar(beta)?;
        one(affine.f_clamp(0.0, 1.0)?)
    })
}

/// `x * max(0, min(1, x / 6 + 1/2))`: libtorch's hardswish.
pub fn hard_swish(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_hardswish)
}

/// Bounds are inputs from opset 11, attributes before; absent bounds do not clip.
pub fn clip(node: &NodeCtx) -> Prepare {
    if node.opset >= 11 {
        return step(|ctx| {
            let x = ctx.input(0)?;
            one(match (ctx.opt_input(1), ctx.opt_input(2)) {
                (None, None) => x.shallow_clone(),
                (low, high) => x.f_clamp_tensor(low, high)?,
            })
        });
    }
    let low = node.attr("min").and_then(|a| a.f).map(f64::from);
    let high = node.attr("max").and_then(|a| a.f).map(f64::from);
    step(move |ctx| {
        let x = ctx.input(0)?;
        one(match (low, high) {
            (None, None) => x.shallow_clone(),
            (Some(low), None) => x.f_clamp_min(low)?,
            (None, Some(high)) => x.f_clamp_max(high)?,
            (Some(low), Some(high)) => x.f_clamp(low, high)?,
        })
    })
}

/// `approximate` is "none" (erf) or "tanh" (opset 20).
pub fn gelu(node: &NodeCtx) -> Prepare {
    let approximate = node.attr_string("approximate", "none");
    if approximate != "none" && approximate != "tanh" {
        return Err(node.error(format!("unknown approximate '{approximate}'")));
    }
    step(move |ctx| one(ctx.input(0)?.f_gelu(&approximate)?))
}

pub fn max(node: &NodeCtx) -> Prepare {
    variadic(node, Tensor::f_maximum)
}
pub fn min(node: &NodeCtx) -> Prepare {
    variadic(node, Tensor::f_minimum)
}
pub fn sum(node: &NodeCtx) -> Prepare {
    variadic(node, Tensor::f_add)
}

pub fn where_(_: &NodeCtx) -> Prepare {
    step(|ctx| {
        let condition = ctx.input(0)?;
        let (x, y) = (ctx.input(1)?, ctx.input(2)?);
        one(if condition.kind() == Kind::Bool {
            x.f_where_self(condition, y)?
        } else {
            x.f_where_self(&condition.f_to_kind(Kind::Bool)?, y)?
        })
    })
}

pub fn equal(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_eq_tensor)
}
pub fn greater(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_gt_tensor)
}
pub fn greater_or_equal(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_ge_tensor)
}
pub fn less(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_lt_tensor)
}
pub fn less_or_equal(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_le_tensor)
}
pub fn not(_: &NodeCtx) -> Prepare {
    unary(Tensor::f_logical_not)
}
pub fn and(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_logical_and)
}
pub fn or(_: &NodeCtx) -> Prepare {
    binary(Tensor::f_logical_or)
}
