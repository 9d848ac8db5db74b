//! Loading ONNX Runtime. The shared library comes from the pinned `onnxruntime`
//! wheel on PyPI and is loaded at run time (ort's `load-dynamic`), so building
//! needs no native library and a missing one is an error, not a crash. Every
//! session, the trainer's and the tests' alike, is built by [`session`].

use crate::error::{Error, Result};
use crate::onnx::{io, ModelProto};
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The ONNX Runtime release the crate is built against (`ort`'s `api-31`).
pub const ORT_VERSION: &str = "1.31.1";
/// Environment variable naming the library file to load.
pub const LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

fn library_file() -> String {
    format!("libonnxruntime.so.{ORT_VERSION}")
}

/// Where the library is looked for, in order: `$ORT_DYLIB_PATH` (relative paths
/// resolve against the working directory), beside the executable, then the
/// project-local `.deps/onnxruntime/` that the setup script fills.
pub fn library_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os(LIBRARY_ENV) {
        let path = PathBuf::from(path);
        candidates.push(match std::env::current_dir() {
            Ok(cwd) if path.is_relative() => cwd.join(path),
            _ => path,
        });
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(library_file()));
        candidates.push(dir.join("../lib").join(library_file()));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".deps/onnxruntime")
            .join(library_file()),
    );
    candidates
}

/// Loads ONNX Runtime once per process and returns its environment.
pub fn init() -> Result<&'static ort::environment::Environment> {
    static LOADED: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();
    LOADED
        .get_or_init(|| {
            let candidates = library_candidates();
            let path = candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
                format!(
                    "cannot find {} (looked at: {}); run `bash .ci/deps.sh` in the source tree, or set {LIBRARY_ENV} \
                     to the libonnxruntime.so from the onnxruntime=={ORT_VERSION} wheel",
                    library_file(),
                    candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                )
            })?;
            let path = path.canonicalize().unwrap_or(path);
            let environment = ort::init_from(&path)
                .map_err(|e| format!("loading {}: {e}", path.display()))?
                .with_name("ldam-onnx")
                .build()
                .map_err(|e| format!("starting ONNX Runtime from {}: {e}", path.display()))?;
            Ok(environment)
        })
        .as_ref()
        .map_err(|reason| Error::Runtime { reason: reason.clone() })
}

/// The execution provider a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// ONNX Runtime's own CPU provider.
    #[default]
    Cpu,
    /// The CUDA provider on this GPU; needs a build with `--features cuda` and
    /// the onnxruntime-gpu library.
    Cuda(usize),
}

/// How a session is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOptions {
    pub provider: Provider,
    /// Threads one operator may use; `None` keeps ONNX Runtime's default.
    pub intra_threads: Option<usize>,
    /// Inline tensor bytes past which an in-memory model ([`ModelSource::Model`])
    /// reaches ONNX Runtime through a file with external data rather than as one
    /// serialised message, which protobuf limits to 2 GiB; `None` is
    /// [`io::default_inline_limit`].
    pub inline_limit: Option<u64>,
}

/// The model a session loads.
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    /// A serialised model in memory.
    Bytes(&'a [u8]),
    /// A model file; external data is resolved beside it.
    File(&'a Path),
    /// A model in memory, serialised for ONNX Runtime; past the inline limit
    /// ([`SessionOptions::inline_limit`]) written with external data into a
    /// temporary folder (in `$TMPDIR`) that is removed once the session is built.
    Model(&'a ModelProto),
}

impl ModelSource<'_> {
    /// What ONNX Runtime's errors about this model are prefixed with.
    fn context(&self) -> String {
        match self {
            ModelSource::Bytes(_) => String::new(),
            ModelSource::File(path) => format!("{}: ", path.display()),
            ModelSource::Model(_) => "loading the model into ONNX Runtime: ".to_string(),
        }
    }
}

/// Environment variable that turns on ONNX Runtime's profiler for every session:
/// its value is the file prefix; the JSON trace is written when the session ends.
pub const PROFILE_ENV: &str = "LDAM_ORT_PROFILE";

/// The settings every session gets, measured on the training step of ResNet-32
/// and the CNN (`benches/speed.sh`, 2 cores): intra-op threads that sleep
/// instead of spinning between ops (with spinning, a core shared with any other
/// process stalls the other thread at every op: 45-48 against 62-67 img/s on
/// ResNet-32, 1,048-1,132 against 1,908-2,036 img/s on the CNN, under load);
/// every graph optimisation (the basic level is 5-10% slower), ONNX Runtime's
/// memory arena and memory pattern left on (its defaults; without the pattern
/// no faster).
fn tuned(builder: SessionBuilder) -> ort::session::builder::BuilderResult {
    builder
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)?
        .with_intra_op_spinning(false)
}

/// The one place sessions are built: `model` loaded on `options.provider`.
pub fn session(model: ModelSource<'_>, options: &SessionOptions) -> Result<Session> {
    let environment = init()?;
    let context = model.context();
    // The builder's errors differ in type (some carry the builder back).
    let runtime = |e: &dyn std::fmt::Display| Error::Runtime {
        reason: format!("{context}{e}"),
    };
    let mut builder = Session::builder(environment).map_err(|e| runtime(&e))?;
    if let Some(threads) = options.intra_threads {
        builder = builder
            .with_intra_threads(threads)
            .map_err(|e| runtime(&e))?;
    }
    builder = tuned(builder).map_err(|e| runtime(&e))?;
    if let Some(prefix) = std::env::var_os(PROFILE_ENV) {
        builder = builder
            .with_profiling(PathBuf::from(prefix))
            .map_err(|e| runtime(&e))?;
    }
    let mut builder = match options.provider {
        Provider::Cpu => builder,
        Provider::Cuda(index) => cuda(builder, index)?,
    };
    let limit = options
        .inline_limit
        .unwrap_or_else(io::default_inline_limit);
    match model {
        ModelSource::Bytes(bytes) => builder.commit_from_memory(bytes),
        ModelSource::File(path) => builder.commit_from_file(path),
        ModelSource::Model(model)
            if model
                .graph
                .as_ref()
                .is_some_and(|g| io::inline_payload(g) > limit) =>
        {
            let staged = stage_with_external_data(model)?;
            // ONNX Runtime reads (or maps) every initializer while it builds the
            // session, so the folder can go as soon as this returns.
            builder.commit_from_file(staged.path().join(STAGED_MODEL))
        }
        ModelSource::Model(model) => builder.commit_from_memory(&io::to_bytes(model)),
    }
    .map_err(|e| runtime(&e))
}

/// The file name of a staged model in its temporary folder.
const STAGED_MODEL: &str = "model.onnx";

/// `model` written into a new temporary folder as `model.onnx`, every tensor of
/// [`io::EXTERNAL_MIN_BYTES`] or more in `model.onnx.data`: ONNX Runtime takes
/// a model of any size from a file, but one message of at most 2 GiB from memory.
fn stage_with_external_data(model: &ModelProto) -> Result<tempfile::TempDir> {
    let temp = std::env::temp_dir();
    let dir = tempfile::Builder::new()
        .prefix(".ldam-onnx-session.")
        .tempdir_in(&temp)
        .map_err(|e| Error::io(&temp, e))?;
    let options = io::SaveOptions {
        overwrite: false,
        inline_limit: 0,
    };
    io::save(model, None, &dir.path().join(STAGED_MODEL), options)?;
    Ok(dir)
}

#[cfg(feature = "cuda")]
fn cuda(builder: SessionBuilder, index: usize) -> Result<SessionBuilder> {
    let provider = ort::ep::CUDA::default()
        .with_device_id(index as i32)
        .build()
        .error_on_failure();
    builder
        .with_execution_providers([provider])
        .map_err(|e| Error::Runtime {
            reason: format!("CUDA execution provider on cuda:{index}: {e}"),
        })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_builder: SessionBuilder, index: usize) -> Result<SessionBuilder> {
    Err(Error::setting(
        "device",
        format!(
            "cuda:{index} needs a build with `--features cuda` and the onnxruntime-gpu library (see the README)"
        ),
    ))
}

/// A CPU session for an in-memory model.
pub fn session_from_bytes(bytes: &[u8]) -> Result<Session> {
    session(ModelSource::Bytes(bytes), &SessionOptions::default())
}

/// A CPU session for a model file (external data resolved beside it).
pub fn session_from_file(path: &Path) -> Result<Session> {
    session(ModelSource::File(path), &SessionOptions::default())
}
