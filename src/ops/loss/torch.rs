//! Softmax, the cross-entropy loss and OneHot: the ops of the loss subgraph.

use crate::ops::kernel::{normalize_axis, one, step, Host, NodeCtx, OpError, Prepare};
use tch::{Kind, Reduction, Tensor};

type Normalize = fn(&Tensor, i64, Option<Kind>) -> Result<Tensor, tch::TchError>;

/// Opset 13 on: along `axis` (default -1). Before: the input is coerced to 2-D at
/// `axis` (default 1) and normalised over the trailing block.
fn softmax_like(node: &NodeCtx, f: Normalize) -> Prepare {
    if node.opset >= 13 {
        let axis = node.attr_int("axis", -1);
        return step(move |ctx| {
            let x = ctx.input(0)?;
            one(f(x, normalize_axis(axis, x.dim())?, None)?)
        });
    }
    let axis = node.attr_int("axis", 1);
    step(move |ctx| {
        let x = ctx.input(0)?;
        let axis = normalize_axis(axis, x.dim())? as usize;
        let shape = x.size();
        let rows: i64 = shape[..axis].iter().product();
        let flat = x.f_reshape([rows, -1])?;
        one(f(&flat, 1, None)?.f_reshape(&shape)?)
    })
}

pub fn softmax(node: &NodeCtx) -> Prepare {
    softmax_like(node, |x, axis, kind| x.f_softmax(axis, kind))
}

pub fn log_softmax(node: &NodeCtx) -> Prepare {
    softmax_like(node, |x, axis, kind| x.f_log_softmax(axis, kind))
}

/// Scores [N, C, d...], labels [N, d...], optional class weights [C]; the mean
/// reduction divides by the summed weights of the counted labels, exactly as
/// PyTorch's `cross_entropy`. `ignore_index` has no default in ONNX: without it
/// no label is ignored (an out-of-range label is an error).
pub fn softmax_cross_entropy(node: &NodeCtx) -> Prepare {
    let reduction = match node.attr_string("reduction", "mean").as_str() {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        other => return Err(node.error(format!("unknown reduction '{other}'"))),
    };
    let ignore_index = node
        .attr("ignore_index")
        .and_then(|a| a.i)
        .unwrap_or(i64::MIN);
    let wants_log_prob = node.wants_output(1);
    step(move |ctx| {
        let scores = ctx.input(0)?;
        let labels = ctx.input(1)?.f_to_kind(Kind::Int64)?;
        let weights = ctx.opt_input(2);
        if scores.dim() < 2 {
            return Err(ctx.error(format!(
                "scores must be [N, C, ...], got shape {:?}",
                scores.size()
            )));
        }
        if !wants_log_prob {
            // libtorch's one call for log_softmax followed by nll_loss.
            return one(scores.f_cross_entropy_loss(
                &labels,
                weights,
                reduction,
                ignore_index,
                0.0,
            )?);
        }
        let log_prob = scores.f_log_softmax(1, None)?;
        let loss = log_prob.f_nll_loss_nd(&labels, weights, reduction, ignore_index)?;
        Ok(vec![loss, log_prob])
    })
}

/// `values[1]` where the (wrapped) index equals the position along the new axis,
/// `values[0]` elsewhere; indices outside [-depth, depth) give an all-off row.
/// The positions 0..depth and the two values are made once when depth and
/// values are constants of the graph.
pub fn one_hot(node: &NodeCtx) -> Prepare {
    let depth = node.scalar_input(1)?;
    let positions = match depth {
        Host::Fixed(Some(depth)) => {
            Some(Tensor::f_arange(depth as i64, (Kind::Int64, node.device))?)
        }
        _ => None,
    };
    let values = node.fixed_input(2).map(off_on).transpose()?;
    let axis = node.attr_int("axis", -1);
    step(move |ctx| {
        let indices = ctx.input(0)?.f_to_kind(Kind::Int64)?;
        let depth = depth
            .get(ctx)?
            .ok_or_else(|| ctx.error("depth is missing"))? as i64;
        let rank = indices.dim() + 1;
        let axis = normalize_axis(axis, rank)?;
        let wrapped = indices.f_where_self(&indices.f_ge(0)?, &indices.f_add_scalar(depth)?)?;
        let arange;
        let positions = match &positions {
            Some(positions) => positions,
            None => {
                arange = Tensor::f_arange(depth, (Kind::Int64, indices.device()))?;
                &arange
            }
        };
        let hot = wrapped.f_unsqueeze(-1)?.f_eq_tensor(positions)?;
        let read;
        let (off, on) = match &values {
            Some((off, on)) => (off, on),
            None => {
                read = off_on(ctx.input(2)?)?;
                (&read.0, &read.1)
            }
        };
        let encoded = on.f_where_self(&hot, off)?;
        if axis == rank as i64 - 1 {
            return one(encoded);
        }
        one(encoded.f_movedim([rank as i64 - 1], [axis])?)
    })
}

/// OneHot's `values` input as its (off, on) elements.
fn off_on(values: &Tensor) -> Result<(Tensor, Tensor), OpError> {
    if values.numel() != 2 {
        return Err(OpError("values must hold [off_value, on_value]".into()));
    }
    let flat = values.f_reshape([-1])?;
    Ok((flat.f_get(0)?, flat.f_get(1)?))
}
