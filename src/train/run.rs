//! The training loop: prepare data and trainer from [`TrainSettings`], train
//! epoch after epoch with checkpoints, and write the run's report and the
//! deployable model.
//!
//! Runs are reproducible to the bit for a seed: the epoch order, augmentation
//! and subsets are pure functions of (seed, epoch, position), and a checkpoint
//! records the exact position (epoch and batch) with the state tensors, so a
//! resumed run continues with the batches an uninterrupted one would have seen.

use crate::backend::{create_trainer, Backend, Device, Trainer};
use crate::compile::CompileOptions;
use crate::error::{Error, Result};
use crate::onnx::{ModelProto, StringStringEntryProto};
use crate::patch::metadata::PatchRecord;
use crate::train::batches::{rng_for, NormalizeChoice, Preprocess, Producer, STREAM_ORDER};
use crate::train::checkpoint::{Checkpoint, EpochTotals, Progress};
use crate::train::data::{self, Dataset, Split};
use crate::train::evaluate::{
    data_input, evaluate, fit_to_input, limit, NORMALIZE_KEY, TRAIN_COUNTS_KEY,
};
use crate::train::longtail;
use crate::train::metrics::{argmax, Evaluation};
use crate::train::progress::ProgressView;
use crate::train::report::{self, EpochRecord, Report, RunFiles};
use crate::train::schedule::{LrSchedule, Sampler};
use crate::train::settings::TrainSettings;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The deployable model's file name inside a run folder.
pub const MODEL_FILE: &str = "model.onnx";

/// How to run, beyond the settings (nothing here changes the results).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub device: Device,
    pub quiet: bool,
    /// Set (by a Ctrl-C handler) to stop after the current step with a checkpoint.
    pub interrupt: Arc<AtomicBool>,
    /// Replace a finished or unfinished run already in the folder.
    pub force: bool,
    /// The runtime to train on, overriding the settings' (and, on resume, the
    /// checkpoint's: both runtimes train the same step on the same state).
    pub backend: Option<Backend>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            device: Device::Cpu,
            quiet: true,
            interrupt: Arc::new(AtomicBool::new(false)),
            force: false,
            backend: None,
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Finished(Box<Finished>),
    /// Stopped by the interrupt flag; the checkpoint holds the position.
    Interrupted {
        epoch: usize,
        batch: usize,
    },
}

#[derive(Debug)]
pub struct Finished {
    pub report: Report,
    pub files: RunFiles,
    pub model: PathBuf,
    pub records: Vec<EpochRecord>,
}

/// Everything the loop needs, prepared from the settings.
struct Prepared {
    patched: ModelProto,
    record: PatchRecord,
    train: Arc<Dataset>,
    test: Dataset,
    train_counts: Vec<u64>,
    classes: usize,
    preprocess: Arc<Preprocess>,
    schedule: LrSchedule,
    sampler: Sampler,
    drw_epoch: i64,
    summary: Vec<String>,
}

/// Starts a new run in `run_dir`.
pub fn start(mut settings: TrainSettings, run_dir: &Path, options: &RunOptions) -> Result<Outcome> {
    if let Some(backend) = options.backend {
        settings.backend = backend;
    }
    settings.validate()?;
    let settings = absolute_paths(settings)?;
    if Checkpoint::path(run_dir).exists() && !options.force {
        return Err(Error::config(format!(
            "{} already holds a run; continue it with --resume {0}, or pass --force to start over",
            run_dir.display()
        )));
    }
    let prepared = prepare(&settings)?;
    let mut trainer = make_trainer(&settings, &prepared, options.device)?;
    let progress = Progress {
        epoch: 0,
        batch: 0,
        partial: EpochTotals::default(),
        records: Vec::new(),
        settings: settings_json(&settings)?,
    };
    // Fails now, not after an epoch, on an unwritable folder or a disk without
    // room for the checkpoint and its replacement (written twice on purpose).
    prepare_dir(run_dir)?;
    if options.force {
        // The replaced run's results must not outlive it beside the new run's
        // checkpoint: a new run stopped early would leave them looking current.
        remove_results(run_dir)?;
    }
    let first = Checkpoint {
        progress,
        state: trainer.state()?,
    };
    for _ in 0..2 {
        first.save(run_dir).map_err(|e| {
            Error::config(format!(
                "cannot write checkpoints into --out {}: {e}",
                run_dir.display()
            ))
        })?;
    }
    train_loop(
        &settings,
        &prepared,
        trainer.as_mut(),
        first.progress,
        run_dir,
        options,
    )
}

/// Continues the run in `run_dir` from its checkpoint, with its own settings.
pub fn resume(run_dir: &Path, options: &RunOptions) -> Result<Outcome> {
    let mut checkpoint = Checkpoint::load(run_dir)?;
    let mut settings: TrainSettings = serde_json::from_value(checkpoint.progress.settings.clone())
        .map_err(|e| {
            Error::config(format!(
                "{}: the checkpoint's settings are unreadable ({e}); was it written by another version?",
                Checkpoint::path(run_dir).display()
            ))
        })?;
    if let Some(backend) = options.backend {
        settings.backend = backend;
        checkpoint.progress.settings = settings_json(&settings)?;
    }
    let prepared = prepare(&settings)?;
    let mut trainer = make_trainer(&settings, &prepared, options.device)?;
    trainer.set_state(&checkpoint.state)?;
    train_loop(
        &settings,
        &prepared,
        trainer.as_mut(),
        checkpoint.progress,
        run_dir,
        options,
    )
}

fn settings_json(settings: &TrainSettings) -> Result<serde_json::Value> {
    serde_json::to_value(settings).map_err(|e| Error::invalid(format!("settings: {e}")))
}

/// Paths made absolute, so `--resume` works from any working directory.
fn absolute_paths(mut settings: TrainSettings) -> Result<TrainSettings> {
    for path in [
        &mut settings.model,
        &mut settings.train_data,
        &mut settings.test_data,
    ] {
        *path = std::path::absolute(&*path).map_err(|e| Error::io(path.clone(), e))?;
    }
    Ok(settings)
}

fn prepare_dir(run_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(run_dir)
        .map_err(|e| Error::config(format!("cannot create --out {}: {e}", run_dir.display())))
}

fn make_trainer(
    settings: &TrainSettings,
    prepared: &Prepared,
    device: Device,
) -> Result<Box<dyn Trainer>> {
    let options = CompileOptions {
        momentum: settings.momentum,
        weight_decay: settings.weight_decay,
        freeze: settings.freeze.clone(),
    };
    create_trainer(settings.backend, &prepared.patched, &options, device)
}

fn prepare(settings: &TrainSettings) -> Result<Prepared> {
    let loaded = crate::onnx::io::load(&settings.model)?;
    let model_name = settings.model.display().to_string();
    let mut patched = loaded.model;
    if crate::patch::metadata::read(&patched)?.is_none() {
        return Err(Error::config(format!(
            "{model_name} is not a patched model; run `ldam-onnx patch {model_name} --class-counts ...` \
             first (or `--labels-file` with the training labels)"
        )));
    }
    if let Some(drw) = settings.drw_epoch {
        patched = crate::patch::with_drw_epoch(&patched, drw)?;
    }
    let record = crate::patch::metadata::read(&patched)?
        .ok_or_else(|| Error::invalid("the DRW epoch rewrite dropped the patch record"))?;
    let classes = record.config.class_counts.len();
    let (input, dims) = data_input(&patched, &[&record.labels_input, &record.epoch_input])?;

    let read = |path: &Path, split: Split, cap: Option<usize>| -> Result<Dataset> {
        let flag = match split {
            Split::Train => "--train",
            Split::Test => "--test",
        };
        let dataset = data::load(path, split).map_err(|e| Error::config(format!("{flag}: {e}")))?;
        let mut dataset = fit_to_input(dataset, &input, &dims, settings.grey_to_rgb)?;
        if dataset.classes > classes {
            return Err(Error::config(format!(
                "{} has labels up to {}, but {model_name} has {classes} classes",
                dataset.source,
                dataset.classes - 1
            )));
        }
        // The model's class list, so that a class absent from the data still
        // counts (as zero) in subsets and counts.
        dataset.classes = classes;
        limit(dataset, cap, settings.seed)
    };
    let full_train = read(&settings.train_data, Split::Train, settings.train_limit)?;
    let test = read(&settings.test_data, Split::Test, settings.test_limit)?;

    let normalize = settings
        .normalize
        .clone()
        .unwrap_or_else(|| NormalizeChoice::default_for(&full_train));
    // Statistics of the whole training set, as the reference's fixed CIFAR
    // constants are, before any long-tail subsampling.
    let normalization = normalize.resolve(&full_train)?;
    let preprocess = Preprocess {
        augment: settings.augment,
        normalization,
        seed: settings.seed,
    };
    preprocess.check(&full_train)?;

    let train = match settings.imbalance_ratio {
        Some(ratio) => {
            let counts = full_train.class_counts();
            let n_max = counts.iter().copied().min().unwrap_or(0) as usize;
            let wanted =
                longtail::long_tail_counts(n_max, classes, ratio, settings.imbalance_profile);
            longtail::subsample(&full_train, &wanted, settings.seed)?
        }
        None => full_train,
    };
    let train_counts = longtail::class_counts(&train.labels, classes);
    if train_counts != record.config.class_counts && !settings.allow_count_mismatch {
        return Err(Error::config(format!(
            "the training set's class counts {train_counts:?} differ from the counts patched into \
             {model_name} {:?}; patch with these counts (`--class-counts {}`), or pass \
             --allow-count-mismatch to train anyway",
            record.config.class_counts,
            join(&train_counts)
        )));
    }
    let schedule = settings.schedule();
    let drw_epoch = record.config.drw_epoch;
    let sampler = settings.sampler(drw_epoch);
    let mut summary = vec![
        format!(
            "train: {} examples of {} ({}), class counts [{}]",
            train.len(),
            train.source,
            describe_shape(&train.shape),
            join(&train_counts)
        ),
        format!("test:  {} examples of {}", test.len(), test.source),
        format!(
            "loss: {} (reweight {}, DRW from epoch {drw_epoch}), head {}",
            record.config.loss, record.config.reweight, record.head
        ),
        format!(
            "schedule: {} epochs, lr {} with {} warm-up epochs, x{} after epochs {:?}; batch {}, sampler {}",
            settings.epochs,
            schedule.base_lr,
            schedule.warmup_epochs,
            schedule.factor,
            schedule.steps,
            settings.batch_size,
            settings.sampler
        ),
        format!(
            "input: augment {}, normalize {}",
            preprocess.augment,
            preprocess
                .normalization
                .as_ref()
                .map_or("none".into(), |n| n.to_arg())
        ),
    ];
    if record.config.reweight == crate::ldam::Reweight::Drw && drw_epoch >= settings.epochs as i64 {
        summary.push(format!(
            "note: DRW starts at epoch {drw_epoch}, after the last of {} epochs, so it never applies; \
             set --drw-epoch",
            settings.epochs
        ));
    }
    Ok(Prepared {
        patched,
        record,
        train: Arc::new(train),
        test,
        train_counts,
        classes,
        preprocess: Arc::new(preprocess),
        schedule,
        sampler,
        drw_epoch,
        summary,
    })
}

fn join(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_shape(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

fn train_loop(
    settings: &TrainSettings,
    prepared: &Prepared,
    trainer: &mut dyn Trainer,
    mut progress: Progress,
    run_dir: &Path,
    options: &RunOptions,
) -> Result<Outcome> {
    let mut view = ProgressView::new(options.quiet);
    for line in &prepared.summary {
        view.line(line);
    }
    view.line(&format!("runtime: {}", trainer.describe()));
    if progress.epoch > 0 || progress.batch > 0 {
        view.line(&format!(
            "resuming at epoch {}, batch {}",
            progress.epoch + 1,
            progress.batch
        ));
    }
    let train = &prepared.train;
    let batches = train.len().div_ceil(settings.batch_size);
    let mut last_eval: Option<Evaluation> = None;
    // Where the checkpoint on disk stands: the run starts from one (written at
    // start, or the one resumed), and each save moves it.
    let mut saved = (progress.epoch, progress.batch);

    while progress.epoch < settings.epochs {
        let epoch = progress.epoch;
        let lr = prepared.schedule.lr_at(epoch);
        let order = prepared.sampler.epoch_order(
            &train.labels,
            prepared.classes,
            epoch,
            settings.shuffle,
            &mut rng_for(&[settings.seed, STREAM_ORDER, epoch as u64]),
        );
        view.epoch_start(epoch, settings.epochs, batches, progress.batch);
        let producer = Producer::spawn(
            train.clone(),
            order,
            settings.batch_size,
            progress.batch,
            prepared.preprocess.clone(),
            epoch,
        );
        let mut clock = Instant::now();
        for (b, batch) in producer {
            let out = trainer.step(&batch, epoch as i64, lr as f32)?;
            if !out.loss.is_finite() {
                view.finish_bar();
                return Err(Error::Training {
                    reason: format!(
                        "the loss became {} at epoch {}, step {} (lr {}); training stopped and \
                         the last good checkpoint is kept in {} (epoch {}, batch {}). Lower --lr \
                         or check the data, then --resume or start again",
                        out.loss,
                        epoch + 1,
                        b + 1,
                        short_number(lr),
                        Checkpoint::path(run_dir).display(),
                        saved.0 + 1,
                        saved.1
                    ),
                });
            }
            let n = batch.labels.len();
            let totals = &mut progress.partial;
            totals.loss_sum += f64::from(out.loss) * n as f64;
            totals.correct += correct(&out.logits, &batch.labels, prepared.classes);
            totals.seen += n as u64;
            totals.seconds += clock.elapsed().as_secs_f64();
            clock = Instant::now();
            progress.batch = b + 1;
            view.step(
                totals.loss_sum / totals.seen as f64,
                100.0 * totals.correct as f64 / totals.seen as f64,
                lr,
                totals.seen as f64 / totals.seconds.max(1e-9),
            );
            if options.interrupt.load(Ordering::SeqCst) && progress.batch < batches {
                view.finish_bar();
                save(&progress, trainer, run_dir)?;
                return Ok(Outcome::Interrupted {
                    epoch,
                    batch: progress.batch,
                });
            }
        }
        let eval_started = Instant::now();
        let evaluate_now = (epoch + 1) % settings.eval_every == 0 || epoch + 1 == settings.epochs;
        let evaluation = if evaluate_now {
            view.evaluating();
            Some(evaluate_test(settings, prepared, trainer)?)
        } else {
            None
        };
        let groups = evaluation
            .as_ref()
            .map(|e| e.group_accuracy(&prepared.train_counts))
            .transpose()?;
        let totals = std::mem::take(&mut progress.partial);
        let record = EpochRecord {
            epoch,
            lr,
            train_loss: totals.loss_sum / totals.seen.max(1) as f64,
            train_acc: 100.0 * totals.correct as f64 / totals.seen.max(1) as f64,
            test_acc: evaluation.as_ref().map(Evaluation::top1),
            many: groups.and_then(|g| g.many),
            medium: groups.and_then(|g| g.medium),
            few: groups.and_then(|g| g.few),
            images_per_s: totals.seen as f64 / totals.seconds.max(1e-9),
            seconds: totals.seconds + eval_started.elapsed().as_secs_f64(),
        };
        view.finish_bar();
        view.line(&epoch_line(&record, settings.epochs));
        progress.records.push(record);
        progress.epoch += 1;
        progress.batch = 0;
        save(&progress, trainer, run_dir)?;
        saved = (progress.epoch, progress.batch);
        report::write_metrics_csv(run_dir, &progress.records)?;
        if evaluation.is_some() {
            last_eval = evaluation;
        }
        if options.interrupt.load(Ordering::SeqCst) && progress.epoch < settings.epochs {
            return Ok(Outcome::Interrupted {
                epoch: progress.epoch,
                batch: 0,
            });
        }
    }

    let evaluation = match last_eval {
        Some(e) => e,
        // A run resumed after its last epoch: evaluate the final weights again.
        None => evaluate_test(settings, prepared, trainer)?,
    };
    finish(settings, prepared, trainer, &progress, &evaluation, run_dir)
}

fn evaluate_test(
    settings: &TrainSettings,
    prepared: &Prepared,
    trainer: &mut dyn Trainer,
) -> Result<Evaluation> {
    evaluate(
        &prepared.test,
        &prepared.preprocess,
        settings.eval_batch_size,
        prepared.classes,
        |batch| trainer.predict(batch),
    )
}

/// Removes a finished run's results (its model and reports) from `run_dir`;
/// files that are not there are fine.
fn remove_results(run_dir: &Path) -> Result<()> {
    for name in [
        MODEL_FILE,
        report::REPORT_JSON,
        report::METRICS_CSV,
        report::CURVES_PNG,
        report::PER_CLASS_PNG,
    ] {
        let path = run_dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&path, e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A number as a person reads it: plain in the usual range, in exponent form
/// outside it (a diverging learning rate would otherwise print 300 digits).
fn short_number(value: f64) -> String {
    if value == 0.0 || (1e-4..1e6).contains(&value.abs()) {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

fn save(progress: &Progress, trainer: &dyn Trainer, run_dir: &Path) -> Result<()> {
    Checkpoint {
        progress: progress.clone(),
        state: trainer.state()?,
    }
    .save(run_dir)?;
    Ok(())
}

fn finish(
    settings: &TrainSettings,
    prepared: &Prepared,
    trainer: &dyn Trainer,
    progress: &Progress,
    evaluation: &Evaluation,
    run_dir: &Path,
) -> Result<Outcome> {
    let mut recorded = settings_json(settings)?;
    if let serde_json::Value::Object(map) = &mut recorded {
        map.insert(
            "resolved".into(),
            serde_json::json!({
                "lr_schedule": {
                    "base_lr": prepared.schedule.base_lr,
                    "warmup_epochs": prepared.schedule.warmup_epochs,
                    "steps": prepared.schedule.steps,
                    "factor": prepared.schedule.factor,
                },
                "drw_epoch": prepared.drw_epoch,
                "normalization": prepared.preprocess.normalization,
                "loss": prepared.record.config.loss.to_string(),
                "reweight": prepared.record.config.reweight.to_string(),
                "max_m": prepared.record.config.max_m,
                "scale": prepared.record.config.scale,
                "head": prepared.record.head,
                "runtime": trainer.describe(),
                "train_examples": prepared.train.len(),
                "test_examples": prepared.test.len(),
            }),
        );
    }
    let report = Report::new(
        evaluation,
        &prepared.train_counts,
        recorded,
        crate::runtime::ORT_VERSION,
    )?;
    let files = report::write_run(run_dir, &progress.records, &report)?;

    let mut model = trainer.inference_model()?;
    let mut note = |key: &str, value: String| {
        model.metadata_props.retain(|e| e.key() != key);
        model.metadata_props.push(StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value),
        });
    };
    if let Some(n) = &prepared.preprocess.normalization {
        note(NORMALIZE_KEY, n.to_arg());
    }
    note(TRAIN_COUNTS_KEY, join(&prepared.train_counts));
    let model_path = run_dir.join(MODEL_FILE);
    crate::onnx::io::save(
        &model,
        None,
        &model_path,
        crate::onnx::io::SaveOptions { overwrite: true },
    )?;
    Ok(Outcome::Finished(Box::new(Finished {
        report,
        files,
        model: model_path,
        records: progress.records.clone(),
    })))
}

/// Correct arg-max predictions in row-major `[N, C]` logits.
fn correct(logits: &[f32], labels: &[i64], classes: usize) -> u64 {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|&(row, &label)| argmax(row) as i64 == label)
        .count() as u64
}

fn epoch_line(record: &EpochRecord, epochs: usize) -> String {
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
