//! Data-movement ops: reshapes, transposes, concatenation, slicing, padding, gathering.

use crate::autodiff::GradCtx;
use crate::error::{Error, Result};

type Grads = Result<Vec<Option<String>>>;

fn pending(ctx: &GradCtx) -> Grads {
    Err(Error::invalid(format!(
        "{} gradient is not implemented yet",
        ctx.node.op_type()
    )))
}

pub fn reshape_like(ctx: &mut GradCtx) -> Grads {
    pending(ctx)
}
pub fn transpose(ctx: &mut GradCtx) -> Grads {
    pending(ctx)
}
pub fn concat(ctx: &mut GradCtx) -> Grads {
    pending(ctx)
}
pub fn split(ctx: &mut GradCtx) -> Grads {
    pending(ctx)
}
pub fn slice(ctx: &mut GradCtx) -> Grads {
    pending(ctx)
}
pub fn pad(ctx: &mut GradCtx) -> Grads {
    pending(ctx)
}
pub fn gather(ctx: &mut GradCtx) -> Grads {
    pending(ctx)
}
pub fn expand(ctx: &mut GradCtx) -> Grads {
    pending(ctx)
}
