//! The flags of reading image data that `train` and `eval` share.

use clap::Args;
use ldam_onnx::train::data::ReadOptions;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DataArgs {
    /// The folder list files' paths are relative to [default: each list's folder]
    #[arg(long, value_name = "DIR")]
    pub image_root: Option<PathBuf>,
    /// Class names for reports: one per line, or iNaturalist JSON categories
    /// [default: folder names, or the standard names of Fashion-MNIST and CIFAR]
    #[arg(long, value_name = "FILE")]
    pub class_names: Option<PathBuf>,
    /// Leave out (and count in report.json) image files that cannot be decoded,
    /// instead of stopping at the first
    #[arg(long)]
    pub skip_bad_images: bool,
}

impl DataArgs {
    /// How to read data for a model of `classes` classes, if known.
    pub fn read_options(&self, classes: Option<usize>) -> ReadOptions {
        ReadOptions {
            image_root: self.image_root.clone(),
            class_names: self.class_names.clone(),
            skip_bad_images: self.skip_bad_images,
            classes,
        }
    }
}
