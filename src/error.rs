//! The library's error type: every variant carries the file, node, tensor or flag
//! that a user needs to find the problem.

use std::path::PathBuf;

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

    #[error("{}: refusing to overwrite an existing file (pass --force to replace it)", path.display())]
    OutputExists { path: PathBuf },

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

    /// A setting outside its range. The message names the setting's field
    /// (`momentum must lie in [0, 1)`); [`Error::naming_settings`] gives it with
    /// the command-line flag instead (`--momentum must lie in [0, 1)`).
    #[error("{setting} {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
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
            other => other.to_string(),
        }
    }
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
}
