//! `ldam-onnx export-data`: a long-tailed train/test pair as one binary file
//! for the browser trainer in `web/`.

use anyhow::Result;
use clap::Args;
use ldam_onnx::train::data::export::{self, ExportSettings};
use ldam_onnx::train::longtail::Profile;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "Example (Fashion-MNIST-LT, ratio 100, at most 5000 training examples):\n  \
ldam-onnx export-data --train /usr/share/datasets/fashion-mnist -o web/data/fashion-lt.bin \\\n    \
--class-names T-shirt,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Boot\n\
It prints the training class counts for `ldam-onnx patch --class-counts`. The format \
(little-endian, magic LDAMDATA) is documented in the library's train::data::export."
)]
pub struct ExportDataArgs {
    /// Training data: an IDX/CIFAR folder or file, or an NPZ with x and y
    #[arg(long, value_name = "PATH")]
    train: PathBuf,
    /// Test data [default: the --train path, whose test split is read]
    #[arg(long, value_name = "PATH")]
    test: Option<PathBuf>,
    /// Where to write the binary
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Replace the output file if it exists
    #[arg(long)]
    force: bool,
    /// Long-tailed training set: n_max / n_min (1 keeps it balanced)
    #[arg(long, value_name = "R", default_value_t = 100.0)]
    imbalance_ratio: f64,
    /// How counts fall from head to tail: exp (geometric) or step (half the classes rare)
    #[arg(long, default_value = "exp", value_parser = |s: &str| s.parse::<Profile>().map_err(|e| e.to_string()))]
    imbalance_profile: Profile,
    /// At most N training examples: the head class is cut until the long tail fits
    #[arg(long, value_name = "N", default_value_t = 5000)]
    max_train: usize,
    /// A seeded random subset of at most N test examples
    #[arg(long, value_name = "N", default_value_t = 2000)]
    max_test: usize,
    /// Seed of the long-tail subsample and of the test subset
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Class names, comma-separated, in class order
    #[arg(long, value_name = "NAME,NAME,...", value_delimiter = ',')]
    class_names: Vec<String>,
}

pub fn run_export_data(args: ExportDataArgs) -> Result<()> {
    let settings = ExportSettings {
        test_data: args.test.clone().unwrap_or_else(|| args.train.clone()),
        train_data: args.train,
        imbalance_ratio: args.imbalance_ratio,
        profile: args.imbalance_profile,
        max_train: Some(args.max_train),
        max_test: Some(args.max_test),
        seed: args.seed,
        class_names: args.class_names,
    };
    let data = export::prepare(&settings)?;
    export::write(&data, &args.output, args.force)?;
    let counts: Vec<String> = data.train_counts().iter().map(u64::to_string).collect();
    println!(
        "exported {} training and {} test examples of shape {:?} -> {}",
        data.train.len(),
        data.test.len(),
        data.train.shape,
        args.output.display()
    );
    println!("  class counts: --class-counts {}", counts.join(","));
    Ok(())
}
