//! What a `Training` tells the world while it runs,
//! and what it hands back at the end. The loop itself writes nothing: the
//! progress bar, the run folder (checkpoints, metrics, reports, the exported
//! model) and a library caller's own logging are all observers of the same events.

use crate::error::Result;
use crate::onnx::ModelProto;
use crate::train::checkpoint::Checkpoint;
use crate::train::metrics::Evaluation;
use crate::train::report::{EpochRecord, Report};

/// A completed run: the final test-set evaluation and the deployable model.
#[derive(Debug, Clone)]
pub struct Trained {
    pub evaluation: Evaluation,
    /// One record per epoch, as `metrics.csv` lists them.
    pub records: Vec<EpochRecord>,
    /// The inference model with the trained weights (no loss), recording its
    /// input normalisation and training class counts in `metadata_props`.
    pub model: ModelProto,
    /// Training examples per class, which decide the shot groups.
    pub train_counts: Vec<u64>,
    /// Every setting as the run resolved it (schedule, DRW epoch,
    /// normalisation, loss, head, runtime, set sizes), for reports.
    pub resolved: serde_json::Value,
}

impl Trained {
    /// Top-1 accuracy (%) on the test set.
    pub fn top1(&self) -> f64 {
        self.evaluation.top1()
    }

    /// The run's report; `settings` (a JSON object) is recorded with the
    /// resolved settings added under `resolved`.
    pub fn report(&self, settings: serde_json::Value) -> Result<Report> {
        let mut recorded = settings;
        if let serde_json::Value::Object(map) = &mut recorded {
            map.insert("resolved".into(), self.resolved.clone());
        }
        Report::new(
            &self.evaluation,
            &self.train_counts,
            recorded,
            crate::runtime::ORT_VERSION,
        )
    }
}

/// Before the first step of a run (or of its continuation).
#[derive(Debug, Clone)]
pub struct Start<'a> {
    /// What is trained on what: data, loss, schedule, input; one line each.
    pub summary: &'a [String],
    /// The runtime, its version and device.
    pub runtime: &'a str,
    /// Where a continued run resumes: `(epoch, batch)`, 0-based epoch.
    pub resumed_at: Option<(usize, usize)>,
}

/// An epoch begins (or continues after `done` batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    /// 0-based.
    pub epoch: usize,
    pub epochs: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// Batches already trained (a resumed epoch).
    pub done: usize,
}

/// One training step has been taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// 0-based epoch.
    pub epoch: usize,
    /// Batches of the epoch trained so far, this one included.
    pub batch: usize,
    /// The mean loss of this batch.
    pub batch_loss: f32,
    /// Mean loss and accuracy (%) over the epoch's batches so far.
    pub loss: f64,
    pub accuracy: f64,
    pub lr: f64,
    pub images_per_s: f64,
}

/// An epoch has been trained (and evaluated when due).
#[derive(Debug, Clone, Copy)]
pub struct EpochEnd<'a> {
    pub record: &'a EpochRecord,
    /// The test-set evaluation, when the epoch was evaluated.
    pub evaluation: Option<&'a Evaluation>,
    pub epochs: usize,
}

/// Why a checkpoint is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointReason {
    /// After every epoch.
    EpochEnd,
    /// Mid-epoch, because the run stops on its interrupt flag.
    Interrupted,
}

/// Receives a run's events; every method does nothing unless overridden. An
/// error from any of them stops the run and is returned by `Training::run`.
pub trait Observer {
    fn started(&mut self, _start: &Start<'_>) -> Result<()> {
        Ok(())
    }
    fn epoch_started(&mut self, _epoch: &EpochStart) -> Result<()> {
        Ok(())
    }
    fn step(&mut self, _step: &Step) -> Result<()> {
        Ok(())
    }
    /// The test-set evaluation of `epoch` begins.
    fn evaluating(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
    fn epoch_finished(&mut self, _end: &EpochEnd<'_>) -> Result<()> {
        Ok(())
    }
    /// The state and position to continue from; keep it to resume later.
    fn checkpoint(&mut self, _checkpoint: &Checkpoint, _reason: CheckpointReason) -> Result<()> {
        Ok(())
    }
    /// Where this observer keeps the last checkpoint, for messages (a file
    /// name); `None` when it keeps none.
    fn checkpoint_location(&self) -> Option<String> {
        None
    }
    /// The run stops on its interrupt flag at `(epoch, batch)`; a checkpoint of
    /// that position follows, unless the epoch's end has just delivered one.
    fn interrupted(&mut self, _epoch: usize, _batch: usize) -> Result<()> {
        Ok(())
    }
    /// The run is complete: the final evaluation and the deployable model.
    fn finished(&mut self, _trained: &Trained) -> Result<()> {
        Ok(())
    }
}

/// No observer: a run that only returns its result.
impl Observer for () {}

impl<T: Observer + ?Sized> Observer for &mut T {
    fn started(&mut self, start: &Start<'_>) -> Result<()> {
        (**self).started(start)
    }
    fn epoch_started(&mut self, epoch: &EpochStart) -> Result<()> {
        (**self).epoch_started(epoch)
    }
    fn step(&mut self, step: &Step) -> Result<()> {
        (**self).step(step)
    }
    fn evaluating(&mut self, epoch: usize) -> Result<()> {
        (**self).evaluating(epoch)
    }
    fn epoch_finished(&mut self, end: &EpochEnd<'_>) -> Result<()> {
        (**self).epoch_finished(end)
    }
    fn checkpoint(&mut self, checkpoint: &Checkpoint, reason: CheckpointReason) -> Result<()> {
        (**self).checkpoint(checkpoint, reason)
    }
    fn checkpoint_location(&self) -> Option<String> {
        (**self).checkpoint_location()
    }
    fn interrupted(&mut self, epoch: usize, batch: usize) -> Result<()> {
        (**self).interrupted(epoch, batch)
    }
    fn finished(&mut self, trained: &Trained) -> Result<()> {
        (**self).finished(trained)
    }
}

/// Two observers, told in order; the first location that is known wins.
impl<A: Observer, B: Observer> Observer for (A, B) {
    fn started(&mut self, start: &Start<'_>) -> Result<()> {
        self.0.started(start)?;
        self.1.started(start)
    }
    fn epoch_started(&mut self, epoch: &EpochStart) -> Result<()> {
        self.0.epoch_started(epoch)?;
        self.1.epoch_started(epoch)
    }
    fn step(&mut self, step: &Step) -> Result<()> {
        self.0.step(step)?;
        self.1.step(step)
    }
    fn evaluating(&mut self, epoch: usize) -> Result<()> {
        self.0.evaluating(epoch)?;
        self.1.evaluating(epoch)
    }
    fn epoch_finished(&mut self, end: &EpochEnd<'_>) -> Result<()> {
        self.0.epoch_finished(end)?;
        self.1.epoch_finished(end)
    }
    fn checkpoint(&mut self, checkpoint: &Checkpoint, reason: CheckpointReason) -> Result<()> {
        self.0.checkpoint(checkpoint, reason)?;
        self.1.checkpoint(checkpoint, reason)
    }
    fn checkpoint_location(&self) -> Option<String> {
        self.0
            .checkpoint_location()
            .or_else(|| self.1.checkpoint_location())
    }
    fn interrupted(&mut self, epoch: usize, batch: usize) -> Result<()> {
        self.0.interrupted(epoch, batch)?;
        self.1.interrupted(epoch, batch)
    }
    fn finished(&mut self, trained: &Trained) -> Result<()> {
        self.0.finished(trained)?;
        self.1.finished(trained)
    }
}
