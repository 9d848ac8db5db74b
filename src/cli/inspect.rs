//! `ldam-onnx inspect`: a model summarised as text, JSON or Graphviz dot.

use anyhow::Result;
use clap::{Args, ValueEnum};
use ldam_onnx::inspect;
use ldam_onnx::onnx::io;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The ONNX model to summarise
    model: PathBuf,
    /// Output format: readable text, JSON, or Graphviz dot (appended nodes highlighted)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Text,
    Json,
    Dot,
}

pub fn run_inspect(args: InspectArgs) -> Result<()> {
    let loaded = io::load(&args.model)?;
    let text = match args.format {
        Format::Text => inspect::render_text(&inspect::summarize(&loaded)?),
        Format::Json => inspect::render_json(&inspect::summarize(&loaded)?),
        Format::Dot => inspect::render_dot(&loaded.model),
    };
    print!("{text}");
    Ok(())
}
