//! What every runtime implements and what the training loop sees of it: the
//! [`Trainer`] trait, the batches it takes, its step's output, and the choice of
//! runtime and device.

use crate::error::{Error, Result};
use crate::onnx::{ModelProto, TensorProto};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A batch of examples in NCHW float32, row-major.
#[derive(Debug, Clone)]
pub struct Batch {
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Batch {
    /// Examples `range` of the batch (a data-parallel rank's slice).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Batch {
        let per_example = self.data.len() / self.labels.len().max(1);
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = range.len() as i64;
        }
        Batch {
            shape,
            data: self.data[range.start * per_example..range.end * per_example].to_vec(),
            labels: self.labels[range].to_vec(),
        }
    }
}

/// What one training step reports.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub loss: f32,
    /// Row-major [N, C] logits of the batch (before the update).
    pub logits: Vec<f32>,
}

/// Where a runtime computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    crate::Error::setting(
                        "device",
                        format!("'{other}' is not one of: cpu, cuda, cuda:N"),
                    )
                }),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A runtime that trains a patched model step by step.
pub trait Trainer {
    /// One SGD step on `batch` at `epoch` with learning rate `lr`.
    fn step(&mut self, batch: &Batch, epoch: i64, lr: f32) -> Result<StepOutput>;
    /// Logits of an evaluation batch with the current weights (BatchNorm on its
    /// running statistics, Dropout off), row-major [N, C].
    fn predict(&mut self, batch: &Batch) -> Result<Vec<f32>>;
    /// The current value of every state tensor, by name.
    fn state(&self) -> Result<HashMap<String, TensorProto>>;
    /// Replaces the state (resuming from a checkpoint).
    fn set_state(&mut self, state: &HashMap<String, TensorProto>) -> Result<()>;
    /// The deployable inference model with the current weights.
    fn inference_model(&self) -> Result<ModelProto>;
    /// A short description for reports: runtime, version, device.
    fn describe(&self) -> String;
}

/// Which runtime trains (the setting `backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The compiled training-step graph in ONNX Runtime.
    #[serde(rename = "ort")]
    OnnxRuntime,
    /// The patched graph interpreted with libtorch and its autograd.
    Torch,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ort" | "onnxruntime" => Ok(Backend::OnnxRuntime),
            "torch" | "libtorch" => Ok(Backend::Torch),
            other => Err(Error::setting(
                "backend",
                format!("'{other}' is not one of: ort, torch"),
            )),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::OnnxRuntime => "ort",
            Backend::Torch => "torch",
        })
    }
}
