//! `patch`: append the LDAM-DRW loss to a classifier graph (and optionally turn its
//! final linear layer into the paper's cosine classifier). A pure function of
//! (model, options) -> model.

pub mod batch;
pub mod batch_axis;
pub mod batchnorm;
pub mod cosine;
pub mod head;
pub mod instance_norm;
pub mod loss;
pub mod metadata;
pub mod recurrent;
pub mod trainability;
pub mod untie;

use crate::counts::CountsSource;
use crate::error::{Error, Result, SettingNames};
use crate::ldam::contract::{self, PatchRecord};
use crate::ldam::{LossConfig, LossKind};
use crate::onnx::builder::{Emitter, NameSet};
use crate::onnx::tensor::{FLOAT, INT64};
use crate::onnx::types::{value_info, Dim};
use crate::onnx::{default_opset, GraphProto, ModelProto};
use crate::ops::validate;
use batch::FreedBatch;
use batchnorm::BatchNormMode;
use head::Head;

/// The default-domain opset the loss needs (SoftmaxCrossEntropyLoss).
pub use contract::MIN_OPSET;
/// Prefix of every node and intermediate value the patch emits.
pub use contract::PATCH_PREFIX as PREFIX;

/// What to do with the final linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadMode {
    /// Cosine head for the LDAM loss when a linear layer exists, else keep.
    Auto,
    Keep,
    Cosine,
}

keyword_enum!(HeadMode { Auto => "auto", Keep => "keep", Cosine => "cosine" });

/// Names of the values the patch adds, each overridable by a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractNames {
    pub labels: String,
    pub epoch: String,
    pub loss: String,
    pub logits: String,
}

impl Default for ContractNames {
    fn default() -> Self {
        ContractNames {
            labels: "labels".into(),
            epoch: "epoch".into(),
            loss: "loss".into(),
            logits: "logits".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PatchOptions {
    pub config: LossConfig,
    pub head: HeadMode,
    /// The setting `logits`: which output (or softmax input) holds the logits.
    pub logits: Option<String>,
    pub names: ContractNames,
    /// What to do with inference-mode BatchNormalization nodes.
    pub batchnorm: BatchNormMode,
}

impl PatchOptions {
    /// `config` with the head chosen automatically, the logits detected and the
    /// contract's default names.
    pub fn new(config: LossConfig) -> PatchOptions {
        PatchOptions {
            config,
            head: HeadMode::Auto,
            logits: None,
            names: ContractNames::default(),
            batchnorm: BatchNormMode::default(),
        }
    }
}

/// Why the head was (or was not) rewritten: a line for the user.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadNote {
    /// Kept because `head` is `keep`.
    KeptAsAsked,
    /// Kept because the loss uses the plain logits.
    KeptForLoss(LossKind),
    /// Kept because no linear layer with an initializer weight produces the
    /// logits; `producer` says what does.
    KeptWithoutLinear {
        logits: String,
        producer: &'static str,
    },
    /// The final linear layer now computes cosine logits; `chosen` when `head`
    /// asked for it rather than choosing automatically.
    Cosine {
        node: String,
        weight: String,
        bias: Option<String>,
        chosen: bool,
    },
}

impl HeadNote {
    /// The line, with settings named as `names` does.
    pub fn describe(&self, names: SettingNames) -> String {
        match self {
            HeadNote::KeptAsAsked => {
                format!(
                    "head kept as exported ({})",
                    names.with_value("head", "keep")
                )
            }
            HeadNote::KeptForLoss(loss) => format!(
                "head kept: {} uses the plain logits",
                names.with_value("loss", &loss.to_string())
            ),
            HeadNote::KeptWithoutLinear { logits, producer } => format!(
                "head kept: the logits '{logits}' are {producer}, so there is no linear layer to \
                 normalise (LDAM's scale expects cosine logits in [-1, 1])"
            ),
            HeadNote::Cosine {
                node,
                weight,
                bias,
                chosen,
            } => {
                let bias = match bias {
                    Some(b) => format!(", bias '{b}' dropped"),
                    None => String::new(),
                };
                let hint = if *chosen {
                    String::new()
                } else {
                    format!(
                        " ({} leaves it as exported)",
                        names.with_value("head", "keep")
                    )
                };
                format!(
                    "cosine head: '{node}' now computes normalize(features) @ normalize(weight \
                     '{weight}'){bias}{hint}"
                )
            }
        }
    }
}

impl std::fmt::Display for HeadNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(SettingNames::Fields))
    }
}

/// What the patch did, for the user.
#[derive(Debug, Clone)]
pub struct PatchSummary {
    pub head: Head,
    pub cosine: bool,
    /// Why the head was (or was not) rewritten.
    pub head_note: HeadNote,
    pub appended_nodes: usize,
    pub appended_initializers: Vec<String>,
    pub new_inputs: Vec<String>,
    pub new_outputs: Vec<String>,
    /// The fixed batch dimension made symbolic, if the export fixed it.
    pub freed_batch: Option<FreedBatch>,
    /// The inference-mode BatchNormalization nodes turned into training mode.
    pub batchnorm_converted: Vec<String>,
    /// The logits output's name, when the one asked for was taken (by the
    /// output of a final Softmax, say) and a free one was picked.
    pub logits_renamed: Option<String>,
    /// New initializers for tensors the exporter had merged between layers.
    pub untied: Vec<String>,
    /// The recurrent nodes (LSTM, GRU, RNN) unrolled into primitive ops.
    pub unrolled: Vec<String>,
    /// The InstanceNormalization nodes written out in primitive ops.
    pub lowered: Vec<String>,
}

/// Checks that the model can be patched and returns its default-domain opset.
pub fn check_patchable(model: &ModelProto) -> Result<i64> {
    if let Some(loss) = crate::onnx::metadata(model, contract::keys::LOSS) {
        return Err(Error::patch(format!(
            "the model is already patched (its metadata records loss '{loss}'); patch the original model instead"
        )));
    }
    let opset = default_opset(model)
        .ok_or_else(|| Error::patch("the model imports no default-domain opset"))?;
    if opset < MIN_OPSET {
        return Err(Error::patch(format!(
            "the model uses opset {opset}, but the loss needs opset >= {MIN_OPSET} (SoftmaxCrossEntropyLoss); \
             re-export it, e.g. torch.onnx.export(model, x, f, opset_version=17); upgrading the opset in place \
             could change the meaning of existing nodes"
        )));
    }
    validate::check_input(model, "model")?;
    Ok(opset)
}

/// What `ldam-onnx patch` does: checks that `model` can be patched, finds its
/// logits to learn the number of classes, reads that many class counts from
/// `counts` (they replace `options.config.class_counts`), and patches. A
/// problem with the counts is an [`Error::Counts`]; any other names the model.
///
/// ```
/// use ldam_onnx::counts::CountsSource;
/// use ldam_onnx::ldam::LossConfig;
/// use ldam_onnx::patch::{patch_with_counts, PatchOptions};
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/mlp.onnx");
/// let model = ldam_onnx::onnx::io::load(path.as_ref())?.model;
/// let counts = CountsSource::List("5000,2997,1796,1077,645,387,232,139,83,50".into());
/// let options = PatchOptions::new(LossConfig::reference(Vec::new()));
/// let (patched, summary) = patch_with_counts(&model, &counts, &options)?;
/// assert_eq!(summary.head.classes, 10);
/// assert!(ldam_onnx::ldam::contract::is_patched(&patched));
/// # Ok::<(), ldam_onnx::Error>(())
/// ```
pub fn patch_with_counts(
    model: &ModelProto,
    counts: &CountsSource,
    options: &PatchOptions,
) -> Result<(ModelProto, PatchSummary)> {
    check_patchable(model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::patch("the model has no graph"))?;
    let head = head::detect(graph, options.logits.as_deref())?;
    let class_counts =
        crate::counts::resolve(counts, head.classes).map_err(|e| Error::Counts(Box::new(e)))?;
    let mut options = options.clone();
    options.config.class_counts = class_counts;
    patch(model, &options)
}

/// Appends the loss subgraph (and the cosine head when chosen) to `model`.
pub fn patch(model: &ModelProto, options: &PatchOptions) -> Result<(ModelProto, PatchSummary)> {
    let opset = check_patchable(model)?;
    let mut model = model.clone();
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::patch("the model has no graph"))?;
    let mut taken = NameSet::of_graph(graph);
    let untied = untie::untie(graph, &mut taken);
    // Zero initial states written at a fixed batch go before the recurrent
    // nodes are unrolled, and the batch is freed after, through plain ops.
    let zero_states = batch::drop_zero_initial_states(graph)?;
    let unrolled = recurrent::unroll(graph, opset)?;
    if !unrolled.is_empty() {
        taken = NameSet::of_graph(graph);
    }
    let mut freed_batch = batch::free_batch(graph, opset, &mut taken)?;
    if let Some(freed) = freed_batch.as_mut() {
        freed.rewritten.extend(zero_states);
    }
    let lowered = instance_norm::lower(graph, opset, &mut taken)?;
    let batchnorm_converted = match options.batchnorm {
        BatchNormMode::Train => {
            batchnorm::to_training_mode(graph, opset, &mut |base| taken.fresh(base))
        }
        BatchNormMode::Frozen => Vec::new(),
    };
    let head = head::detect(graph, options.logits.as_deref())?;
    let config = &options.config;
    if config.class_counts.len() != head.classes {
        return Err(Error::config(format!(
            "{} class counts were given, but the logits '{}' have {} classes",
            config.class_counts.len(),
            head.logits,
            head.classes
        )));
    }
    config.validate()?;

    let mut names = options.names.clone();
    let adds_logits_output = !(head.logits_is_output && head.logits == names.logits);
    let required = [
        (&names.labels, "labels_name"),
        (&names.epoch, "epoch_name"),
        (&names.loss, "loss_name"),
    ];
    for (name, setting) in required
        .iter()
        .copied()
        .chain([(&names.logits, "logits_output_name")])
    {
        // An empty name means "absent" to ONNX: no input or output can have it.
        if name.is_empty() {
            return Err(Error::setting(
                setting,
                "is empty: an empty name cannot name an input or output",
            ));
        }
    }
    for (name, setting) in required {
        if !taken.claim(name) {
            return Err(Error::NameTaken {
                name: name.clone(),
                setting,
            });
        }
    }
    // A model ending in Softmax often names that output `logits`: the true
    // logits before it then get a free name rather than a refusal.
    let mut logits_renamed = None;
    if adds_logits_output && !taken.claim(&names.logits) {
        if names.logits != ContractNames::default().logits {
            return Err(Error::NameTaken {
                name: names.logits.clone(),
                setting: "logits_output_name",
            });
        }
        names.logits = taken.fresh(&names.logits);
        logits_renamed = Some(names.logits.clone());
    }
    let names = &names;

    let (cosine, head_note) = choose_head(&head, options.head, config.loss)?;
    let mut b = Emitter::new(taken, PREFIX, opset);
    let mut appended_nodes = 0;
    if cosine {
        let layer = head
            .linear
            .as_ref()
            .expect("choose_head only picks cosine with a linear layer");
        let replacement = cosine::emit(&mut b, layer, &head.logits);
        appended_nodes += replacement.len();
        replace_linear_layer(graph, layer, replacement);
    }
    let io = loss::LossIo {
        logits: &head.logits,
        labels: &names.labels,
        epoch: &names.epoch,
        loss: &names.loss,
    };
    loss::emit(&mut b, config, &io)?;
    if adds_logits_output {
        b.op_into("Identity", &[&head.logits], vec![], &names.logits);
    }
    appended_nodes += b.nodes.len();
    let appended_initializers: Vec<String> = b
        .initializers
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    graph.node.append(&mut b.nodes);
    graph.initializer.append(&mut b.initializers);

    graph.input.push(value_info(
        &names.labels,
        INT64,
        std::slice::from_ref(&head.batch),
    ));
    graph.input.push(value_info(&names.epoch, INT64, &[]));
    graph.output.push(value_info(&names.loss, FLOAT, &[]));
    let mut new_outputs = vec![names.loss.clone()];
    if adds_logits_output {
        graph.output.push(value_info(
            &names.logits,
            FLOAT,
            &[head.batch.clone(), Dim::Fixed(head.classes as i64)],
        ));
        new_outputs.push(names.logits.clone());
    }

    model.metadata_props.extend(
        PatchRecord {
            config: config.clone(),
            logits: head.logits.clone(),
            head: if cosine { "cosine" } else { "keep" }.to_string(),
            labels_input: names.labels.clone(),
            epoch_input: names.epoch.clone(),
            loss_output: names.loss.clone(),
            logits_output: names.logits.clone(),
        }
        .entries(),
    );
    contract::set(
        &mut model,
        contract::keys::BATCHNORM_MODE,
        options.batchnorm.to_string(),
    );
    validate::check_model(&model).map_err(|e| {
        Error::invalid(format!(
            "the patched graph failed its structural check (a bug): {e}"
        ))
    })?;

    let summary = PatchSummary {
        head,
        cosine,
        head_note,
        appended_nodes,
        appended_initializers,
        new_inputs: vec![names.labels.clone(), names.epoch.clone()],
        new_outputs,
        freed_batch,
        batchnorm_converted,
        logits_renamed,
        untied,
        unrolled,
        lowered,
    };
    Ok((model, summary))
}

/// Decides whether to rewrite the head, and says why in a line for the user.
fn choose_head(head: &Head, mode: HeadMode, loss: LossKind) -> Result<(bool, HeadNote)> {
    let layer = match (mode, &head.linear) {
        (HeadMode::Keep, _) => return Ok((false, HeadNote::KeptAsAsked)),
        (HeadMode::Cosine, Some(layer)) => layer,
        (HeadMode::Auto, Some(layer)) if loss == LossKind::Ldam => layer,
        (HeadMode::Auto, Some(_)) => {
            return Ok((false, HeadNote::KeptForLoss(loss)))
        }
        (HeadMode::Cosine, None) => {
            return Err(Error::setting(
                "head",
                format!(
                    "cosine needs a final Gemm or MatMul(+Add) with an initializer weight, but the logits '{}' are {}",
                    head.logits,
                    producer_description(head)
                ),
            ))
        }
        (HeadMode::Auto, None) => {
            return Ok((
                false,
                HeadNote::KeptWithoutLinear {
                    logits: head.logits.clone(),
                    producer: producer_description(head),
                },
            ))
        }
    };
    Ok((
        true,
        HeadNote::Cosine {
            node: layer.node_name.clone(),
            weight: layer.weight.clone(),
            bias: layer.bias.clone(),
            chosen: mode != HeadMode::Auto,
        },
    ))
}

fn producer_description(head: &Head) -> &'static str {
    match head.producer_op.as_deref() {
        None => "a graph input",
        Some(_) => "not produced by a linear layer with an initializer weight",
    }
}

/// Replaces the linear layer's node(s) with `replacement` at the same position,
/// and drops the bias initializer when nothing else reads it.
fn replace_linear_layer(
    graph: &mut GraphProto,
    layer: &head::LinearLayer,
    replacement: Vec<crate::onnx::NodeProto>,
) {
    let first = layer.matmul.map_or(layer.node, |m| m.min(layer.node));
    let removed: Vec<usize> = [Some(layer.node), layer.matmul]
        .into_iter()
        .flatten()
        .collect();
    let mut nodes = std::mem::take(&mut graph.node);
    let mut kept = Vec::with_capacity(nodes.len() + replacement.len());
    let mut replacement = Some(replacement);
    for (i, node) in nodes.drain(..).enumerate() {
        if i == first {
            kept.extend(replacement.take().into_iter().flatten());
        }
        if !removed.contains(&i) {
            kept.push(node);
        }
    }
    graph.node = kept;
    if let Some(bias) = &layer.bias {
        let still_read = graph.node.iter().any(|n| n.input.iter().any(|i| i == bias));
        if !still_read {
            graph.initializer.retain(|t| t.name() != bias);
            graph.input.retain(|i| i.name() != bias);
        }
    }
    // Intermediate values of the removed nodes no longer exist.
    let defined: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let stale: Vec<String> = graph
        .value_info
        .iter()
        .filter(|v| !defined.contains(v.name()))
        .map(|v| v.name().to_string())
        .collect();
    graph
        .value_info
        .retain(|v| !stale.iter().any(|s| s == v.name()));
}

/// The same patched model with deferred re-weighting starting at `drw_epoch`:
/// the graph's switch-point initializer and the recorded setting both change, so
/// the model stays self-describing. Only a model re-weighted with DRW has a switch.
pub fn with_drw_epoch(model: &ModelProto, drw_epoch: i64) -> Result<ModelProto> {
    let record = PatchRecord::read(model)?
        .ok_or_else(|| Error::config("the model is not patched, so it has no DRW epoch"))?;
    if record.config.reweight != crate::ldam::Reweight::Drw {
        return Err(Error::DrwEpochWithoutDrw {
            reweight: record.config.reweight.to_string(),
        });
    }
    if drw_epoch < 0 {
        return Err(Error::setting(
            "drw_epoch",
            format!("must be >= 0, got {drw_epoch}"),
        ));
    }
    let mut model = model.clone();
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;
    let slot = graph
        .initializer
        .iter_mut()
        .find(|t| t.name() == loss::DRW_EPOCH)
        .ok_or_else(|| {
            Error::invalid(format!(
                "the patched graph lacks its '{}' initializer",
                loss::DRW_EPOCH
            ))
        })?;
    *slot = crate::onnx::tensor::i64_tensor(loss::DRW_EPOCH, &[], &[drw_epoch]);
    let mut config = record.config.clone();
    config.drw_epoch = drw_epoch;
    let updated = PatchRecord { config, ..record }.entries();
    for entry in updated {
        if let Some(existing) = model
            .metadata_props
            .iter_mut()
            .find(|e| e.key() == entry.key())
        {
            *existing = entry;
        }
    }
    Ok(model)
}
