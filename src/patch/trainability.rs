//! Whether an exported model will train as it would in PyTorch, said before the
//! user spends time on it: one finding per topic (opset, external data, batch
//! dimension, normalisation, gradients, head), each with its fix. `inspect` ends
//! with these lines and `patch` prints the warnings among them.

use super::batch::{BATCH_SYMBOL, DYNAMIC_BATCH_EXPORT};
use super::batchnorm::{BatchNormMode, Normalisation, TRAINABLE_EXPORT};
use super::{head, PatchSummary, MIN_OPSET};
use crate::onnx::io::external_tensors;
use crate::onnx::tensor::is_float_type;
use crate::onnx::types::{tensor_type, Dim};
use crate::onnx::{default_opset, GraphProto, ModelProto};
use crate::ops::registry::{self, Gradient};
use serde::Serialize;
use std::collections::HashSet;

/// How a finding bears on training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Trains as it would in PyTorch.
    Fine,
    /// Trains, but not as the user probably expects, or only after `patch` fixes it.
    Warning,
    /// Cannot train as it is.
    Blocker,
}

/// One topic's finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub topic: &'static str,
    pub verdict: Verdict,
    pub text: String,
    /// What to do about it, when something should be done.
    pub fix: Option<String>,
}

impl Finding {
    fn new(topic: &'static str, verdict: Verdict, text: String, fix: Option<String>) -> Self {
        Finding {
            topic,
            verdict,
            text,
            fix,
        }
    }

    pub fn is_warning(&self) -> bool {
        self.verdict != Verdict::Fine
    }

    /// `topic: text; fix`, one line.
    pub fn line(&self) -> String {
        match &self.fix {
            Some(fix) => format!("{}: {}; {fix}", self.topic, self.text),
            None => format!("{}: {}", self.topic, self.text),
        }
    }
}

/// The findings for `model`, in a fixed order of topics.
pub fn check(model: &ModelProto) -> Vec<Finding> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let opset = default_opset(model).unwrap_or(0);
    let patched = crate::ldam::contract::is_patched(model);
    let mut findings = vec![opset_finding(opset)];
    findings.extend(external_finding(graph));
    findings.extend(batch_finding(model, graph, patched));
    findings.extend(normalisation_finding(graph, opset, patched));
    findings.push(gradient_finding(graph, opset));
    if !patched {
        findings.push(head_finding(graph));
    }
    findings
}

fn opset_finding(opset: i64) -> Finding {
    if opset < MIN_OPSET {
        Finding::new(
            "opset",
            Verdict::Blocker,
            format!("{opset}, below the {MIN_OPSET} the loss needs (SoftmaxCrossEntropyLoss)"),
            Some("re-export with opset_version=17 or later".into()),
        )
    } else {
        Finding::new("opset", Verdict::Fine, opset.to_string(), None)
    }
}

fn external_finding(graph: &GraphProto) -> Option<Finding> {
    let external = external_tensors(graph);
    if external.is_empty() {
        return None;
    }
    let mut files: Vec<&str> = external
        .iter()
        .flat_map(|t| t.external_data.iter())
        .filter(|e| e.key() == "location")
        .map(|e| e.value())
        .collect();
    files.sort_unstable();
    files.dedup();
    Some(Finding::new(
        "external data",
        Verdict::Fine,
        format!(
            "{} tensors stored in {} beside the model, read by every command",
            external.len(),
            files.join(", ")
        ),
        Some("keep the data file next to the .onnx file when moving it".into()),
    ))
}

fn batch_finding(model: &ModelProto, graph: &GraphProto, patched: bool) -> Vec<Finding> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let added: Vec<String> = crate::ldam::contract::PatchRecord::read(model)
        .ok()
        .flatten()
        .map(|r| r.added_inputs().map(str::to_string).to_vec())
        .unwrap_or_default();
    graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name()))
        .filter(|i| !added.iter().any(|a| a == i.name()))
        .filter_map(|input| {
            let shape = tensor_type(input)?.shape?;
            let described = shape
                .iter()
                .map(Dim::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            Some(match shape.first() {
                Some(Dim::Fixed(size)) if !patched => Finding::new(
                    "batch",
                    Verdict::Warning,
                    format!(
                        "input '{}' [{described}] fixes the batch at {size}; patch makes it \
                         symbolic ('{BATCH_SYMBOL}') when the graph does not depend on it, and refuses otherwise",
                        input.name()
                    ),
                    Some(format!("or {DYNAMIC_BATCH_EXPORT}")),
                ),
                Some(Dim::Fixed(size)) => Finding::new(
                    "batch",
                    Verdict::Warning,
                    format!(
                        "input '{}' [{described}] takes batches of exactly {size}",
                        input.name()
                    ),
                    Some(format!("train and eval with --batch-size {size}")),
                ),
                _ => Finding::new(
                    "batch",
                    Verdict::Fine,
                    format!("input '{}' [{described}]", input.name()),
                    None,
                ),
            })
        })
        .collect()
}

fn normalisation_finding(graph: &GraphProto, opset: i64, patched: bool) -> Option<Finding> {
    let n = Normalisation::of(graph, opset);
    if n.looks_folded() {
        return Some(Finding::new(
            "normalisation",
            Verdict::Warning,
            format!(
                "none in a network with {} convolutions: BatchNorm was folded into them at export, \
                 so training runs without it",
                n.convolutions
            ),
            Some(format!("to train with BatchNorm, {TRAINABLE_EXPORT}")),
        ));
    }
    if n.inference > 0 {
        let (verdict, fix) = if patched {
            (
                Verdict::Fine,
                "patched with --batchnorm frozen: fine-tuning with frozen statistics".to_string(),
            )
        } else {
            (
                Verdict::Warning,
                format!(
                    "patch --batchnorm {} (the default) makes them normalise with batch statistics \
                     and update the running ones, as model.train(); --batchnorm {} keeps them frozen",
                    BatchNormMode::Train,
                    BatchNormMode::Frozen
                ),
            )
        };
        return Some(Finding::new(
            "normalisation",
            verdict,
            format!(
                "{} BatchNormalization in inference mode (running statistics){}",
                n.inference,
                if n.training > 0 {
                    format!(", {} in training mode", n.training)
                } else {
                    String::new()
                }
            ),
            Some(fix),
        ));
    }
    if n.training + n.per_example == 0 {
        return None;
    }
    let mut parts = Vec::new();
    if n.training > 0 {
        parts.push(format!(
            "{} BatchNormalization in training mode (batch statistics, running statistics updated, as model.train())",
            n.training
        ));
    }
    if n.per_example > 0 {
        parts.push(format!(
            "{} per-example normalisation layers (Layer/Group/Instance: the same in training and inference)",
            n.per_example
        ));
    }
    Some(Finding::new(
        "normalisation",
        Verdict::Fine,
        parts.join("; "),
        None,
    ))
}

/// Ops between a parameter and the outputs that have no gradient rule.
fn gradient_finding(graph: &GraphProto, opset: i64) -> Finding {
    let mut active: HashSet<&str> = graph
        .initializer
        .iter()
        .filter(|t| is_float_type(t.data_type()) && !t.dims.is_empty())
        .map(|t| t.name())
        .collect();
    let mut missing: Vec<String> = Vec::new();
    let mut recurrent: Vec<String> = Vec::new();
    for node in &graph.node {
        if !node.input.iter().any(|i| active.contains(i.as_str())) {
            continue;
        }
        let gradient = registry::for_node(node, opset).map(|def| def.gradient);
        match gradient {
            Some(Gradient::NotDifferentiable) => continue,
            Some(Gradient::Rule(_)) => {}
            _ if matches!(
                node.op_type(),
                "LSTM" | "GRU" | "RNN" | "InstanceNormalization"
            ) =>
            {
                recurrent.push(node.op_type().to_string())
            }
            _ => {
                let op = match node.domain() {
                    "" | "ai.onnx" => node.op_type().to_string(),
                    domain => format!("{domain}:{}", node.op_type()),
                };
                if !missing.contains(&op) {
                    missing.push(op);
                }
            }
        }
        active.extend(node.output.iter().map(String::as_str));
    }
    if !missing.is_empty() {
        return Finding::new(
            "gradients",
            Verdict::Blocker,
            format!("no gradient rule for {}", missing.join(", ")),
            Some(
                "freeze the layers before them (compile --freeze) or re-export without those ops"
                    .into(),
            ),
        );
    }
    if !recurrent.is_empty() {
        recurrent.sort();
        recurrent.dedup();
        return Finding::new(
            "gradients",
            Verdict::Fine,
            format!(
                "every op has a rule once patch writes out its {} nodes in primitive ops",
                recurrent.join(", ")
            ),
            None,
        );
    }
    Finding::new(
        "gradients",
        Verdict::Fine,
        "every op between the parameters and the outputs has a gradient rule".into(),
        None,
    )
}

fn head_finding(graph: &GraphProto) -> Finding {
    match head::detect(graph, None) {
        Ok(head) => Finding::new(
            "head",
            Verdict::Fine,
            match &head.activation {
                Some(activation) => format!(
                    "logits '{}' [{}, {}] before the final {activation} of '{}'; training uses the logits",
                    head.logits, head.batch, head.classes, head.output
                ),
                None => format!(
                    "logits '{}' [{}, {}]",
                    head.logits, head.batch, head.classes
                ),
            },
            None,
        ),
        Err(e) => Finding::new(
            "head",
            Verdict::Blocker,
            e.to_string(),
            Some("name the logits with patch --logits NAME".into()),
        ),
    }
}

/// What `patch` changed to make the export trainable, one line each.
pub fn patch_notes(summary: &PatchSummary, batchnorm: BatchNormMode) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(freed) = &summary.freed_batch {
        lines.push(format!(
            "batch: {} fixed the batch at {}; it is now symbolic '{BATCH_SYMBOL}'{}",
            freed
                .inputs
                .iter()
                .map(|i| format!("'{i}'"))
                .collect::<Vec<_>>()
                .join(", "),
            freed.size,
            if freed.rewritten.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} shape constants now read the batch at run time)",
                    freed.rewritten.len()
                )
            }
        ));
    }
    if !summary.batchnorm_converted.is_empty() {
        lines.push(format!(
            "batchnorm: {} inference-mode BatchNormalization nodes now train as model.train() \
             does (batch statistics, running statistics updated); --batchnorm {} keeps them frozen",
            summary.batchnorm_converted.len(),
            BatchNormMode::Frozen
        ));
    } else if batchnorm == BatchNormMode::Frozen {
        lines.push("batchnorm: kept as exported (--batchnorm frozen)".to_string());
    }
    if !summary.untied.is_empty() {
        lines.push(format!(
            "untied: {} normalisation tensors the exporter had merged between layers (equal \
             initial values) are separate parameters again, as in PyTorch",
            summary.untied.len()
        ));
    }
    if !summary.unrolled.is_empty() {
        lines.push(format!(
            "recurrent: {} unrolled over the sequence into primitive ops",
            summary.unrolled.join(", ")
        ));
    }
    if !summary.lowered.is_empty() {
        lines.push(format!(
            "instance norm: {} InstanceNormalization nodes written out in primitive ops",
            summary.lowered.len()
        ));
    }
    if let Some(name) = &summary.logits_renamed {
        lines.push(format!(
            "logits: the name 'logits' is taken by an output, so the logits output is '{name}'"
        ));
    }
    lines
}
