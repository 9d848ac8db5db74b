//! `ldam-onnx compare`: the paper's table for several runs, and one plot of
//! their per-class accuracies.

use anyhow::Result;
use clap::Args;
use ldam_onnx::train::compare;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  \
ldam-onnx compare runs/erm runs/ldam-drw --plot compare.png\n\n\
Reads each run's report.json (train's run folders, or eval --out folders) and prints top-1 \
error and the many/medium/few-shot error (%) per run, as the paper reports them; the plot shows every run's per-class \
accuracy over the classes sorted by training count.")]
pub struct CompareArgs {
    /// Run folders (or report.json files) to compare
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Where to write the per-class plot
    #[arg(long, value_name = "PNG", default_value = "compare.png")]
    plot: PathBuf,
}

pub fn run_compare(args: CompareArgs) -> Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|path| compare::read_run(path))
        .collect::<ldam_onnx::Result<Vec<_>>>()?;
    compare::check_same_classes(&runs)?;
    print!("{}", compare::table(&runs));
    let png = compare::plot(&runs, &args.plot)?;
    println!("plot: {}", png.display());
    Ok(())
}
