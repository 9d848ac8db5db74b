//! Post-hoc adjustment of a trained, deployable classifier: the logit adjustment
//! of Menon et al. (ICLR 2021), `z_j - tau * log(pi_j)`, and the
//! tau-normalisation of Kang et al. (ICLR 2020), `w_j / ||w_j||_2^p` for the final
//! linear layer's class weights. Both are graph rewrites of a plain inference
//! model; the result is again a plain inference model.

use crate::counts::CountsSource;
use crate::error::{Error, Result};
use crate::ldam::contract::{self, keys, PatchRecord, PATCH_PREFIX};
use crate::ldam::{check_counts, logit_offsets, tau_normalized};
use crate::onnx::builder::{Emitter, NameSet};
use crate::onnx::tensor::{f32_tensor, f32_values};
use crate::onnx::{default_opset, metadata, ModelProto};
use crate::ops::validate;
use crate::patch::head::{self, Head};

/// What to change in the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdjustOptions {
    /// `tau` of the post-hoc logit adjustment: the logits become `z - tau * log(pi)`.
    pub logit_adjust: Option<f64>,
    /// `p` of the tau-normalisation: class weights `w_j / ||w_j||^p`.
    pub tau_norm: Option<f64>,
    /// Training examples per class (`pi_j = n_j / sum n`); `None` takes the
    /// counts the model records (`train` writes them into `model.onnx`).
    pub class_counts: Option<CountsSource>,
    /// The value holding the logits; `None` takes the one `patch` recorded, or
    /// the single float `[N, C]` output.
    pub logits: Option<String>,
}

/// Initializer holding the subtracted offsets `tau * log(pi)`.
pub const LOGIT_ADJUSTMENT: &str = "ldam.posthoc_logit_offsets";

/// What [`adjust`] did, for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct AdjustSummary {
    pub logits: String,
    pub classes: usize,
    /// The offsets subtracted from the logits, when logit adjustment was asked for.
    pub offsets: Option<Vec<f64>>,
    /// The weight that was tau-normalised and its class norms before.
    pub normalized: Option<(String, Vec<f64>)>,
}

/// The adjusted model. Errors name the setting at fault; a model without an
/// adjustable head names what produces its logits.
pub fn adjust(model: &ModelProto, options: &AdjustOptions) -> Result<(ModelProto, AdjustSummary)> {
    if options.logit_adjust.is_none() && options.tau_norm.is_none() {
        return Err(Error::config(
            "nothing to adjust: set logit_adjust, tau_norm or both",
        ));
    }
    for (setting, value) in [
        ("logit_adjust", options.logit_adjust),
        ("tau_norm", options.tau_norm),
    ] {
        if let Some(v) = value.filter(|v| !v.is_finite()) {
            return Err(Error::setting(
                setting,
                format!("must be a finite number, got {v}"),
            ));
        }
    }
    if let Some(loss) = metadata(model, keys::LOSS_OUTPUT) {
        let graph_has_loss = model
            .graph
            .as_ref()
            .is_some_and(|g| g.output.iter().any(|o| o.name() == loss));
        if graph_has_loss {
            return Err(Error::config(format!(
                "the model still computes the training loss '{loss}'; adjust the deployable \
                 model that train writes (model.onnx)"
            )));
        }
    }
    validate::check_input(model, "model")?;
    let opset = default_opset(model)
        .ok_or_else(|| Error::invalid("the model imports no default-domain opset"))?;
    let mut model = model.clone();
    let record = PatchRecord::read(&model)?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;
    let requested = options
        .logits
        .clone()
        .or_else(|| record.as_ref().map(|r| r.logits.clone()));
    let head = head::detect(graph, requested.as_deref())?;

    let normalized = match options.tau_norm {
        Some(p) => Some(tau_normalize(graph, &head, record.as_ref(), p)?),
        None => None,
    };

    let offsets = match options.logit_adjust {
        Some(tau) => {
            let counts = match &options.class_counts {
                Some(source) => crate::counts::resolve(source, head.classes)
                    .map_err(|e| Error::Counts(Box::new(e)))?,
                None => recorded_counts(&model, head.classes)?,
            };
            let offsets = logit_offsets(&counts, tau);
            let graph = model.graph.as_mut().expect("checked above");
            subtract_offsets(graph, &head, &offsets, opset)?;
            Some(offsets)
        }
        None => None,
    };

    if let Some(tau) = options.logit_adjust {
        contract::set(&mut model, keys::ADJUST_LOGIT_TAU, tau.to_string());
    }
    if let Some(p) = options.tau_norm {
        contract::set(&mut model, keys::ADJUST_TAU_NORM, p.to_string());
    }
    validate::check_model(&model).map_err(|e| {
        Error::invalid(format!(
            "the adjusted graph failed its structural check (a bug): {e}"
        ))
    })?;
    let summary = AdjustSummary {
        logits: head.logits,
        classes: head.classes,
        offsets,
        normalized,
    };
    Ok((model, summary))
}

/// The training counts the model records, checked against its classes.
fn recorded_counts(model: &ModelProto, classes: usize) -> Result<Vec<u64>> {
    let counts = contract::recorded_train_counts(model)?.ok_or_else(|| {
        Error::setting(
            "class_counts",
            "is needed: the model records no training class counts",
        )
    })?;
    if counts.len() != classes {
        return Err(Error::invalid(format!(
            "the model records {} training class counts ({}), but its logits have {classes} classes",
            counts.len(),
            keys::TRAIN_CLASS_COUNTS
        )));
    }
    check_counts(&counts)?;
    Ok(counts)
}

/// The producer of the logits now writes to a fresh name, and a `Sub` node
/// writes `raw - tau log(pi)` under the logits' own name, right after it, so
/// every reader (outputs, Softmax, the `logits` Identity) sees adjusted logits.
fn subtract_offsets(
    graph: &mut crate::onnx::GraphProto,
    head: &Head,
    offsets: &[f64],
    opset: i64,
) -> Result<()> {
    let producer = graph
        .node
        .iter()
        .position(|n| n.output.iter().any(|o| *o == head.logits))
        .ok_or_else(|| {
            Error::config(format!(
                "the logits '{}' are a graph input; there is no classifier to adjust",
                head.logits
            ))
        })?;
    let mut b = Emitter::new(NameSet::of_graph(graph), PATCH_PREFIX, opset);
    let raw = b.names.fresh(&format!("{PATCH_PREFIX}posthoc/raw_logits"));
    let values: Vec<f32> = offsets.iter().map(|&v| v as f32).collect();
    let offsets = b
        .initializer(f32_tensor(
            LOGIT_ADJUSTMENT,
            &[offsets.len() as i64],
            &values,
        ))
        .ok_or_else(|| {
            Error::config(format!(
                "the graph already has an initializer '{LOGIT_ADJUSTMENT}': it was adjusted before"
            ))
        })?;
    b.op_into("Sub", &[&raw, &offsets], vec![], &head.logits);
    for output in graph.node[producer].output.iter_mut() {
        if *output == head.logits {
            *output = raw.clone();
        }
    }
    let at = producer + 1;
    graph.node.splice(at..at, b.nodes.drain(..));
    graph.initializer.append(&mut b.initializers);
    Ok(())
}

/// Replaces each class's weights `w_j` of the final linear layer by
/// `w_j / ||w_j||^p`; returns the weight's name and the norms before.
fn tau_normalize(
    graph: &mut crate::onnx::GraphProto,
    head: &Head,
    record: Option<&PatchRecord>,
    p: f64,
) -> Result<(String, Vec<f64>)> {
    let Some(layer) = &head.linear else {
        let cosine = record.is_some_and(|r| r.head == "cosine");
        let why = if cosine {
            "a cosine head, which already divides each class's weights by their norm, so \
             tau-normalisation would change nothing"
                .to_string()
        } else {
            format!(
                "not produced by a Gemm or MatMul(+Add) with an initializer weight ({})",
                head.producer_op.as_deref().unwrap_or("a graph input")
            )
        };
        return Err(Error::setting(
            "tau_norm",
            format!(
                "needs a final linear layer, but the logits '{}' come from {why}",
                head.logits
            ),
        ));
    };
    let tensor = graph
        .initializer
        .iter_mut()
        .find(|t| t.name() == layer.weight)
        .ok_or_else(|| Error::invalid(format!("weight '{}' has no initializer", layer.weight)))?;
    let values = f32_values(tensor).ok_or_else(|| {
        Error::setting(
            "tau_norm",
            format!(
                "needs the float32 values of weight '{}' in the model file (it is stored externally or is not float32)",
                layer.weight
            ),
        )
    })?;
    let [rows, cols] = layer.weight_dims[..] else {
        return Err(Error::invalid(format!(
            "weight '{}' is not a matrix: dims {:?}",
            layer.weight, layer.weight_dims
        )));
    };
    let (rows, cols) = (rows as usize, cols as usize);
    // Class j is row j of a [C, F] weight (transB), column j of a [F, C] one.
    let classes = if layer.transposed() { rows } else { cols };
    let index = |class: usize, feature: usize| {
        if layer.transposed() {
            class * cols + feature
        } else {
            feature * cols + class
        }
    };
    let features = values.len() / classes.max(1);
    let mut updated = values.clone();
    let mut norms = Vec::with_capacity(classes);
    for class in 0..classes {
        let w: Vec<f64> = (0..features)
            .map(|f| values[index(class, f)] as f64)
            .collect();
        norms.push(w.iter().map(|v| v * v).sum::<f64>().sqrt());
        for (f, v) in tau_normalized(&w, p).into_iter().enumerate() {
            updated[index(class, f)] = v as f32;
        }
    }
    if let Some(class) = norms.iter().position(|&n| n == 0.0) {
        return Err(Error::setting(
            "tau_norm",
            format!(
                "class {class} has all-zero weights in '{}': no norm to divide by",
                layer.weight
            ),
        ));
    }
    let name = tensor.name().to_string();
    *tensor = f32_tensor(&name, &layer.weight_dims, &updated);
    Ok((name, norms))
}
