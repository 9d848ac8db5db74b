//! The library's error type: every variant carries the file, node, tensor or setting
//! that a user needs to find the problem.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error's text is part of the message (not a `source`), so that a
    /// printed error chain states the cause once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{}: not a valid ONNX model ({reason})", path.display())]
    NotOnnx { path: PathBuf, reason: String },

    #[error("{}: external data of tensor '{tensor}': {reason}", path.display())]
    ExternalData {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    /// An output file exists and replacing it was not asked for (the setting
    /// `force`).
    #[error("{}", output_exists(path, SettingNames::Fields))]
    OutputExists { path: PathBuf },

    /// The run folder (the setting `out`) already holds a run.
    #[error("{}", run_exists(run_dir, SettingNames::Fields))]
    RunExists { run_dir: PathBuf },

    /// The run folder to resume holds no checkpoint at `path`.
    #[error("{}", no_checkpoint(path, run_dir, SettingNames::Fields))]
    NoCheckpoint { path: PathBuf, run_dir: PathBuf },

    /// The run folder cannot be created or written: `action` is what failed
    /// (`cannot create`, `cannot write checkpoints into`).
    #[error("{}", run_folder(action, path, cause, SettingNames::Fields))]
    RunFolder {
        action: &'static str,
        path: PathBuf,
        cause: String,
    },

    /// Training was asked of a model that `patch` has not prepared.
    #[error("{} is not a patched model; patch it first with its class counts (or the training labels)", model.display())]
    NotPatched { model: PathBuf },

    /// A name for a value the patch adds (the setting `setting`, such as
    /// `labels_name`) is taken in the graph.
    #[error("{}", name_taken(name, setting, SettingNames::Fields))]
    NameTaken { name: String, setting: &'static str },

    /// Several outputs qualify as the logits and the setting `logits` does not
    /// choose one; `candidates` lists them.
    #[error("{}", ambiguous_logits(candidates, SettingNames::Fields))]
    AmbiguousLogits { candidates: String },

    /// `drw_epoch` was given for a model patched with another re-weighting.
    #[error("{}", drw_epoch_without_drw(reweight, SettingNames::Fields))]
    DrwEpochWithoutDrw { reweight: String },

    /// The LR warm-up (`warmup_epochs`) lasts past the first LR step.
    #[error("{}", warmup_past_first_step(*.warmup_epochs, *.first_step, SettingNames::Fields))]
    WarmupPastFirstStep {
        warmup_epochs: usize,
        first_step: usize,
    },

    /// The training set's class counts differ from those patched into `model`,
    /// and `allow_count_mismatch` is off.
    #[error("{}", count_mismatch(model, patched, train, SettingNames::Fields))]
    CountMismatch {
        model: String,
        patched: Vec<u64>,
        train: Vec<u64>,
    },

    /// One-channel images for a model that takes `channels`, and `grey_to_rgb`
    /// is off; `dims` is the input's shape, comma-separated.
    #[error("{}", grey_images(data, shape, input, dims, *.channels, SettingNames::Fields))]
    GreyImages {
        data: String,
        shape: Vec<usize>,
        input: String,
        dims: String,
        channels: i64,
    },

    /// Crop-and-flip augmentation asked for data that are not images.
    #[error("{}", augment_needs_images(data, shape, SettingNames::Fields))]
    AugmentNeedsImages { data: String, shape: Vec<usize> },

    /// The model cannot be patched as asked; `reason` says why and what to do.
    #[error("{reason}")]
    Patch { reason: String },

    /// Bad user-supplied configuration (a flag or an input file's contents).
    #[error("{reason}")]
    Config { reason: String },

    #[error("invalid graph: {reason}")]
    Invalid { reason: String },

    #[error("ONNX Runtime: {reason}")]
    Runtime { reason: String },

    #[error("libtorch: {reason}")]
    Torch { reason: String },

    /// Training cannot go on (a non-finite loss); `reason` says where and what
    /// was kept.
    #[error("{reason}")]
    Training { reason: String },

    /// A data-parallel run cannot go on; `rank` is the process that says so
    /// (`None` before the world is known).
    #[error("{}{reason}", rank.map_or(String::new(), |r| format!("rank {r}: ")))]
    Distributed { rank: Option<usize>, reason: String },

    /// A setting outside its range. The message names the setting's field
    /// (`momentum must lie in [0, 1)`); [`Error::naming_settings`] gives it with
    /// the command-line flag instead (`--momentum must lie in [0, 1)`).
    #[error("{setting} {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
    },

    /// A problem found in what the setting `setting` gives (a file it names,
    /// a list it holds): `{setting}: {cause}`.
    #[error("{setting}: {cause}")]
    InSetting {
        setting: &'static str,
        cause: Box<Error>,
    },

    /// A training step cannot be built from the model as it is; `reason` says
    /// why and what to do.
    #[error("{reason}")]
    Compile { reason: String },

    /// A node whose op a stage has no facet for: no gradient rule (autodiff) or
    /// no kernel (the libtorch backend).
    #[error("{}", unsupported_op_message(*.stage, op, node, supported))]
    UnsupportedOp {
        stage: OpStage,
        /// The op, `domain:` first for other domains than ONNX's.
        op: String,
        /// The node as `node_label` names it.
        node: String,
        /// The ops the stage supports, comma-separated.
        supported: String,
    },

    /// A node's gradient rule refused the node (its attributes or shapes).
    #[error("invalid graph: gradient of {node}: {reason}")]
    Gradient { node: String, reason: String },

    /// The class counts could not be read (a list, a counts file, a labels
    /// file): a problem of the counts' source rather than of the model.
    #[error(transparent)]
    Counts(Box<Error>),
}

/// The stage that lacks an op's facet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStage {
    /// Reverse-mode differentiation into ONNX.
    Gradient,
    /// The libtorch interpreter.
    Libtorch,
}

fn unsupported_op_message(stage: OpStage, op: &str, node: &str, supported: &str) -> String {
    match stage {
        OpStage::Gradient => format!(
            "invalid graph: no gradient rule for op '{op}' ({node}), which lies between a trainable \
             tensor and the loss; supported ops: {supported}"
        ),
        OpStage::Libtorch => format!(
            "the torch backend cannot run {node}: op '{op}' is not supported (it runs: {supported})"
        ),
    }
}

impl Error {
    pub fn compile(reason: impl Into<String>) -> Self {
        Error::Compile {
            reason: reason.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub fn patch(reason: impl Into<String>) -> Self {
        Error::Patch {
            reason: reason.into(),
        }
    }

    pub fn config(reason: impl Into<String>) -> Self {
        Error::Config {
            reason: reason.into(),
        }
    }

    pub fn torch(reason: impl Into<String>) -> Self {
        Error::Torch {
            reason: reason.into(),
        }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::Invalid {
            reason: reason.into(),
        }
    }

    /// A problem found in what the setting `setting` gives.
    pub fn in_setting(setting: &'static str, cause: Error) -> Self {
        Error::InSetting {
            setting,
            cause: Box::new(cause),
        }
    }

    /// A problem with the setting whose field is `setting`.
    pub fn setting(setting: &'static str, problem: impl Into<String>) -> Self {
        Error::Setting {
            setting,
            problem: problem.into(),
        }
    }

    /// The message, with settings named as `names` does.
    pub fn naming_settings(&self, names: SettingNames) -> String {
        match self {
            Error::Setting { setting, problem } => format!("{} {problem}", names.of(setting)),
            Error::Counts(inner) => inner.naming_settings(names),
            Error::InSetting { setting, cause } => {
                format!("{}: {}", names.of(setting), cause.naming_settings(names))
            }
            Error::OutputExists { path } => output_exists(path, names),
            Error::RunExists { run_dir } => run_exists(run_dir, names),
            Error::NoCheckpoint { path, run_dir } => no_checkpoint(path, run_dir, names),
            Error::RunFolder {
                action,
                path,
                cause,
            } => run_folder(action, path, cause, names),
            Error::NameTaken { name, setting } => name_taken(name, setting, names),
            Error::AmbiguousLogits { candidates } => ambiguous_logits(candidates, names),
            Error::DrwEpochWithoutDrw { reweight } => drw_epoch_without_drw(reweight, names),
            Error::WarmupPastFirstStep {
                warmup_epochs,
                first_step,
            } => warmup_past_first_step(*warmup_epochs, *first_step, names),
            Error::CountMismatch {
                model,
                patched,
                train,
            } => count_mismatch(model, patched, train, names),
            Error::GreyImages {
                data,
                shape,
                input,
                dims,
                channels,
            } => grey_images(data, shape, input, dims, *channels, names),
            Error::AugmentNeedsImages { data, shape } => augment_needs_images(data, shape, names),
            other => other.to_string(),
        }
    }
}

fn output_exists(path: &Path, names: SettingNames) -> String {
    format!(
        "{}: refusing to overwrite an existing file ({} to replace it)",
        path.display(),
        names.turn_on("force")
    )
}

fn run_exists(run_dir: &Path, names: SettingNames) -> String {
    let dir = run_dir.display();
    format!(
        "{dir} already holds a run; continue it with {}, or {} to start over",
        names.with_value("resume", &dir.to_string()),
        names.turn_on("force")
    )
}

fn no_checkpoint(path: &Path, run_dir: &Path, names: SettingNames) -> String {
    format!(
        "{}: no checkpoint there; is {} the {} folder of a run?",
        path.display(),
        run_dir.display(),
        names.of("out")
    )
}

fn run_folder(action: &str, path: &Path, cause: &str, names: SettingNames) -> String {
    format!("{action} {} {}: {cause}", names.of("out"), path.display())
}

fn name_taken(name: &str, setting: &str, names: SettingNames) -> String {
    format!(
        "the graph already has a value named '{name}'; choose another name with {}",
        names.with_value(setting, "NAME")
    )
}

fn ambiguous_logits(candidates: &str, names: SettingNames) -> String {
    format!(
        "several outputs could be the logits: {candidates}; choose one with {}",
        names.with_value("logits", "NAME")
    )
}

fn drw_epoch_without_drw(reweight: &str, names: SettingNames) -> String {
    format!(
        "{} applies to models patched with {}; this one uses {}",
        names.of("drw_epoch"),
        names.with_value("reweight", "drw"),
        names.with_value("reweight", reweight)
    )
}

fn warmup_past_first_step(warmup_epochs: usize, first_step: usize, names: SettingNames) -> String {
    format!(
        "{} ({warmup_epochs}) must not exceed the first of {} ({first_step})",
        names.of("warmup_epochs"),
        names.of("lr_steps")
    )
}

fn count_mismatch(model: &str, patched: &[u64], train: &[u64], names: SettingNames) -> String {
    let counts: Vec<String> = train.iter().map(u64::to_string).collect();
    format!(
        "the training set's class counts {train:?} differ from the counts patched into \
         {model} {patched:?}; patch with these counts (`{}`), or {} to train anyway",
        names.with_value("class_counts", &counts.join(",")),
        names.turn_on("allow_count_mismatch")
    )
}

fn grey_images(
    data: &str,
    shape: &[usize],
    input: &str,
    dims: &str,
    channels: i64,
    names: SettingNames,
) -> String {
    format!(
        "{data} holds one-channel (grey) images of shape {shape:?}, but the model's input \
         '{input}' is [{dims}]; {} to repeat them into {channels} channels",
        names.turn_on("grey_to_rgb")
    )
}

fn augment_needs_images(data: &str, shape: &[usize], names: SettingNames) -> String {
    format!(
        "{} needs images (channels x height x width), but {data} holds examples of shape \
         {shape:?}; use {}",
        names.with_value("augment", "crop-flip"),
        names.with_value("augment", "none")
    )
}

/// How a library message names a setting: by its field name, for library
/// callers, or by the command-line flag that sets it, for the CLI. The flag is
/// the field's name in kebab case (`batch_size` is `--batch-size`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SettingNames {
    #[default]
    Fields,
    Flags,
}

impl SettingNames {
    /// `field` as this naming writes it: `batch_size` or `--batch-size`.
    pub fn of(self, field: &str) -> String {
        match self {
            SettingNames::Fields => field.to_string(),
            SettingNames::Flags => format!("--{}", field.replace('_', "-")),
        }
    }

    /// `field` set to `value`: `resume = DIR` or `--resume DIR`.
    pub fn with_value(self, field: &str, value: &str) -> String {
        match self {
            SettingNames::Fields => format!("{field} = {value}"),
            SettingNames::Flags => format!("{} {value}", self.of(field)),
        }
    }

    /// How to turn the switch `field` on: `set force` or `pass --force`.
    pub fn turn_on(self, field: &str) -> String {
        match self {
            SettingNames::Fields => format!("set {field}"),
            SettingNames::Flags => format!("pass {}", self.of(field)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(error: Error) -> (String, String) {
        (
            error.to_string(),
            error.naming_settings(SettingNames::Flags),
        )
    }

    #[test]
    fn settings_named_mid_sentence_read_as_fields_or_as_flags() {
        let (fields, flags) = both(Error::RunExists {
            run_dir: "runs/a".into(),
        });
        assert_eq!(
            fields,
            "runs/a already holds a run; continue it with resume = runs/a, or set force to start over"
        );
        assert_eq!(
            flags,
            "runs/a already holds a run; continue it with --resume runs/a, or pass --force to start over"
        );
        let (fields, flags) = both(Error::OutputExists {
            path: "m.onnx".into(),
        });
        assert_eq!(
            fields,
            "m.onnx: refusing to overwrite an existing file (set force to replace it)"
        );
        assert_eq!(
            flags,
            "m.onnx: refusing to overwrite an existing file (pass --force to replace it)"
        );
        let (fields, flags) = both(Error::DrwEpochWithoutDrw {
            reweight: "none".into(),
        });
        assert_eq!(
            fields,
            "drw_epoch applies to models patched with reweight = drw; this one uses reweight = none"
        );
        assert_eq!(
            flags,
            "--drw-epoch applies to models patched with --reweight drw; this one uses --reweight none"
        );
    }

    #[test]
    fn a_problem_inside_a_setting_names_it_and_its_cause_alike() {
        let error = Error::in_setting("class_counts", Error::setting("lr", "must be positive"));
        let (fields, flags) = both(error);
        assert_eq!(fields, "class_counts: lr must be positive");
        assert_eq!(flags, "--class-counts: --lr must be positive");
    }
}
