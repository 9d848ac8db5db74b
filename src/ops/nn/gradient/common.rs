//! What every neural-network gradient rule shares: its result type, its error
//! and the typing of a gradient shaped like an input.

use crate::error::{Error, Result};
use crate::ops::grad::GradCtx;

pub(super) type Grads = Result<Vec<Option<String>>>;

pub(super) fn unsupported(ctx: &GradCtx, what: String) -> Error {
    Error::invalid(format!("{} gradient: {what}", ctx.node.op_type()))
}

/// Records `value` as having `like`'s type (a gradient shaped like its input).
pub(super) fn typed_like(ctx: &mut GradCtx, value: String, like: &str) -> String {
    if let Some(ty) = ctx.shapes.get(like).cloned() {
        ctx.shapes.insert(&value, ty);
    }
    value
}
