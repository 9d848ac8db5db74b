//! Element-wise ops. libtorch broadcasts exactly as ONNX's multidirectional
//! broadcasting (numpy rules), so binary ops map one to one.

use crate::ops::kernel::{one, OpCtx, OpResult};
use crate::ops::torch_tensor::kind_of;
use tch::{Kind, Tensor};

fn unary(ctx: &OpCtx, f: fn(&Tensor) -> Result<Tensor, tch::TchError>) -> OpResult {
    one(f(ctx.input(0)?)?)
}

fn binary(ctx: &OpCtx, f: fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>) -> OpResult {
    one(f(ctx.input(0)?, ctx.input(1)?)?)
}

fn variadic(ctx: &OpCtx, f: fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>) -> OpResult {
    let inputs = ctx.present_inputs();
    let (first, rest) = inputs
        .split_first()
        .ok_or_else(|| ctx.error("needs at least one input"))?;
    let mut acc = first.shallow_clone();
    for x in rest {
        acc = f(&acc, x)?;
    }
    one(acc)
}

pub fn identity(ctx: &OpCtx) -> OpResult {
    one(ctx.input(0)?.shallow_clone())
}

pub fn cast(ctx: &OpCtx) -> OpResult {
    let to = ctx.attr_int("to", 0);
    let kind =
        kind_of(to as i32).ok_or_else(|| ctx.error(format!("cannot cast to element type {to}")))?;
    one(ctx.input(0)?.f_to_kind(kind)?)
}

pub fn cast_like(ctx: &OpCtx) -> OpResult {
    one(ctx.input(0)?.f_to_kind(ctx.input(1)?.kind())?)
}

pub fn neg(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_neg)
}
pub fn add(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_add)
}
pub fn sub(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_sub)
}
pub fn mul(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_mul)
}

/// Integer division truncates (ONNX Div on integer types), float division is exact.
pub fn div(ctx: &OpCtx) -> OpResult {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    if is_integral(a.kind()) {
        one(a.f_div_tensor_mode(b, "trunc")?)
    } else {
        one(a.f_div(b)?)
    }
}

fn is_integral(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
    )
}

pub fn pow(ctx: &OpCtx) -> OpResult {
    // The result has the base's type (ONNX), libtorch would promote.
    let x = ctx.input(0)?;
    one(x.f_pow(ctx.input(1)?)?.f_to_kind(x.kind())?)
}
pub fn sqrt(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_sqrt)
}
pub fn exp(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_exp)
}
pub fn log(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_log)
}
pub fn abs(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_abs)
}
pub fn reciprocal(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_reciprocal)
}
pub fn relu(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_relu)
}
pub fn sigmoid(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_sigmoid)
}
pub fn tanh(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_tanh)
}
pub fn erf(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_erf)
}

/// `x if x >= 0 else alpha * x`, alpha default 0.01.
pub fn leaky_relu(ctx: &OpCtx) -> OpResult {
    let x = ctx.input(0)?;
    let alpha = f64::from(ctx.attr_float("alpha", 0.01));
    one(x.f_where_self(&x.f_ge(0.0)?, &x.f_mul_scalar(alpha)?)?)
}

/// `max(0, min(1, alpha * x + beta))`, alpha 0.2 and beta 0.5 by default.
pub fn hard_sigmoid(ctx: &OpCtx) -> OpResult {
    let alpha = f64::from(ctx.attr_float("alpha", 0.2));
    let beta = f64::from(ctx.attr_float("beta", 0.5));
    let affine = ctx.input(0)?.f_mul_scalar(alpha)?.f_add_scalar(beta)?;
    one(affine.f_clamp(0.0, 1.0)?)
}

/// `x * max(0, min(1, x / 6 + 1/2))`: libtorch's hardswish.
pub fn hard_swish(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_hardswish)
}

/// Bounds are inputs from opset 11, attributes before; absent bounds do not clip.
pub fn clip(ctx: &OpCtx) -> OpResult {
    let mut x = ctx.input(0)?.shallow_clone();
    if ctx.opset >= 11 {
        if let Some(low) = ctx.opt_input(1) {
            x = x.f_clamp_min_tensor(low)?;
        }
        if let Some(high) = ctx.opt_input(2) {
            x = x.f_clamp_max_tensor(high)?;
        }
    } else {
        if let Some(low) = ctx.attr("min").and_then(|a| a.f) {
            x = x.f_clamp_min(f64::from(low))?;
        }
        if let Some(high) = ctx.attr("max").and_then(|a| a.f) {
            x = x.f_clamp_max(f64::from(high))?;
        }
    }
    one(x)
}

/// `approximate` is "none" (erf) or "tanh" (opset 20).
pub fn gelu(ctx: &OpCtx) -> OpResult {
    let approximate = ctx.attr_string("approximate", "none");
    if approximate != "none" && approximate != "tanh" {
        return Err(ctx.error(format!("unknown approximate '{approximate}'")));
    }
    one(ctx.input(0)?.f_gelu(&approximate)?)
}

pub fn max(ctx: &OpCtx) -> OpResult {
    variadic(ctx, Tensor::f_maximum)
}
pub fn min(ctx: &OpCtx) -> OpResult {
    variadic(ctx, Tensor::f_minimum)
}
pub fn sum(ctx: &OpCtx) -> OpResult {
    variadic(ctx, Tensor::f_add)
}

pub fn where_(ctx: &OpCtx) -> OpResult {
    let condition = ctx.input(0)?.f_to_kind(Kind::Bool)?;
    one(ctx.input(1)?.f_where_self(&condition, ctx.input(2)?)?)
}

pub fn equal(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_eq_tensor)
}
pub fn greater(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_gt_tensor)
}
pub fn greater_or_equal(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_ge_tensor)
}
pub fn less(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_lt_tensor)
}
pub fn less_or_equal(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_le_tensor)
}
pub fn not(ctx: &OpCtx) -> OpResult {
    unary(ctx, Tensor::f_logical_not)
}
pub fn and(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_logical_and)
}
pub fn or(ctx: &OpCtx) -> OpResult {
    binary(ctx, Tensor::f_logical_or)
}
