//! The run folder of `ldam-onnx train` as an [`Observer`]: `checkpoint.onnx` and
//! `metrics.csv` after every epoch (the checkpoint also on an interrupt), then
//! `report.json`, the plots and the deployable `model.onnx` when the run is done.

use crate::error::{Error, Result};
use crate::train::checkpoint::Checkpoint;
use crate::train::observer::{CheckpointReason, Observer, Trained};
use crate::train::report::{self, EpochRecord, Report, RunFiles};
use std::path::{Path, PathBuf};

/// The deployable model's file name inside a run folder.
pub const MODEL_FILE: &str = "model.onnx";
/// Its data file, written beside it when its weights pass the inline limit.
pub const MODEL_DATA_FILE: &str = "model.onnx.data";

/// What a finished run left in its folder.
#[derive(Debug)]
pub struct Finished {
    pub report: Report,
    pub files: RunFiles,
    pub model: PathBuf,
    pub records: Vec<EpochRecord>,
}

/// Keeps a run's files in `dir`.
pub struct RunFolder {
    dir: PathBuf,
    /// Recorded in `report.json` (with the resolved settings added).
    settings: serde_json::Value,
    finished: Option<Finished>,
}

impl RunFolder {
    /// The folder `dir` (which must exist) of a run with `settings`.
    pub fn new(dir: &Path, settings: serde_json::Value) -> RunFolder {
        RunFolder {
            dir: dir.to_path_buf(),
            settings,
            finished: None,
        }
    }

    /// What the finished run wrote; `None` before the run finished.
    pub fn take_finished(&mut self) -> Option<Finished> {
        self.finished.take()
    }

    /// Removes a run's results (its model, with its data file, and reports)
    /// from `dir`; files that are not there are fine.
    pub fn remove_results(dir: &Path) -> Result<()> {
        for name in [
            MODEL_FILE,
            MODEL_DATA_FILE,
            report::REPORT_JSON,
            report::METRICS_CSV,
            report::CURVES_PNG,
            report::PER_CLASS_PNG,
            report::CONFUSION_CSV,
        ] {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Observer for RunFolder {
    fn checkpoint(&mut self, checkpoint: &Checkpoint, reason: CheckpointReason) -> Result<()> {
        checkpoint.save(&self.dir)?;
        // After the checkpoint, so that the metrics never run ahead of the
        // position a resumed run continues from.
        if reason == CheckpointReason::EpochEnd {
            report::write_metrics_csv(&self.dir, &checkpoint.progress.records)?;
        }
        Ok(())
    }

    fn checkpoint_location(&self) -> Option<String> {
        Some(Checkpoint::path(&self.dir).display().to_string())
    }

    fn finished(&mut self, trained: &Trained) -> Result<()> {
        let report = trained.report(self.settings.clone())?;
        let files = report::write_run(&self.dir, &trained.records, &report)?;
        let model = self.dir.join(MODEL_FILE);
        crate::onnx::io::save(
            &trained.model,
            None,
            &model,
            crate::onnx::io::SaveOptions::overwriting(true),
        )?;
        self.finished = Some(Finished {
            report,
            files,
            model,
            records: trained.records.clone(),
        });
        Ok(())
    }
}
