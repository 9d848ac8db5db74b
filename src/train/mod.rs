//! Training on real data: datasets, long-tailed subsets, input pipeline,
//! schedules, metrics and reports, and the loop as a library value
//! ([`Training`]) that observers ([`Observer`]) watch: the progress view, the run
//! folder of `ldam-onnx train` ([`run`]), or a caller's own.

pub mod batches;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod evaluate;
pub mod folder;
pub mod longtail;
pub mod metrics;
pub mod observer;
pub mod progress;
pub mod report;
pub mod run;
pub mod schedule;
pub mod settings;
pub mod training;

pub use data::{Dataset, Pixels};
pub use observer::{Observer, Trained};
pub use settings::{TrainConfig, TrainSettings};
pub use training::{Outcome, Training};
