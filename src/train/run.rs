//! `ldam-onnx train` on files: datasets read from the paths of its
//! [`TrainSettings`], long-tailed as asked, trained by a
//! [`Training`](crate::train::training::Training) whose observers are the
//! progress view and the run folder ([`RunFolder`]), so that a run can be
//! continued from its folder with [`resume`].

use crate::backend::{Backend, Device};
use crate::distributed::World;
use crate::error::{Error, Result, SettingNames};
use crate::onnx::types::Dim;
use crate::patch::metadata::PatchRecord;
use crate::train::batches::{NormalizeChoice, Preprocess};
use crate::train::checkpoint::Checkpoint;
use crate::train::data::{self, Dataset, Split};
use crate::train::evaluate::{data_input, fit_to_input, limit};
use crate::train::longtail;
use crate::train::progress::ProgressView;
use crate::train::settings::TrainSettings;
use crate::train::training::{self, Training};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use crate::train::folder::{Finished, RunFolder, MODEL_FILE};

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
    /// How the run's notes and training errors name settings (the CLI names
    /// them by flag).
    pub names: SettingNames,
    /// The processes training together ([`World::from_environment`] under
    /// `mpirun`); only rank 0 writes into the run folder.
    pub world: Arc<World>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            device: Device::Cpu,
            quiet: true,
            interrupt: Arc::new(AtomicBool::new(false)),
            force: false,
            backend: None,
            names: SettingNames::Fields,
            world: Arc::new(World::single()),
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
    /// A rank other than 0 of a data-parallel run finished; rank 0 wrote the
    /// run's files.
    Replica {
        rank: usize,
    },
}

/// Starts a new run in `run_dir`.
pub fn start(mut settings: TrainSettings, run_dir: &Path, options: &RunOptions) -> Result<Outcome> {
    if let Some(backend) = options.backend {
        settings.recipe.backend = backend;
    }
    settings.validate()?;
    let settings = absolute_paths(settings)?;
    let writer = options.world.is_writer();
    if writer && Checkpoint::path(run_dir).exists() && !options.force {
        return Err(Error::RunExists {
            run_dir: run_dir.to_path_buf(),
        });
    }
    let mut training = prepare(&settings, options.device, &options.world)?;
    training.record_settings(settings_json(&settings)?);
    let first = training.checkpoint()?;
    if !writer {
        return run_in_folder(&settings, training, run_dir, options);
    }
    // Fails now, not after an epoch, on an unwritable folder or a disk without
    // room for the checkpoint and its replacement (written twice on purpose).
    prepare_dir(run_dir)?;
    if options.force {
        // The replaced run's results must not outlive it beside the new run's
        // checkpoint: a new run stopped early would leave them looking current.
        RunFolder::remove_results(run_dir)?;
    }
    for _ in 0..2 {
        first.save(run_dir).map_err(|e| Error::RunFolder {
            action: "cannot write checkpoints into",
            path: run_dir.to_path_buf(),
            cause: e.to_string(),
        })?;
    }
    // Its state can be a host copy of every state tensor (a trainer on a GPU,
    // libtorch): not kept while training.
    drop(first);
    run_in_folder(&settings, training, run_dir, options)
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
        settings.recipe.backend = backend;
        checkpoint.progress.settings = settings_json(&settings)?;
    }
    let mut training = prepare(&settings, options.device, &options.world)?;
    training.resume_from(checkpoint)?;
    run_in_folder(&settings, training, run_dir, options)
}

/// Runs `training` with the progress view and the run folder as observers.
fn run_in_folder(
    settings: &TrainSettings,
    mut training: Training,
    run_dir: &Path,
    options: &RunOptions,
) -> Result<Outcome> {
    training.set_interrupt_flag(options.interrupt.clone());
    training.name_settings(options.names);
    if !options.world.is_writer() {
        return Ok(match training.run(&mut ())? {
            training::Outcome::Interrupted { epoch, batch } => {
                Outcome::Interrupted { epoch, batch }
            }
            training::Outcome::Trained(_) => Outcome::Replica {
                rank: options.world.rank(),
            },
        });
    }
    let mut view = ProgressView::new(options.quiet);
    let mut folder = RunFolder::new(run_dir, settings_json(settings)?);
    match training.run(&mut (&mut view, &mut folder))? {
        training::Outcome::Interrupted { epoch, batch } => {
            Ok(Outcome::Interrupted { epoch, batch })
        }
        training::Outcome::Trained(_) => {
            let finished = folder
                .take_finished()
                .expect("the run folder writes its files when the run finishes");
            Ok(Outcome::Finished(Box::new(finished)))
        }
    }
}

fn settings_json(settings: &TrainSettings) -> Result<serde_json::Value> {
    serde_json::to_value(settings).map_err(|e| Error::invalid(format!("settings: {e}")))
}

/// Paths made absolute, so resuming works from any working directory.
fn absolute_paths(mut settings: TrainSettings) -> Result<TrainSettings> {
    for path in [
        &mut settings.model,
        &mut settings.train_data,
        &mut settings.test_data,
    ]
    .into_iter()
    .chain(settings.image_root.as_mut())
    .chain(settings.class_names.as_mut())
    {
        *path = std::path::absolute(&*path).map_err(|e| Error::io(path.clone(), e))?;
    }
    Ok(settings)
}

/// A model whose input fixes the batch takes batches of that size only: training
/// would stop inside the runtime at the first other size (an epoch's last,
/// shorter batch, at least), so it is refused before anything starts.
pub fn refuse_fixed_batch(model: &str, input: &str, dims: &[Dim], batch_size: usize) -> Result<()> {
    match dims.first() {
        Some(Dim::Fixed(size)) => Err(Error::config(format!(
            "{model}: input '{input}' takes batches of exactly {size}, so batches of {batch_size} \
             (and every shorter last batch) would fail mid-run; patch the original export again \
             (patch makes a fixed batch symbolic when the graph allows it), or {}",
            crate::patch::batch::DYNAMIC_BATCH_EXPORT
        ))),
        _ => Ok(()),
    }
}

fn prepare_dir(run_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(run_dir).map_err(|e| Error::RunFolder {
        action: "cannot create",
        path: run_dir.to_path_buf(),
        cause: e.to_string(),
    })
}

/// The model and datasets the settings name, read, checked (errors name the
/// flags), long-tailed as asked, and made into a [`Training`] on `device`.
fn prepare(settings: &TrainSettings, device: Device, world: &Arc<World>) -> Result<Training> {
    let loaded = crate::onnx::io::load_with_data(&settings.model)?;
    let model_name = settings.model.display().to_string();
    let mut patched = loaded.model;
    if PatchRecord::read(&patched)?.is_none() {
        return Err(Error::NotPatched {
            model: settings.model.clone(),
        });
    }
    if let Some(drw) = settings.recipe.drw_epoch {
        patched = crate::patch::with_drw_epoch(&patched, drw)?;
    }
    let record = PatchRecord::read(&patched)?
        .ok_or_else(|| Error::invalid("the DRW epoch rewrite dropped the patch record"))?;
    let classes = record.config.class_counts.len();
    let (input, dims) = data_input(&patched, &record.added_inputs())?;
    refuse_fixed_batch(&model_name, &input, &dims, settings.recipe.batch_size)?;

    let read = |path: &Path, split: Split, cap: Option<usize>| -> Result<Dataset> {
        let setting = match split {
            Split::Train => "train",
            Split::Test => "test",
        };
        let options = data::ReadOptions {
            image_root: settings.image_root.clone(),
            class_names: settings.class_names.clone(),
            skip_bad_images: settings.skip_bad_images,
            classes: Some(classes),
        };
        let dataset =
            data::load_with(path, split, &options).map_err(|e| Error::in_setting(setting, e))?;
        let mut dataset = fit_to_input(dataset, &input, &dims, settings.recipe.grey_to_rgb)?;
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
        limit(dataset, cap, settings.recipe.seed)
    };
    let full_train = read(&settings.train_data, Split::Train, settings.train_limit)?;
    let test = read(&settings.test_data, Split::Test, settings.test_limit)?;

    let normalize = settings
        .recipe
        .normalize
        .clone()
        .unwrap_or_else(|| NormalizeChoice::default_for(&full_train));
    // Statistics of the whole training set, as the reference's fixed CIFAR
    // constants are, before any long-tail subsampling.
    let normalization = normalize.resolve(&full_train)?;
    let preprocess = Preprocess {
        augment: settings.recipe.augment,
        normalization,
        seed: settings.recipe.seed,
    };
    preprocess.check(&full_train)?;

    let train = match settings.imbalance_ratio {
        Some(ratio) => {
            let counts = full_train.class_counts();
            let n_max = counts.iter().copied().min().unwrap_or(0) as usize;
            let wanted = longtail::long_tail_counts_with(
                n_max,
                classes,
                ratio,
                settings.imbalance_profile,
                settings.pareto_alpha,
            );
            longtail::subsample(&full_train, &wanted, settings.recipe.seed)?
        }
        None => full_train,
    };
    let train_counts = longtail::class_counts(&train.labels, classes);
    if train_counts != record.config.class_counts && !settings.recipe.allow_count_mismatch {
        return Err(Error::CountMismatch {
            model: model_name,
            patched: record.config.class_counts.clone(),
            train: train_counts,
        });
    }
    let mut config = settings.recipe.clone();
    config.device = device;
    // Rewritten above already, where its errors come before reading the data.
    config.drw_epoch = None;
    config.normalize = Some(match preprocess.normalization {
        Some(n) => NormalizeChoice::Fixed(n),
        None => NormalizeChoice::None,
    });
    Training::in_world(&patched, train, test, config, world.clone())
}
