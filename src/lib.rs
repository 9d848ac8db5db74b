//! ldam-onnx: patch ONNX classifiers with the LDAM-DRW long-tail loss, compile a
//! portable ONNX training step, and train it.
//!
//! The library does everything the `ldam-onnx` command does; the names below are
//! its public surface, the modules hold the rest (see `ARCHITECTURE.md` for the
//! layers). The path from bytes to a trained model:
//!
//! ```
//! use ldam_onnx::{from_bytes, patch_with_counts, CountsSource, LossConfig, PatchOptions};
//!
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/mlp.onnx");
//! let model = from_bytes(std::fs::read(path).expect("a bundled model"))?;
//! let counts = CountsSource::List("500,300,180,108,65,39,23,14,8,5".into());
//! // The class counts come from `counts`, the rest of the recipe is the paper's.
//! let options = PatchOptions::new(LossConfig::reference(Vec::new()));
//! let (patched, _) = patch_with_counts(&model, &counts, &options)?;
//! let step = ldam_onnx::compile(&patched, &ldam_onnx::CompileOptions::default())?;
//! assert!(step.state.iter().any(|s| s.name.ends_with(".momentum")));
//! # Ok::<(), ldam_onnx::Error>(())
//! ```
//!
//! Training in memory is [`Training`] (see its example); `train::run` adds the
//! run folder of `ldam-onnx train`.

#[macro_use]
mod keyword;

pub mod adjust;
pub mod autodiff;
pub mod backend;
pub mod compile;
pub mod counts;
pub mod distributed;
pub mod error;
pub mod inspect;
pub mod ldam;
mod npz;
pub mod onnx;
pub mod ops;
pub mod patch;
pub mod runtime;
pub mod train;

pub use backend::{Backend, Device};
pub use compile::{compile, CompileOptions, TrainStep};
pub use counts::CountsSource;
pub use error::{Error, Result, SettingNames};
pub use ldam::contract;
pub use ldam::{LossConfig, LossKind, Reweight};
pub use onnx::io::{from_bytes, load, save, to_bytes};
pub use onnx::ModelProto;
pub use patch::{patch, patch_with_counts, ContractNames, HeadMode, PatchOptions, PatchSummary};
pub use train::{
    Dataset, Observer, Outcome, Pixels, TrainConfig, TrainSettings, Trained, Training,
};
