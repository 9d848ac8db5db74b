//! The `ldam-onnx` command line: argument parsing and printing only; the work is
//! done by the library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", cli::message(&error));
            ExitCode::FAILURE
        }
    }
}
