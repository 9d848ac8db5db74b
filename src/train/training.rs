//! Training as a library value: a [`Training`] is built from a patched model,
//! datasets in memory and a [`TrainConfig`], and [`Training::run`] trains it epoch
//! after epoch, telling an [`Observer`] what happens. It touches no file: the run
//! folder of `ldam-onnx train` (the `run` module) is one observer, the
//! progress bar another.
//!
//! Runs are reproducible to the bit for a seed: the epoch order, augmentation
//! and subsets are pure functions of (seed, epoch, position), and a
//! [`Checkpoint`] records the exact position (epoch and batch) with the state
//! tensors, so a resumed run continues with the batches an uninterrupted one
//! would have seen.
//!
//! ```
//! use ldam_onnx::ldam::LossConfig;
//! use ldam_onnx::onnx::io;
//! use ldam_onnx::patch::{self, PatchOptions};
//! use ldam_onnx::train::batches::Augment;
//! use ldam_onnx::train::data::{Dataset, Pixels};
//! use ldam_onnx::train::settings::TrainConfig;
//! use ldam_onnx::train::training::{Outcome, Training};
//!
//! // The bundled MLP (Fashion-MNIST shaped: [N, 1, 28, 28] in, 10 classes out);
//! // reading it is the only file access of this example.
//! let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/models/mlp.onnx"))?;
//! let model = io::from_bytes(bytes)?;
//!
//! // 200 synthetic 28x28 images: class c is a bright band at rows 2c..2c+3 on noise.
//! let images = |n: usize, salt: usize| -> Result<Dataset, ldam_onnx::Error> {
//!     let mut pixels = Vec::with_capacity(n * 28 * 28);
//!     let mut labels = Vec::with_capacity(n);
//!     for i in 0..n {
//!         let class = i % 10;
//!         for p in 0..28 * 28 {
//!             let row = p / 28;
//!             let noise = ((i * 7919 + p * 104729 + salt) % 61) as u8;
//!             let band = (2 * class..2 * class + 3).contains(&row);
//!             pixels.push(if band { 200 + noise / 2 } else { noise });
//!         }
//!         labels.push(class as i64);
//!     }
//!     Dataset::new(Pixels::U8(pixels), vec![1, 28, 28], labels, 10, "synthetic")
//! };
//! let train = images(200, 0)?;
//! let test = images(100, 1)?;
//!
//! // LDAM-DRW with the reference settings for the training set's counts.
//! let options = PatchOptions::new(LossConfig::reference(train.class_counts()));
//! let (patched, _summary) = patch::patch(&model, &options)?;
//!
//! let config = TrainConfig {
//!     epochs: 1,
//!     batch_size: 10,
//!     augment: Augment::None, // a shifted crop would move the bands between classes
//!     ..TrainConfig::default()
//! };
//! let mut training = Training::new(&patched, train, test, config)?;
//! let Outcome::Trained(trained) = training.run(&mut ())? else {
//!     unreachable!("nothing sets the interrupt flag");
//! };
//! assert_eq!(trained.records.len(), 1);
//! assert!(trained.top1() > 20.0, "top-1 {}% after one epoch", trained.top1());
//! // `trained.model` is the deployable network: `io::to_bytes(&trained.model)`.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::backend::Trainer;
use crate::compile::CompileOptions;
use crate::distributed::World;
use crate::error::{Error, Result, SettingNames};
use crate::ldam::contract::{self, keys, PatchRecord};
use crate::onnx::ModelProto;
use crate::train::batches::{rng_for, NormalizeChoice, Preprocess, Producer, STREAM_ORDER};
use crate::train::checkpoint::{Checkpoint, EpochTotals, Progress};
use crate::train::data::{class_counts, Dataset};
use crate::train::evaluate::{evaluate, fit_to_input};
use crate::train::metrics::{argmax, Evaluation};
use crate::train::observer::{CheckpointReason, EpochEnd, EpochStart, Observer, Start, Step};
use crate::train::report::EpochRecord;
use crate::train::schedule::{LrSchedule, Sampler};
use crate::train::settings::TrainConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use crate::train::observer::Trained;

/// How [`Training::run`] ended.
#[derive(Debug)]
pub enum Outcome {
    Trained(Box<Trained>),
    /// Stopped by the interrupt flag; the observers received a checkpoint of
    /// the position, and running again continues from it.
    Interrupted {
        epoch: usize,
        batch: usize,
    },
}

/// A patched model, its data and its recipe, with the runtime that trains it
/// and the position reached so far.
pub struct Training {
    record: PatchRecord,
    config: TrainConfig,
    train: Arc<Dataset>,
    test: Dataset,
    train_counts: Vec<u64>,
    classes: usize,
    preprocess: Arc<Preprocess>,
    schedule: LrSchedule,
    sampler: Sampler,
    trainer: Box<dyn Trainer>,
    progress: Progress,
    interrupt: Arc<AtomicBool>,
    names: SettingNames,
    world: Arc<World>,
}

impl Training {
    /// Prepares a run of `config` on `patched` (a model written by
    /// [`crate::patch::patch`]): fits the datasets to the model's input,
    /// resolves the normalisation on `train`, checks that `train`'s class counts
    /// are the patched ones, and starts the runtime.
    pub fn new(
        patched: &ModelProto,
        train: Dataset,
        test: Dataset,
        config: TrainConfig,
    ) -> Result<Training> {
        Training::in_world(patched, train, test, config, Arc::new(World::single()))
    }

    /// [`Training::new`] as one rank of `world`: in an MPI world, each rank
    /// trains on its contiguous slice of every global batch of
    /// `config.batch_size` examples, which the world's size must divide
    /// ([`crate::backend::distributed`]).
    pub fn in_world(
        patched: &ModelProto,
        train: Dataset,
        test: Dataset,
        config: TrainConfig,
        world: Arc<World>,
    ) -> Result<Training> {
        config.validate()?;
        if config.batch_size % world.size() != 0 {
            return Err(Error::setting(
                "batch_size",
                format!(
                    "{} is the global batch and must split evenly over the {} ranks: use a multiple of {}",
                    config.batch_size,
                    world.size(),
                    world.size()
                ),
            ));
        }
        if PatchRecord::read(patched)?.is_none() {
            return Err(Error::config(
                "the model is not patched; patch it first (ldam_onnx::patch::patch)",
            ));
        }
        let patched = match config.drw_epoch {
            Some(drw) => crate::patch::with_drw_epoch(patched, drw)?,
            None => patched.clone(),
        };
        let record = PatchRecord::read(&patched)?
            .ok_or_else(|| Error::invalid("the DRW epoch rewrite dropped the patch record"))?;
        let classes = record.config.class_counts.len();
        let (input, dims) = contract::data_input(&patched, &record.added_inputs())?;
        let fit = |dataset: Dataset| -> Result<Dataset> {
            let mut dataset = fit_to_input(dataset, &input, &dims, config.grey_to_rgb)?;
            if dataset.classes > classes {
                return Err(Error::config(format!(
                    "{} has labels up to {}, but the model has {classes} classes",
                    dataset.source,
                    dataset.classes - 1
                )));
            }
            // The model's class list, so that a class absent from the data still
            // counts (as zero).
            dataset.classes = classes;
            Ok(dataset)
        };
        let (train, test) = (fit(train)?, fit(test)?);
        let normalize = config
            .normalize
            .clone()
            .unwrap_or_else(|| NormalizeChoice::default_for(&train));
        let preprocess = Preprocess {
            augment: config.augment,
            normalization: normalize.resolve(&train)?,
            seed: config.seed,
        };
        preprocess.check(&train)?;
        let train_counts = class_counts(&train.labels, classes);
        if train_counts != record.config.class_counts && !config.allow_count_mismatch {
            return Err(Error::config(format!(
                "the training set's class counts {train_counts:?} differ from the counts patched \
                 into the model {:?}; patch with these counts, or set allow_count_mismatch to \
                 train anyway",
                record.config.class_counts
            )));
        }
        let schedule = config.schedule();
        let sampler = config.sampler(record.config.drw_epoch);
        let options = CompileOptions {
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            freeze: config.freeze.clone(),
            sam: config.sam,
        };
        // The trainer holds the state from here on: the patched model's own
        // copy of the weights is not kept.
        let trainer = crate::backend::distributed::create_trainer(
            &world,
            config.backend,
            &patched,
            &options,
            config.device,
        )?;
        Ok(Training {
            record,
            config,
            train: Arc::new(train),
            test,
            train_counts,
            classes,
            preprocess: Arc::new(preprocess),
            schedule,
            sampler,
            trainer,
            progress: Progress {
                epoch: 0,
                batch: 0,
                partial: EpochTotals::default(),
                records: Vec::new(),
                settings: serde_json::Value::Null,
            },
            interrupt: Arc::new(AtomicBool::new(false)),
            names: SettingNames::Fields,
            world,
        })
    }

    /// Continues from `checkpoint` (its state and position) instead of the
    /// start: the next [`Training::run`] goes on where it stopped.
    pub fn resume_from(&mut self, checkpoint: Checkpoint) -> Result<()> {
        self.trainer.set_state(&checkpoint.state)?;
        self.progress = checkpoint.progress;
        Ok(())
    }

    /// The current state and position, as a checkpoint.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Ok(Checkpoint {
            progress: self.progress.clone(),
            state: self.trainer.state()?,
        })
    }

    /// Records `settings` in every checkpoint (what a resumed run is rebuilt
    /// from: for `ldam-onnx train`, its [`TrainSettings`](super::settings::TrainSettings)).
    pub fn record_settings(&mut self, settings: serde_json::Value) {
        self.progress.settings = settings;
    }

    /// A flag that stops the run after the current step, with a checkpoint
    /// (set it from a Ctrl-C handler or another thread).
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    /// Uses `flag` as the interrupt flag.
    pub fn set_interrupt_flag(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = flag;
    }

    /// How messages name settings: the config's fields (the default), or the
    /// command-line flags.
    pub fn name_settings(&mut self, names: SettingNames) {
        self.names = names;
    }

    /// The training set as trained: fitted to the model's input.
    pub fn train_set(&self) -> &Dataset {
        &self.train
    }

    /// The test set as evaluated: fitted to the model's input.
    pub fn test_set(&self) -> &Dataset {
        &self.test
    }

    /// Where the run stands: `(epoch, batch)`, 0-based epoch.
    pub fn position(&self) -> (usize, usize) {
        (self.progress.epoch, self.progress.batch)
    }

    /// What is trained on what, one line each: data, loss, schedule, input,
    /// and a note when DRW would never apply.
    pub fn summary(&self) -> Vec<String> {
        let (train, test, record) = (&self.train, &self.test, &self.record);
        let schedule = &self.schedule;
        let drw_epoch = record.config.drw_epoch;
        let config = &self.config;
        let mut summary = vec![
            format!(
                "train: {} examples of {} ({}), class counts [{}]",
                train.len(),
                train.source,
                describe_shape(&train.shape),
                join(&self.train_counts)
            ),
            format!("test:  {} examples of {}", test.len(), test.source),
            format!(
                "loss: {} (reweight {}, DRW from epoch {drw_epoch}), head {}",
                record.config.loss, record.config.reweight, record.head
            ),
            format!(
                "schedule: {} epochs, lr {} with {} warm-up epochs, x{} after epochs {:?}; batch {}, sampler {}",
                config.epochs,
                schedule.base_lr,
                schedule.warmup_epochs,
                schedule.factor,
                schedule.steps,
                config.batch_size,
                config.sampler
            ),
            format!(
                "input: augment {}, normalize {}",
                self.preprocess.augment,
                self.preprocess
                    .normalization
                    .as_ref()
                    .map_or("none".into(), |n| n.to_arg())
            ),
        ];
        if record.config.reweight == crate::ldam::Reweight::Drw && drw_epoch >= config.epochs as i64
        {
            summary.push(format!(
                "note: DRW starts at epoch {drw_epoch}, after the last of {} epochs, so it never applies; \
                 set {}",
                config.epochs,
                self.names.of("drw_epoch")
            ));
        }
        summary
    }

    /// Trains until the configured number of epochs, or until the interrupt
    /// flag is set, telling `observer` every event. A run that has already
    /// reached its last epoch evaluates and finishes again.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<Outcome> {
        let epochs = self.config.epochs;
        let resumed_at = (self.progress.epoch > 0 || self.progress.batch > 0)
            .then_some((self.progress.epoch, self.progress.batch));
        observer.started(&Start {
            summary: &self.summary(),
            runtime: &self.trainer.describe(),
            resumed_at,
        })?;
        let train = self.train.clone();
        let batch_size = self.config.batch_size;
        let batches = train.len().div_ceil(batch_size);
        let mut last_eval: Option<Evaluation> = None;
        // The last position observers received a checkpoint of: the run starts
        // from one (the start, or the checkpoint resumed), and each checkpoint
        // moves it.
        let mut saved = (self.progress.epoch, self.progress.batch);

        while self.progress.epoch < epochs {
            let epoch = self.progress.epoch;
            let lr = self.schedule.lr_at(epoch);
            let order = self.sampler.epoch_order(
                &train.labels,
                self.classes,
                epoch,
                self.config.shuffle,
                &mut rng_for(&[self.config.seed, STREAM_ORDER, epoch as u64]),
            );
            observer.epoch_started(&EpochStart {
                epoch,
                epochs,
                batches,
                done: self.progress.batch,
            })?;
            let producer = Producer::spawn(
                train.clone(),
                order,
                batch_size,
                self.progress.batch,
                self.preprocess.clone(),
                epoch,
            );
            let mut clock = Instant::now();
            for (b, batch) in producer {
                let batch = batch?;
                let out = self.trainer.step(&batch, epoch as i64, lr as f32)?;
                if !out.loss.is_finite() {
                    return Err(self.non_finite(out.loss, (epoch, b), lr, saved, &*observer));
                }
                let n = batch.labels.len();
                let totals = &mut self.progress.partial;
                totals.loss_sum += f64::from(out.loss) * n as f64;
                totals.correct += correct(&out.logits, &batch.labels, self.classes);
                totals.seen += n as u64;
                totals.seconds += clock.elapsed().as_secs_f64();
                clock = Instant::now();
                self.progress.batch = b + 1;
                observer.step(&Step {
                    epoch,
                    batch: b + 1,
                    batch_loss: out.loss,
                    loss: totals.loss_sum / totals.seen as f64,
                    accuracy: 100.0 * totals.correct as f64 / totals.seen as f64,
                    lr,
                    images_per_s: totals.seen as f64 / totals.seconds.max(1e-9),
                })?;
                // All ranks stop after the same step, whichever saw the interrupt.
                let stop = self.world.any(self.interrupt.load(Ordering::SeqCst))?;
                if stop && self.progress.batch < batches {
                    let batch = self.progress.batch;
                    observer.interrupted(epoch, batch)?;
                    observer.checkpoint(&self.checkpoint()?, CheckpointReason::Interrupted)?;
                    return Ok(Outcome::Interrupted { epoch, batch });
                }
            }
            let eval_started = Instant::now();
            let evaluate_now = (epoch + 1) % self.config.eval_every == 0 || epoch + 1 == epochs;
            let evaluation = if evaluate_now {
                observer.evaluating(epoch)?;
                Some(self.evaluate()?)
            } else {
                None
            };
            let groups = evaluation
                .as_ref()
                .map(|e| e.group_accuracy(&self.train_counts))
                .transpose()?;
            let totals = std::mem::take(&mut self.progress.partial);
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
            observer.epoch_finished(&EpochEnd {
                record: &record,
                evaluation: evaluation.as_ref(),
                epochs,
            })?;
            self.progress.records.push(record);
            self.progress.epoch += 1;
            self.progress.batch = 0;
            observer.checkpoint(&self.checkpoint()?, CheckpointReason::EpochEnd)?;
            saved = (self.progress.epoch, self.progress.batch);
            if evaluation.is_some() {
                last_eval = evaluation;
            }
            let stop = self.world.any(self.interrupt.load(Ordering::SeqCst))?;
            if stop && self.progress.epoch < epochs {
                observer.interrupted(self.progress.epoch, 0)?;
                return Ok(Outcome::Interrupted {
                    epoch: self.progress.epoch,
                    batch: 0,
                });
            }
        }

        let evaluation = match last_eval {
            Some(e) => e,
            // A run resumed after its last epoch: evaluate the final weights again.
            None => self.evaluate()?,
        };
        let trained = self.trained(evaluation)?;
        observer.finished(&trained)?;
        Ok(Outcome::Trained(Box::new(trained)))
    }

    fn evaluate(&mut self) -> Result<Evaluation> {
        let trainer = &mut self.trainer;
        evaluate(
            &self.test,
            &self.preprocess,
            self.config.eval_batch_size,
            self.classes,
            |batch| trainer.predict(batch),
        )
    }

    /// The error of a non-finite loss at `(epoch, batch index)`.
    fn non_finite(
        &self,
        loss: f32,
        (epoch, batch): (usize, usize),
        lr: f64,
        saved: (usize, usize),
        observer: &dyn Observer,
    ) -> Error {
        let kept = match observer.checkpoint_location() {
            Some(location) => format!(
                "training stopped and the last good checkpoint is kept in {location} (epoch {}, batch {})",
                saved.0 + 1,
                saved.1
            ),
            None => format!(
                "training stopped; no observer keeps checkpoints (the last good one was at epoch {}, batch {})",
                saved.0 + 1,
                saved.1
            ),
        };
        Error::Training {
            reason: format!(
                "the loss became {loss} at epoch {}, step {} (lr {}); {kept}. Lower {} or check the \
                 data, then {} or start again",
                epoch + 1,
                batch + 1,
                short_number(lr),
                self.names.of("lr"),
                self.names.of("resume")
            ),
        }
    }

    /// The completed run: the deployable model with its input normalisation and
    /// training counts recorded, and the resolved settings.
    fn trained(&self, evaluation: Evaluation) -> Result<Trained> {
        let mut model = self.trainer.inference_model()?;
        if let Some(n) = &self.preprocess.normalization {
            contract::set(&mut model, keys::INPUT_NORMALIZATION, n.to_arg());
        }
        contract::set(
            &mut model,
            keys::TRAIN_CLASS_COUNTS,
            join(&self.train_counts),
        );
        let schedule = &self.schedule;
        let loss = &self.record.config;
        let resolved = serde_json::json!({
            "lr_schedule": {
                "base_lr": schedule.base_lr,
                "warmup_epochs": schedule.warmup_epochs,
                "steps": schedule.steps,
                "factor": schedule.factor,
            },
            "drw_epoch": loss.drw_epoch,
            "normalization": self.preprocess.normalization,
            "loss": loss.loss.to_string(),
            "reweight": loss.reweight.to_string(),
            "max_m": loss.max_m,
            "scale": loss.scale,
            "head": self.record.head,
            "runtime": self.trainer.describe(),
            "train_examples": self.train.len(),
            "test_examples": self.test.len(),
            "class_names": self.train.class_names.as_ref().or(self.test.class_names.as_ref()),
            "skipped_images": self.train.skipped_images + self.test.skipped_images,
        });
        Ok(Trained {
            evaluation,
            records: self.progress.records.clone(),
            model,
            train_counts: self.train_counts.clone(),
            resolved,
        })
    }
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

/// A number as a person reads it: plain in the usual range, in exponent form
/// outside it (a diverging learning rate would otherwise print 300 digits).
fn short_number(value: f64) -> String {
    if value == 0.0 || (1e-4..1e6).contains(&value.abs()) {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

/// Correct arg-max predictions in row-major `[N, C]` logits.
fn correct(logits: &[f32], labels: &[i64], classes: usize) -> u64 {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|&(row, &label)| argmax(row) as i64 == label)
        .count() as u64
}
