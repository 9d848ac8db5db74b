//! ldam-onnx: patch ONNX classifiers with the LDAM-DRW long-tail loss, compile a
//! portable ONNX training step, and train it.

#[macro_use]
mod keyword;

pub mod autodiff;
pub mod backend;
pub mod compile;
pub mod counts;
pub mod error;
pub mod inspect;
pub mod ldam;
pub mod onnx;
pub mod ops;
pub mod patch;
pub mod runtime;
pub mod train;

pub use error::{Error, Result};
