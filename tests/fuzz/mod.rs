//! A seeded, structure-aware fuzzer for the library's input paths, shared by the CI
//! smoke test (`tests/fuzz_smoke.rs`), the regression tests
//! (`tests/fuzz_regressions.rs`) and the long-run driver (`examples/fuzz.rs`).
//!
//! One case is one `u64` seed: the seed picks what is fuzzed (a bundled model,
//! original, patched or compiled, or a dataset file), the mutations, and the
//! options, so `--replay SEED` repeats a case exactly. A case runs every library
//! entry point the CLI reaches for that input ([`driver`]); its outcome must be
//! `Ok` or an `Err` value. A panic (caught in process), an abort or a stack
//! overflow (caught by running the cases in a child process, [`supervise`]) and a
//! hang (a case past the time limit) are findings.
//!
//! Modules: [`rng`] the generator, [`model`] ONNX mutations, [`bytewise`] byte-level
//! mutations, [`data`] dataset files, [`driver`] one case, [`supervise`] the child
//! process and the run loop, [`process`] the `ldam-onnx` binary under limits,
//! [`report`] findings and statistics.
#![allow(dead_code, unused_imports)]

pub mod bytewise;
pub mod data;
pub mod driver;
pub mod model;
pub mod process;
pub mod report;
pub mod rng;
pub mod supervise;

pub use driver::{run_case, CaseResult, Options, Outcome};
pub use report::{Finding, Report};
pub use rng::Rng;

use std::path::PathBuf;

/// The crate's root folder (models/ and the built binaries are found from it).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
