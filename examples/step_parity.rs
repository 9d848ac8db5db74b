//! One export against PyTorch's two SGD steps, as `tests/export_parity.rs`
//! checks the committed ones: for exports made outside the test suite (the timm
//! sweep, `benches/timm_sweep.py`).
//!
//!     cargo run --release --example step_parity -- MODEL.onnx REFERENCE.npz
//!
//! REFERENCE.npz holds what `tests/exports/make.py` writes (the batch, labels,
//! PyTorch's losses and parameters after two steps). Prints one line,
//! `parity|mismatch|error<TAB>detail`, and exits 0, 1 or 2 accordingly.

#[path = "../tests/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;

use common::parity::{check, read_reference, two_steps, EXACT};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [model, npz] = args.as_slice() else {
        eprintln!("usage: step_parity MODEL.onnx REFERENCE.npz");
        return ExitCode::from(2);
    };
    let reference = read_reference(npz);
    match two_steps(model, &reference, EXACT) {
        Ok(outcome) => {
            let worst = common::tolerance::worst(outcome.tensors.iter().map(|t| t.2));
            match check(&model.display().to_string(), &outcome, &reference) {
                Ok(()) => {
                    println!(
                        "parity\tlosses {:?} vs {:?}; {} tensors, worst update error {worst:.1e}",
                        outcome.losses,
                        reference.loss,
                        outcome.tensors.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!(
                        "mismatch\t{e}; losses {:?} vs {:?}",
                        outcome.losses, reference.loss
                    );
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            println!("error\t{}", e.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
