//! Training on real data: datasets, long-tailed subsets, schedules, metrics and
//! reports. The loop that runs a compiled training step builds on these.

pub mod data;
pub mod longtail;
pub mod metrics;
pub mod report;
pub mod schedule;
