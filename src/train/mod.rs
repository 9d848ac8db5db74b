//! Training on real data: datasets, long-tailed subsets, input pipeline,
//! schedules, the loop with checkpoints, metrics and reports.

pub mod batches;
pub mod checkpoint;
pub mod data;
pub mod evaluate;
pub mod longtail;
pub mod metrics;
pub mod progress;
pub mod report;
pub mod run;
pub mod schedule;
pub mod settings;
