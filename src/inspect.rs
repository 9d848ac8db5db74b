//! `inspect`: a deterministic summary of a model (text for people and snapshot
//! tests, JSON for programs, Graphviz dot for pictures).

use crate::ldam::contract::{self, PatchRecord, PATCH_PREFIX as PREFIX};
use crate::onnx::io::LoadedModel;
use crate::onnx::tensor::{
    elem_size, elem_type_name, element_count, f32_values, i64_values, is_float_type,
};
use crate::onnx::types::tensor_type;
use crate::onnx::{ModelProto, NodeProto, TensorProto};
use crate::patch::head;
use crate::patch::trainability::Verdict;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub file: String,
    pub ir_version: i64,
    pub producer: String,
    pub opsets: Vec<(String, i64)>,
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
    pub parameters: TensorStats,
    pub other_initializers: TensorStats,
    pub nodes: usize,
    /// Op type -> count, most frequent first.
    pub ops: Vec<(String, usize)>,
    pub head: HeadSummary,
    pub ldam: Option<LdamSummary>,
    /// Whether the model trains as exported, topic by topic, each with its fix.
    pub trainability: Vec<crate::patch::trainability::Finding>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TensorStats {
    pub tensors: usize,
    pub elements: u64,
    pub bytes: u64,
    pub external_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HeadSummary {
    Found {
        logits: String,
        output: String,
        activation: Option<String>,
        batch: String,
        classes: usize,
        linear_layer: Option<String>,
    },
    NotFound {
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct LdamSummary {
    pub class_counts: Vec<u64>,
    pub loss: String,
    pub max_m: f64,
    pub scale: f64,
    pub gamma: f64,
    /// Logit adjustment's tau (`la`).
    pub la_tau: f64,
    /// Vector scaling's gamma and tau (`vs`).
    pub vs_gamma: f64,
    pub vs_tau: f64,
    pub reweight: String,
    pub drw_epoch: i64,
    pub beta: f64,
    pub logits: String,
    pub head: String,
    pub margins: Vec<f64>,
    pub drw_weights: Vec<f64>,
    pub appended_nodes: usize,
    pub appended_ops: Vec<(String, usize)>,
}

/// Builds the summary of a loaded model.
pub fn summarize(loaded: &LoadedModel) -> crate::Result<Summary> {
    let model = &loaded.model;
    let graph = loaded.graph();
    let file = loaded
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let initializer_names: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let mut parameters = TensorStats::default();
    let mut other = TensorStats::default();
    for tensor in &graph.initializer {
        let stats = if is_float_type(tensor.data_type()) {
            &mut parameters
        } else {
            &mut other
        };
        add_tensor(stats, tensor);
    }
    let record = PatchRecord::read(model)?;
    let head = match head::detect(graph, record.as_ref().map(|r| r.logits.as_str())) {
        Ok(h) => HeadSummary::Found {
            activation: h.activation.clone(),
            batch: h.batch.to_string(),
            classes: h.classes,
            linear_layer: h.linear.as_ref().map(|l| {
                format!(
                    "'{}' weight '{}' {:?}{}",
                    l.node_name,
                    l.weight,
                    l.weight_dims,
                    l.bias
                        .as_ref()
                        .map(|b| format!(" bias '{b}'"))
                        .unwrap_or_default()
                )
            }),
            logits: h.logits,
            output: h.output,
        },
        Err(e) => HeadSummary::NotFound {
            reason: e.to_string(),
        },
    };
    let ldam = record.map(|r| {
        let appended: Vec<&NodeProto> = graph
            .node
            .iter()
            .filter(|n| n.name().starts_with(PREFIX))
            .collect();
        let c = &r.config;
        LdamSummary {
            margins: crate::ldam::margins(&c.class_counts, c.max_m),
            drw_weights: crate::ldam::effective_number_weights(&c.class_counts, c.beta),
            class_counts: c.class_counts.clone(),
            loss: c.loss.to_string(),
            max_m: c.max_m,
            scale: c.scale,
            gamma: c.gamma,
            la_tau: c.la_tau,
            vs_gamma: c.vs_gamma,
            vs_tau: c.vs_tau,
            reweight: c.reweight.to_string(),
            drw_epoch: c.drw_epoch,
            beta: c.beta,
            logits: r.logits,
            head: r.head,
            appended_nodes: appended.len(),
            appended_ops: histogram(appended.into_iter()),
        }
    });
    let trainability = crate::patch::trainability::check(model);
    Ok(Summary {
        file,
        ir_version: model.ir_version(),
        producer: format!("{} {}", model.producer_name(), model.producer_version())
            .trim()
            .to_string(),
        opsets: model
            .opset_import
            .iter()
            .map(|o| {
                (
                    if o.domain().is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        o.domain().to_string()
                    },
                    o.version(),
                )
            })
            .collect(),
        inputs: graph
            .input
            .iter()
            .filter(|i| !initializer_names.contains(i.name()))
            .map(|i| (i.name().to_string(), describe_value(i)))
            .collect(),
        outputs: graph
            .output
            .iter()
            .map(|o| (o.name().to_string(), describe_value(o)))
            .collect(),
        parameters,
        other_initializers: other,
        nodes: graph.node.len(),
        ops: histogram(graph.node.iter()),
        head,
        ldam,
        trainability,
    })
}

fn describe_value(v: &crate::onnx::ValueInfoProto) -> String {
    tensor_type(v).map_or_else(|| "(not a tensor)".to_string(), |t| t.describe())
}

fn add_tensor(stats: &mut TensorStats, tensor: &TensorProto) {
    let elements = element_count(tensor);
    let bytes = elements * elem_size(tensor.data_type()).unwrap_or(0) as u64;
    stats.tensors += 1;
    stats.elements += elements;
    stats.bytes += bytes;
    if crate::onnx::tensor::is_external(tensor) {
        stats.external_bytes += bytes;
    }
}

fn histogram<'a>(nodes: impl Iterator<Item = &'a NodeProto>) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for node in nodes {
        *counts.entry(node.op_type().to_string()).or_default() += 1;
    }
    let mut ops: Vec<(String, usize)> = counts.into_iter().collect();
    ops.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ops
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.6}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The human-readable form, stable across runs (what snapshot tests lock).
pub fn render_text(s: &Summary) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "model: {}", s.file);
    let _ = writeln!(w, "ir_version: {}   producer: {}", s.ir_version, s.producer);
    let opsets: Vec<String> = s.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    let _ = writeln!(w, "opsets: {}", opsets.join(", "));
    let width = s
        .inputs
        .iter()
        .chain(&s.outputs)
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(w, "inputs:");
    for (name, ty) in &s.inputs {
        let _ = writeln!(w, "  {name:width$}  {ty}");
    }
    let _ = writeln!(w, "outputs:");
    for (name, ty) in &s.outputs {
        let _ = writeln!(w, "  {name:width$}  {ty}");
    }
    let p = &s.parameters;
    let _ = writeln!(
        w,
        "parameters: {} in {} float tensors ({} bytes{})",
        thousands(p.elements),
        p.tensors,
        thousands(p.bytes),
        if p.external_bytes > 0 {
            format!(", {} external", thousands(p.external_bytes))
        } else {
            String::new()
        }
    );
    if s.other_initializers.tensors > 0 {
        let _ = writeln!(
            w,
            "other initializers: {} tensors ({} bytes)",
            s.other_initializers.tensors,
            thousands(s.other_initializers.bytes)
        );
    }
    let _ = writeln!(w, "ops ({} nodes):", s.nodes);
    let op_width = s.ops.iter().map(|(o, _)| o.len()).max().unwrap_or(0);
    for (op, n) in &s.ops {
        let _ = writeln!(w, "  {op:op_width$}  {n}");
    }
    match &s.head {
        HeadSummary::Found {
            logits,
            output,
            activation,
            batch,
            classes,
            linear_layer,
        } => {
            let via = match activation {
                Some(act) => format!(" ({act} -> output '{output}')"),
                None if output != logits => format!(" (output '{output}')"),
                None => String::new(),
            };
            let _ = writeln!(w, "head: logits '{logits}' [{batch}, {classes}]{via}");
            match linear_layer {
                Some(layer) => {
                    let _ = writeln!(w, "  linear layer: {layer}");
                }
                None if s.ldam.as_ref().is_some_and(|l| l.head == "cosine") => {
                    let _ = writeln!(w, "  linear layer: cosine head (features and weight L2-normalised by the patch)");
                }
                None => {
                    let _ = writeln!(w, "  linear layer: none (logits not produced by Gemm/MatMul with an initializer weight)");
                }
            }
        }
        HeadSummary::NotFound { reason } => {
            let _ = writeln!(w, "head: not found: {reason}");
        }
    }
    if let Some(l) = &s.ldam {
        let _ = writeln!(w, "ldam-drw:");
        let loss = match l.loss.as_str() {
            "ldam" => format!("ldam (max_m {}, scale {})", l.max_m, l.scale),
            "focal" => format!("focal (gamma {})", l.gamma),
            "la" => format!("la (tau {})", l.la_tau),
            "vs" => format!("vs (gamma {}, tau {})", l.vs_gamma, l.vs_tau),
            other => other.to_string(),
        };
        let _ = writeln!(w, "  loss: {loss}");
        let reweight = match l.reweight.as_str() {
            "drw" => format!(
                "drw (effective-number weights from epoch {}, beta {})",
                l.drw_epoch, l.beta
            ),
            "rw" => format!(
                "rw (effective-number weights from epoch 0, beta {})",
                l.beta
            ),
            other => other.to_string(),
        };
        let _ = writeln!(w, "  reweight: {reweight}");
        let _ = writeln!(w, "  head: {}   logits: '{}'", l.head, l.logits);
        let counts: Vec<String> = l.class_counts.iter().map(u64::to_string).collect();
        let _ = writeln!(w, "  class counts: [{}]", counts.join(", "));
        if l.loss == "ldam" {
            let _ = writeln!(w, "  margins: [{}]", list(&l.margins));
        }
        if l.reweight != "none" {
            let _ = writeln!(w, "  class weights: [{}]", list(&l.drw_weights));
        }
        let ops: Vec<String> = l
            .appended_ops
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect();
        let _ = writeln!(
            w,
            "  appended: {} nodes ({})",
            l.appended_nodes,
            ops.join(", ")
        );
    }
    if !s.trainability.is_empty() {
        let _ = writeln!(w, "trainability:");
        for finding in &s.trainability {
            let mark = match finding.verdict {
                Verdict::Fine => "ok",
                Verdict::Warning => "warning",
                Verdict::Blocker => "blocker",
            };
            let _ = writeln!(w, "  {mark:<7} {}", finding.line());
        }
    }
    out
}

pub fn render_json(s: &Summary) -> String {
    serde_json::to_string_pretty(s).expect("the summary holds only serialisable values") + "\n"
}

/// Graphviz rendering; nodes the patch appended are filled.
pub fn render_dot(model: &ModelProto) -> String {
    let graph = model.graph.clone().unwrap_or_default();
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from(
        "digraph model {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\"];\n",
    );
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let mut producers: BTreeMap<&str, String> = BTreeMap::new();
    for input in graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name()))
    {
        let id = format!("in_{}", producers.len());
        let _ = writeln!(
            out,
            "  {id} [shape=ellipse, label=\"{}\"];",
            quote(input.name())
        );
        producers.insert(input.name(), id);
    }
    for (i, node) in graph.node.iter().enumerate() {
        let id = format!("n{i}");
        let style = if node.name().starts_with(PREFIX) {
            ", style=filled, fillcolor=\"#ffd27f\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {id} [label=\"{}\\n{}\"{style}];",
            quote(node.op_type()),
            quote(node.name())
        );
        for input in node.input.iter().filter(|s| !s.is_empty()) {
            if let Some(src) = producers.get(input.as_str()) {
                let _ = writeln!(out, "  {src} -> {id};");
            }
        }
        for output in &node.output {
            producers.insert(output, id.clone());
        }
    }
    for (i, output) in graph.output.iter().enumerate() {
        let _ = writeln!(
            out,
            "  out_{i} [shape=ellipse, label=\"{}\"];",
            quote(output.name())
        );
        if let Some(src) = producers.get(output.name()) {
            let _ = writeln!(out, "  {src} -> out_{i};");
        }
    }
    out.push_str("}\n");
    out
}

/// The nodes and initializers a patch appended, one per line, values included for
/// small tensors: what reviewers read in the appended-subgraph snapshots.
pub fn render_appended(model: &ModelProto) -> String {
    let Some(graph) = &model.graph else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(out, "initializers:");
    for tensor in graph
        .initializer
        .iter()
        .filter(|t| t.name().starts_with("ldam"))
    {
        let dims: Vec<String> = tensor.dims.iter().map(i64::to_string).collect();
        let values = f32_values(tensor)
            .map(|v| v.iter().map(|x| format!("{x}")).collect::<Vec<_>>())
            .or_else(|| i64_values(tensor).map(|v| v.iter().map(i64::to_string).collect()))
            .unwrap_or_default();
        let shown = if values.len() <= 16 {
            format!(" = [{}]", values.join(", "))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {} {} [{}]{shown}",
            tensor.name(),
            elem_type_name(tensor.data_type()),
            dims.join(", ")
        );
    }
    let _ = writeln!(out, "nodes:");
    for node in graph.node.iter().filter(|n| n.name().starts_with(PREFIX)) {
        let attrs: Vec<String> = node.attribute.iter().map(render_attribute).collect();
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" {{{}}}", attrs.join(", "))
        };
        let _ = writeln!(
            out,
            "  {} = {}({}){attrs}",
            node.output.join(", "),
            node.op_type(),
            node.input.join(", ")
        );
    }
    out
}

fn render_attribute(a: &crate::onnx::AttributeProto) -> String {
    let value = if let Some(i) = a.i {
        i.to_string()
    } else if let Some(f) = a.f {
        f.to_string()
    } else if let Some(s) = &a.s {
        format!("\"{}\"", String::from_utf8_lossy(s))
    } else if !a.ints.is_empty() {
        format!("{:?}", a.ints)
    } else {
        "…".to_string()
    };
    format!("{}={value}", a.name())
}

/// A compiled training step for review: the state it carries, its op histogram,
/// and the optimizer subgraph (every node that computes a `.next` state value or
/// feeds one from the update constants).
pub fn render_train_step(model: &ModelProto) -> String {
    let Some(graph) = &model.graph else {
        return String::new();
    };
    let mut out = String::new();
    let state: Vec<String> = contract::state_names(model).unwrap_or_default();
    let kinds: Vec<String> = contract::state_kinds(model).unwrap_or_default();
    let _ = writeln!(out, "state ({} tensors):", state.len());
    let kinds = kinds
        .iter()
        .map(String::as_str)
        .chain(std::iter::repeat("?"));
    for (name, kind) in state.iter().zip(kinds) {
        // The state input's declared shape (an initializer's in steps that
        // keep their state inside).
        let declared = graph
            .input
            .iter()
            .find(|i| i.name() == *name)
            .and_then(crate::onnx::types::tensor_type)
            .and_then(|t| t.shape)
            .filter(|dims| {
                dims.iter()
                    .all(|d| matches!(d, crate::onnx::types::Dim::Fixed(_)))
            })
            .map(|dims| {
                format!(
                    "[{}]",
                    dims.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        let dims = declared
            .or_else(|| {
                graph
                    .initializer
                    .iter()
                    .find(|t| t.name() == *name)
                    .map(|t| format!("{:?}", t.dims))
            })
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(out, "  {name}  {kind} {dims}");
    }
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name())
        .filter(|n| !state.iter().any(|s| s == n))
        .collect();
    let _ = writeln!(out, "inputs besides state: {}", inputs.join(", "));
    let outputs: Vec<&str> = graph
        .output
        .iter()
        .map(|o| o.name())
        .filter(|n| !n.ends_with(".next"))
        .collect();
    let _ = writeln!(out, "outputs besides state: {}", outputs.join(", "));
    let _ = writeln!(out, "ops ({} nodes):", graph.node.len());
    for (op, n) in histogram(graph.node.iter()) {
        let _ = writeln!(out, "  {op}  {n}");
    }
    let _ = writeln!(out, "optimizer:");
    for node in graph.node.iter().filter(|n| {
        n.output
            .iter()
            .any(|o| o.ends_with(".next") || o.contains("/sgd/") || o.contains("/bn/"))
    }) {
        let _ = writeln!(
            out,
            "  {} = {}({})",
            node.output.join(", "),
            node.op_type(),
            node.input.join(", ")
        );
    }
    out
}
