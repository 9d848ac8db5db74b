//! Everything a training run depends on, as one serialisable value: the CLI
//! fills it, checkpoints store it, resuming continues with it, and the report
//! records it. [`TrainConfig`] is its part that does not read files: the recipe
//! of a `Training` on data in memory.

use crate::backend::{Backend, Device};
use crate::error::{Error, Result};
use crate::train::batches::{Augment, NormalizeChoice};
use crate::train::longtail::Profile;
use crate::train::schedule::{LrSchedule, Sampler};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

fn default_pareto_alpha() -> f64 {
    crate::train::longtail::DEFAULT_PARETO_ALPHA
}

/// The reference recipe's length, against which default LR steps are scaled.
pub const REFERENCE_EPOCHS: usize = 200;
/// The reference recipe's LR steps (1-based epoch counts) for 200 epochs.
pub const REFERENCE_LR_STEPS: [usize; 2] = [160, 180];
pub const REFERENCE_WARMUP: usize = 5;

/// How an epoch visits the training set (the setting `sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerChoice {
    Instance,
    /// RS: class-balanced re-sampling from the first epoch.
    ClassBalanced,
    /// DRS: instance sampling, class-balanced from the DRW epoch on.
    Deferred,
}

keyword_enum!(SamplerChoice {
    Instance => "instance",
    ClassBalanced => "class-balanced",
    Deferred => "deferred",
});

/// A run's settings: where its model and data are and how the data is
/// prepared, and the recipe ([`TrainConfig`], stored flattened: the settings'
/// JSON has one level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// The patched model (`ldam-onnx patch`).
    pub model: PathBuf,
    pub train_data: PathBuf,
    pub test_data: PathBuf,
    /// The folder the paths of list files (`.txt`) are relative to; `None`:
    /// each list's own folder.
    #[serde(default)]
    pub image_root: Option<PathBuf>,
    /// Class names, one per line (or an iNaturalist JSON file's
    /// `categories`), for reports; `None`: from the data where it tells them.
    #[serde(default)]
    pub class_names: Option<PathBuf>,
    /// Leave out and count image files that cannot be decoded, instead of
    /// stopping at the first.
    #[serde(default)]
    pub skip_bad_images: bool,
    /// Keep only this many training examples (a seeded random subset), before
    /// any long-tail subsampling.
    pub train_limit: Option<usize>,
    /// Keep only this many test examples (a seeded random subset).
    pub test_limit: Option<usize>,
    pub imbalance_ratio: Option<f64>,
    pub imbalance_profile: Profile,
    /// The shape of the `pareto` profile (ImageNet-LT: 6).
    #[serde(default = "default_pareto_alpha")]
    pub pareto_alpha: f64,
    /// How the run trains on the data.
    #[serde(flatten)]
    pub recipe: TrainConfig,
}

impl TrainSettings {
    /// The reference recipe for `model` on the given data.
    pub fn new(model: PathBuf, train_data: PathBuf, test_data: PathBuf) -> TrainSettings {
        TrainSettings {
            model,
            train_data,
            test_data,
            image_root: None,
            class_names: None,
            skip_bad_images: false,
            train_limit: None,
            test_limit: None,
            imbalance_ratio: None,
            imbalance_profile: Profile::Exp,
            pareto_alpha: crate::train::longtail::DEFAULT_PARETO_ALPHA,
            recipe: TrainConfig::default(),
        }
    }

    /// Rejects settings that cannot give a meaningful run, naming the setting.
    pub fn validate(&self) -> Result<()> {
        self.recipe.check_counts()?;
        if let Some(0) = self.train_limit {
            return Err(Error::setting("train_limit", "must be at least 1"));
        }
        if let Some(0) = self.test_limit {
            return Err(Error::setting("test_limit", "must be at least 1"));
        }
        if let Some(r) = self.imbalance_ratio {
            crate::train::longtail::check_ratio(r)?;
        }
        crate::train::longtail::check_alpha(self.pareto_alpha)?;
        self.recipe.check_rates()
    }
}

/// The recipe of a run on data already in memory: everything a `Training`
/// needs besides the patched model and the datasets. The default is the
/// reference recipe on the CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// `None`: the reference's 5, or less when the first LR step comes earlier.
    pub warmup_epochs: Option<usize>,
    /// 1-based epoch counts after which `lr` is multiplied by `lr_factor`;
    /// `None`: the reference's 160 and 180, scaled to `epochs`.
    pub lr_steps: Option<Vec<usize>>,
    pub lr_factor: f64,
    /// `None`: the DRW epoch recorded in the patched model.
    pub drw_epoch: Option<i64>,
    pub sampler: SamplerChoice,
    /// Seeds the epoch order and the augmentation.
    pub seed: u64,
    pub shuffle: bool,
    /// SGD momentum (PyTorch form: v = mu v + (g + wd w)).
    pub momentum: f64,
    pub weight_decay: f64,
    /// Initializers to keep fixed.
    pub freeze: Vec<String>,
    /// Sharpness-aware minimisation's radius; `None`: plain SGD.
    #[serde(default)]
    pub sam: Option<f64>,
    /// Evaluate on the test set every this many epochs (and after the last).
    pub eval_every: usize,
    pub eval_batch_size: usize,
    pub augment: Augment,
    /// `None`: the default for the training set (its own statistics for u8
    /// images, none for float data).
    pub normalize: Option<NormalizeChoice>,
    /// Repeat grey images into the model's channels.
    pub grey_to_rgb: bool,
    /// Train even when the training set's class counts differ from the model's.
    pub allow_count_mismatch: bool,
    pub backend: Backend,
    /// Where this process trains: chosen per run (`--device`), never stored
    /// with the settings, so a run resumes on any machine.
    #[serde(skip, default = "cpu")]
    pub device: Device,
}

fn cpu() -> Device {
    Device::Cpu
}

impl Default for TrainConfig {
    /// The reference recipe on the CPU.
    fn default() -> Self {
        TrainConfig {
            epochs: REFERENCE_EPOCHS,
            batch_size: 128,
            lr: 0.1,
            warmup_epochs: None,
            lr_steps: None,
            lr_factor: 0.01,
            drw_epoch: None,
            sampler: SamplerChoice::Instance,
            seed: 0,
            shuffle: true,
            momentum: 0.9,
            weight_decay: 2e-4,
            freeze: Vec::new(),
            sam: None,
            eval_every: 1,
            eval_batch_size: 512,
            augment: Augment::CropFlip,
            normalize: None,
            grey_to_rgb: false,
            allow_count_mismatch: false,
            backend: Backend::OnnxRuntime,
            device: Device::Cpu,
        }
    }
}

impl TrainConfig {
    /// Rejects a recipe that cannot give a meaningful run, naming the setting.
    pub fn validate(&self) -> Result<()> {
        self.check_counts()?;
        self.check_rates()
    }

    /// Epochs, batch sizes and the evaluation interval are at least 1.
    fn check_counts(&self) -> Result<()> {
        for (field, value) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_every", self.eval_every),
            ("eval_batch_size", self.eval_batch_size),
        ] {
            if value == 0 {
                return Err(Error::setting(field, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The optimizer's numbers and the LR schedule make sense.
    fn check_rates(&self) -> Result<()> {
        for (field, v) in [
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::setting(
                    field,
                    format!("must be a number >= 0, got {v}"),
                ));
            }
        }
        self.schedule().validate()
    }

    /// The LR schedule: the explicit settings, or the reference's scaled to `epochs`.
    pub fn schedule(&self) -> LrSchedule {
        let steps = self.lr_steps.clone().unwrap_or_else(|| {
            let mut steps: Vec<usize> = REFERENCE_LR_STEPS
                .iter()
                .map(|s| (s * self.epochs).div_ceil(REFERENCE_EPOCHS))
                .filter(|&s| s > 0)
                .collect();
            steps.dedup();
            steps
        });
        let warmup = self.warmup_epochs.unwrap_or_else(|| {
            steps
                .first()
                .map_or(REFERENCE_WARMUP, |&s| REFERENCE_WARMUP.min(s))
        });
        LrSchedule {
            base_lr: self.lr,
            warmup_epochs: warmup,
            steps,
            factor: self.lr_factor,
        }
    }

    /// The sampler, given the DRW epoch in force (DRS defers to it).
    pub fn sampler(&self, drw_epoch: i64) -> Sampler {
        match self.sampler {
            SamplerChoice::Instance => Sampler::Instance,
            SamplerChoice::ClassBalanced => Sampler::ClassBalanced,
            SamplerChoice::Deferred => Sampler::Deferred {
                from_epoch: drw_epoch.max(0) as usize,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SettingNames;

    fn settings(epochs: usize) -> TrainSettings {
        let mut s = TrainSettings::new("m".into(), "d".into(), "d".into());
        s.recipe.epochs = epochs;
        s
    }

    #[test]
    fn default_steps_are_the_reference_scaled_to_the_run() {
        let reference = settings(200).recipe.schedule();
        assert_eq!(reference, LrSchedule::reference(0.1));
        let short = settings(20).recipe.schedule();
        assert_eq!(
            (short.steps.clone(), short.warmup_epochs),
            (vec![16, 18], 5)
        );
        let tiny = settings(3).recipe.schedule();
        assert_eq!((tiny.steps.clone(), tiny.warmup_epochs), (vec![3], 3));
        tiny.validate()
            .expect("a 3-epoch default schedule is valid");
    }

    #[test]
    fn settings_round_trip_through_json() {
        let mut s = settings(7);
        s.imbalance_ratio = Some(100.0);
        s.recipe.normalize = Some(NormalizeChoice::Dataset);
        s.recipe.sampler = SamplerChoice::Deferred;
        let json = serde_json::to_value(&s).expect("serialises");
        assert_eq!(json["sampler"], "deferred");
        let back: TrainSettings = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, s);
    }

    #[test]
    fn a_recipe_names_its_settings_where_the_run_settings_name_flags() {
        let config = TrainConfig {
            batch_size: 0,
            ..TrainConfig::default()
        };
        let e = config.validate().unwrap_err().to_string();
        assert_eq!(e, "batch_size must be at least 1");
        let config = TrainConfig {
            lr_steps: Some(vec![5, 3]),
            ..TrainConfig::default()
        };
        let e = config.validate().unwrap_err().to_string();
        assert!(e.starts_with("lr_steps must be strictly increasing"), "{e}");
        let mut s = settings(5);
        s.recipe.momentum = -1.0;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.starts_with("momentum must be"), "{e}");
        let flags = s
            .validate()
            .unwrap_err()
            .naming_settings(SettingNames::Flags);
        assert!(flags.starts_with("--momentum must be"), "{flags}");
    }

    #[test]
    fn zero_batch_size_is_an_error_naming_the_setting() {
        let mut s = settings(5);
        s.recipe.batch_size = 0;
        let e = s.validate().unwrap_err();
        assert!(e.to_string().starts_with("batch_size "), "{e}");
        let flags = e.naming_settings(SettingNames::Flags);
        assert!(flags.starts_with("--batch-size "), "{flags}");
    }
}
