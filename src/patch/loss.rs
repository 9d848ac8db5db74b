//! The loss subgraph appended after the logits: LDAM margins and scale (or the
//! per-class scales and offsets of LA and VS), class weights chosen in the graph
//! from `epoch`, and one SoftmaxCrossEntropyLoss node.

use crate::error::{Error, Result};
use crate::ldam::{effective_number_weights, margins, LossConfig, LossKind, Reweight};
use crate::onnx::builder::{attr_int, attr_string, Emitter};
use crate::onnx::tensor::{f32_tensor, i64_tensor};
use crate::onnx::TensorProto;

/// Initializer names that users and later stages rely on.
pub const MARGINS: &str = "ldam.margins";
pub const CLASS_WEIGHTS: &str = "ldam.class_weights";
pub const SCALE: &str = "ldam.scale";
pub const DRW_EPOCH: &str = "ldam.drw_epoch";
/// Additive logit offsets `tau * log(pi)` of the LA and VS losses.
pub const LOGIT_OFFSETS: &str = "ldam.logit_offsets";
/// Multiplicative logit scales `Delta` of the VS loss.
pub const VS_SCALES: &str = "ldam.vs_scales";

/// Names of the values the loss subgraph reads and writes.
pub struct LossIo<'a> {
    pub logits: &'a str,
    pub labels: &'a str,
    pub epoch: &'a str,
    pub loss: &'a str,
}

/// Emits the loss subgraph into `b`. The named initializers must be free (checked
/// by the caller, which can report the clash).
pub fn emit(b: &mut Emitter, config: &LossConfig, io: &LossIo) -> Result<()> {
    let classes = config.class_counts.len() as i64;
    let named = |b: &mut Emitter, tensor: TensorProto| {
        let name = tensor.name().to_string();
        b.initializer(tensor).ok_or_else(|| {
            Error::patch(format!("the graph already uses the name '{name}', which the loss subgraph needs for an initializer"))
        })
    };
    let f32s = |values: Vec<f64>| values.into_iter().map(|v| v as f32).collect::<Vec<f32>>();

    let scores = match config.loss {
        LossKind::Ldam => {
            // z' = s * (z - m * onehot(y))
            let margins = named(
                b,
                f32_tensor(
                    MARGINS,
                    &[classes],
                    &f32s(margins(&config.class_counts, config.max_m)),
                ),
            )?;
            let scale = named(b, f32_tensor(SCALE, &[], &[config.scale as f32]))?;
            let depth = b.constant("depth", i64_tensor("", &[], &[classes]));
            let off_on = b.constant("onehot_values", f32_tensor("", &[2], &[0.0, 1.0]));
            let onehot = b.op(
                "OneHot",
                &[io.labels, &depth, &off_on],
                vec![attr_int("axis", -1)],
                "onehot",
            );
            let label_margins = b.mul(&onehot, &margins, "label_margins");
            let shifted = b.sub(io.logits, &label_margins, "shifted_logits");
            b.mul(&shifted, &scale, "scaled_logits")
        }
        LossKind::Ce | LossKind::Focal => io.logits.to_string(),
        LossKind::La | LossKind::Vs => {
            let (scales, offsets) = config
                .logit_affine()
                .expect("LA and VS map the logits affinely");
            // LA: z + tau log(pi); VS: Delta * z + tau log(pi).
            let scaled = if config.loss == LossKind::Vs {
                let scales = named(b, f32_tensor(VS_SCALES, &[classes], &f32s(scales)))?;
                b.mul(io.logits, &scales, "vs_scaled_logits")
            } else {
                io.logits.to_string()
            };
            let offsets = named(b, f32_tensor(LOGIT_OFFSETS, &[classes], &f32s(offsets)))?;
            b.add(&scaled, &offsets, "adjusted_logits")
        }
    };

    let weights = match config.reweight {
        Reweight::None => None,
        Reweight::Rw | Reweight::Drw => {
            let balanced = effective_number_weights(&config.class_counts, config.beta);
            let balanced = named(b, f32_tensor(CLASS_WEIGHTS, &[classes], &f32s(balanced)))?;
            Some(if config.reweight == Reweight::Drw {
                // weights = epoch >= drw_epoch ? balanced : ones
                let drw_epoch = named(b, i64_tensor(DRW_EPOCH, &[], &[config.drw_epoch]))?;
                let ones = b.constant(
                    "ones",
                    f32_tensor("", &[classes], &vec![1.0; classes as usize]),
                );
                let deferred = b.op(
                    "GreaterOrEqual",
                    &[io.epoch, &drw_epoch],
                    vec![],
                    "drw_active",
                );
                b.op(
                    "Where",
                    &[&deferred, &balanced, &ones],
                    vec![],
                    "class_weights_now",
                )
            } else {
                balanced
            })
        }
    };
    let mut sce_inputs = vec![scores.as_str(), io.labels];
    if let Some(w) = &weights {
        sce_inputs.push(w);
    }

    match config.loss {
        LossKind::Ldam | LossKind::Ce | LossKind::La | LossKind::Vs => {
            // Weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}, as PyTorch's cross_entropy.
            b.op_into(
                "SoftmaxCrossEntropyLoss",
                &sce_inputs,
                vec![attr_string("reduction", "mean")],
                io.loss,
            );
        }
        LossKind::Focal => {
            // Reference focal loss: l = w_y * ce, p = exp(-l), mean((1 - p)^gamma * l).
            let per_example = b.op(
                "SoftmaxCrossEntropyLoss",
                &sce_inputs,
                vec![attr_string("reduction", "none")],
                "per_example_loss",
            );
            let one = b.constant("one", f32_tensor("", &[], &[1.0]));
            let gamma = b.constant("gamma", f32_tensor("", &[], &[config.gamma as f32]));
            let neg = b.op("Neg", &[&per_example], vec![], "neg_loss");
            let p = b.op("Exp", &[&neg], vec![], "p_true");
            let one_minus_p = b.sub(&one, &p, "one_minus_p");
            let modulator = b.op("Pow", &[&one_minus_p, &gamma], vec![], "focal_modulator");
            let focal = b.mul(&modulator, &per_example, "focal_per_example");
            b.op_into(
                "ReduceMean",
                &[&focal],
                vec![attr_int("keepdims", 0)],
                io.loss,
            );
        }
    }
    Ok(())
}
