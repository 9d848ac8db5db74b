//! Runtimes that execute training: one trait, one implementation per runtime.
//! The training loop only sees this trait.

pub mod distributed;
pub mod onnxruntime;
#[cfg(feature = "torch")]
pub mod torch;
pub mod trainer;

pub use trainer::{Backend, Batch, Device, StepOutput, Trainer};

use crate::compile::CompileOptions;
use crate::error::Result;
use crate::onnx::ModelProto;

/// A trainer for the patched model `patched` on `backend` and `device`.
pub fn create_trainer(
    backend: Backend,
    patched: &ModelProto,
    options: &CompileOptions,
    device: Device,
) -> Result<Box<dyn Trainer>> {
    match backend {
        Backend::OnnxRuntime => {
            let step = crate::compile::compile(patched, options)?;
            Ok(Box::new(onnxruntime::OrtTrainer::new(&step, device)?))
        }
        Backend::Torch => torch_trainer(patched, options, device, None),
    }
}

/// The libtorch trainer, one rank of `world` when given (data-parallel).
#[cfg(feature = "torch")]
pub(crate) fn torch_trainer(
    patched: &ModelProto,
    options: &CompileOptions,
    device: Device,
    world: Option<std::sync::Arc<crate::distributed::World>>,
) -> Result<Box<dyn Trainer>> {
    let trainer = torch::TorchTrainer::new(patched, options, device)?;
    Ok(Box::new(match world {
        Some(world) => trainer.in_world(world),
        None => trainer,
    }))
}

#[cfg(not(feature = "torch"))]
pub(crate) fn torch_trainer(
    _patched: &ModelProto,
    _options: &CompileOptions,
    _device: Device,
    _world: Option<std::sync::Arc<crate::distributed::World>>,
) -> Result<Box<dyn Trainer>> {
    Err(crate::error::Error::setting(
        "backend",
        "torch needs a build with `--features torch` (libtorch; see the README)",
    ))
}
