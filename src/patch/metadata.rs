//! The loss configuration recorded in a patched model's `metadata_props`, so later
//! commands (`inspect`, `compile`, `train`) need no flags again.

use crate::error::{Error, Result};
use crate::ldam::LossConfig;
use crate::onnx::{metadata, ModelProto, StringStringEntryProto};

pub const PREFIX: &str = "ldam_onnx.";

/// What `patch` records besides the loss configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRecord {
    pub config: LossConfig,
    pub logits: String,
    /// `cosine` or `keep`.
    pub head: String,
    pub labels_input: String,
    pub epoch_input: String,
    pub loss_output: String,
    pub logits_output: String,
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// Whether the model was written by `patch`.
pub fn is_patched(model: &ModelProto) -> bool {
    metadata(model, &key("loss")).is_some()
}

/// The metadata entries for a patch, in a fixed order.
pub fn entries(record: &PatchRecord) -> Vec<StringStringEntryProto> {
    let c = &record.config;
    let counts = c
        .class_counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("class_counts", counts),
        ("loss", c.loss.to_string()),
        ("max_m", c.max_m.to_string()),
        ("scale", c.scale.to_string()),
        ("gamma", c.gamma.to_string()),
        ("reweight", c.reweight.to_string()),
        ("drw_epoch", c.drw_epoch.to_string()),
        ("beta", c.beta.to_string()),
        ("logits", record.logits.clone()),
        ("head", record.head.clone()),
        ("labels_input", record.labels_input.clone()),
        ("epoch_input", record.epoch_input.clone()),
        ("loss_output", record.loss_output.clone()),
        ("logits_output", record.logits_output.clone()),
    ]
    .into_iter()
    .map(|(k, v)| StringStringEntryProto {
        key: Some(key(k)),
        value: Some(v),
    })
    .collect()
}

/// A comma-separated list of class counts stored under metadata `key`.
pub fn parse_counts(text: &str, key: &str) -> Result<Vec<u64>> {
    text.split(',')
        .map(|n| n.trim().parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::invalid(format!("metadata '{key}' is not a list of counts")))
}

/// Reads the patch record back; `None` for a model that was never patched.
pub fn read(model: &ModelProto) -> Result<Option<PatchRecord>> {
    if !is_patched(model) {
        return Ok(None);
    }
    let get = |name: &str| -> Result<&str> {
        metadata(model, &key(name))
            .ok_or_else(|| Error::invalid(format!("patched model lacks metadata '{}'", key(name))))
    };
    let number = |name: &str| -> Result<f64> {
        let v = get(name)?;
        v.parse()
            .map_err(|_| Error::invalid(format!("metadata '{}' is not a number: '{v}'", key(name))))
    };
    let class_counts = parse_counts(get("class_counts")?, &key("class_counts"))?;
    let config = LossConfig {
        class_counts,
        loss: get("loss")?.parse()?,
        max_m: number("max_m")?,
        scale: number("scale")?,
        gamma: number("gamma")?,
        reweight: get("reweight")?.parse()?,
        drw_epoch: number("drw_epoch")? as i64,
        beta: number("beta")?,
    };
    Ok(Some(PatchRecord {
        config,
        logits: get("logits")?.to_string(),
        head: get("head")?.to_string(),
        labels_input: get("labels_input")?.to_string(),
        epoch_input: get("epoch_input")?.to_string(),
        loss_output: get("loss_output")?.to_string(),
        logits_output: get("logits_output")?.to_string(),
    }))
}
