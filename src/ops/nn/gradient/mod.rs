//! Gradient rules of the neural-network ops, one file per job: convolution and
//! its unfolding (`conv`), pooling (`pool`), normalisation (`normalization`),
//! dropout (`dropout`); the window arithmetic the first two share (`geometry`)
//! and the vocabulary of every rule (`common`). The registry names the rules
//! through the re-exports below (`nn::gradient::conv`).

mod common;
mod conv;
mod dropout;
mod geometry;
mod normalization;
mod pool;

pub use conv::conv;
pub use dropout::dropout;
pub use normalization::{batch_normalization, layer_normalization};
pub use pool::{average_pool, global_average_pool, max_pool, resize};
