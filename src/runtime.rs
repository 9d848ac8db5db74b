//! Loading ONNX Runtime. The shared library comes from the pinned `onnxruntime`
//! wheel on PyPI and is loaded at run time (ort's `load-dynamic`), so building
//! needs no native library and a missing one is an error, not a crash.

use crate::error::{Error, Result};
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

/// A CPU session for an in-memory model.
pub fn session_from_bytes(bytes: &[u8]) -> Result<ort::session::Session> {
    let environment = init()?;
    let runtime = |e: ort::Error| Error::Runtime {
        reason: e.to_string(),
    };
    ort::session::Session::builder(environment)
        .map_err(runtime)?
        .commit_from_memory(bytes)
        .map_err(runtime)
}

/// A CPU session for a model file (external data resolved beside it).
pub fn session_from_file(path: &Path) -> Result<ort::session::Session> {
    let environment = init()?;
    let runtime = |e: ort::Error| Error::Runtime {
        reason: format!("{}: {e}", path.display()),
    };
    ort::session::Session::builder(environment)
        .map_err(runtime)?
        .commit_from_file(path)
        .map_err(runtime)
}
