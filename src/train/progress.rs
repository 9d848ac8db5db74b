//! What a user sees while a run trains: a progress bar per epoch on a terminal
//! (indicatif) and one summary line per epoch on stderr either way, so logs of
//! non-interactive runs stay readable. [`ProgressView`] is an [`Observer`] of a
//! `Training`.

use crate::error::Result;
use crate::train::observer::{EpochEnd, EpochStart, Observer, Start, Step, Trained};
use crate::train::report::EpochRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

pub struct ProgressView {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl ProgressView {
    /// `quiet` prints nothing at all (tests, embedding).
    pub fn new(quiet: bool) -> ProgressView {
        ProgressView { quiet, bar: None }
    }

    /// Starts the bar of `epoch` (0-based) with `batches` steps, `done` of them
    /// already trained (a resumed epoch).
    pub fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize, done: usize) {
        self.finish_bar();
        if self.quiet {
            return;
        }
        let bar = ProgressBar::with_draw_target(
            Some(batches as u64),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        let style =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
        bar.set_position(done as u64);
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    pub fn step(&self, loss: f64, accuracy: f64, lr: f64, images_per_s: f64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!(
                "loss {loss:.4} acc {accuracy:.1}% lr {lr:.3e} {images_per_s:.0} img/s"
            ));
        }
    }

    /// Shows that the epoch's evaluation is running.
    pub fn evaluating(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message("evaluating on the test set");
        }
    }

    /// A line that stays (epoch summaries, notes), printed above any bar.
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(text),
            _ => eprintln!("{text}"),
        }
    }

    pub fn finish_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for ProgressView {
    fn started(&mut self, start: &Start<'_>) -> Result<()> {
        for line in start.summary {
            self.line(line);
        }
        self.line(&format!("runtime: {}", start.runtime));
        if let Some((epoch, batch)) = start.resumed_at {
            self.line(&format!("resuming at epoch {}, batch {batch}", epoch + 1));
        }
        Ok(())
    }

    fn epoch_started(&mut self, e: &EpochStart) -> Result<()> {
        self.epoch_start(e.epoch, e.epochs, e.batches, e.done);
        Ok(())
    }

    fn step(&mut self, s: &Step) -> Result<()> {
        ProgressView::step(self, s.loss, s.accuracy, s.lr, s.images_per_s);
        Ok(())
    }

    fn evaluating(&mut self, _epoch: usize) -> Result<()> {
        ProgressView::evaluating(self);
        Ok(())
    }

    fn epoch_finished(&mut self, end: &EpochEnd<'_>) -> Result<()> {
        self.finish_bar();
        self.line(&epoch_line(end.record, end.epochs));
        Ok(())
    }

    fn interrupted(&mut self, _epoch: usize, _batch: usize) -> Result<()> {
        self.finish_bar();
        Ok(())
    }

    fn finished(&mut self, _trained: &Trained) -> Result<()> {
        self.finish_bar();
        Ok(())
    }
}

/// The line that stays after an epoch.
pub fn epoch_line(record: &EpochRecord, epochs: usize) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    format!(
        "epoch {:>3}/{epochs}  lr {:.2e}  loss {:.4}  train {:.1}%  test {}%  many/medium/few {}/{}/{}  {:.0} img/s  {:.1} s",
        record.epoch + 1,
        record.lr,
        record.train_loss,
        record.train_acc,
        pct(record.test_acc),
        pct(record.many),
        pct(record.medium),
        pct(record.few),
        record.images_per_s,
        record.seconds
    )
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        self.finish_bar();
    }
}
