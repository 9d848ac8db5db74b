//! The class-count flags that `patch` and `adjust` share: one of a list, a
//! counts file or a labels file, read by [`ldam_onnx::counts`].

use clap::Args;
use ldam_onnx::counts::CountsSource;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CountsArgs {
    /// Training examples per class, comma-separated, in class order (e.g. 5000,2997,1796)
    #[arg(long, value_name = "N,N,...")]
    class_counts: Option<String>,
    /// File with the class counts: one integer per line, or a JSON array
    #[arg(long, value_name = "FILE")]
    class_counts_file: Option<PathBuf>,
    /// Training labels to count: one integer per line, or an NPZ with array `y`
    #[arg(long, value_name = "FILE")]
    labels_file: Option<PathBuf>,
}

/// The flags' ids, for an argument group over them.
pub const COUNTS_FLAGS: [&str; 3] = ["class_counts", "class_counts_file", "labels_file"];

impl CountsArgs {
    /// Where the counts come from, if a flag gave them (the group allows one).
    pub fn source(&self) -> Option<CountsSource> {
        match (
            &self.class_counts,
            &self.class_counts_file,
            &self.labels_file,
        ) {
            (Some(list), _, _) => Some(CountsSource::List(list.clone())),
            (_, Some(file), _) => Some(CountsSource::File(file.clone())),
            (_, _, Some(file)) => Some(CountsSource::Labels(file.clone())),
            _ => None,
        }
    }
}
