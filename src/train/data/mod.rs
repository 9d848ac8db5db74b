//! Image-classification datasets read straight from the files users already have:
//! MNIST-style IDX (Fashion-MNIST, raw or gzipped), the CIFAR-10/100 binary
//! batches, and NPZ archives with arrays `x` and `y` (LDAM-DRW.md §6).
//!
//! [`load`] takes a file or a folder. A folder is searched for the standard file
//! names of one split, so the same folder serves as the data of both training and
//! evaluation. Formats are recognised from content (IDX and gzip magic numbers,
//! the zip signature, the CIFAR record size), not from file extensions; a file
//! that fits none of them, or is corrupt or truncated, is a one-line
//! [`Error::Config`] that names the file. No reader allocates from a size that a
//! header merely claims: buffers grow with the bytes actually read, so a bad
//! header cannot ask for terabytes.
//!
//! Pixels stay in their stored type ([`Pixels::U8`] for every standard format) so
//! that CIFAR-10 costs 150 MB rather than 600 MB; the training loop converts one
//! example at a time with [`Dataset::write_example`].
//!
//! One file per job: [`Dataset`] and its invariants (`dataset`), which files hold
//! a split and which reader reads a file (`layout`), the gzip-aware byte source
//! (`content`), one reader per format (`idx`, `cifar`, `npz`), image folders and
//! list files decoded on demand (`images`), and class names (`names`).

mod cifar;
mod content;
mod dataset;
pub mod export;
mod idx;
pub mod images;
mod layout;
mod names;
mod npz;

pub use dataset::{class_counts, Dataset, Pixels, Split};
pub use images::ImageFiles;
pub use names::{read_class_names, CIFAR10_NAMES, FASHION_MNIST_NAMES};

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// How [`load_with`] reads image data and class names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOptions {
    /// The folder a list file's paths are relative to (default: the list's folder).
    pub image_root: Option<PathBuf>,
    /// One class name per line, or an iNaturalist JSON file's `categories`.
    pub class_names: Option<PathBuf>,
    /// Leave out (and count) image files that cannot be decoded instead of
    /// stopping; every image is then decoded once while reading.
    pub skip_bad_images: bool,
    /// The model's number of classes: a list's labels beyond it are errors
    /// naming the line.
    pub classes: Option<usize>,
}

/// Reads one split from `path`.
///
/// A folder is searched for the standard names of `split`:
///
/// | format | `Split::Train` | `Split::Test` |
/// |---|---|---|
/// | IDX (MNIST, Fashion-MNIST) | `train-images-idx3-ubyte[.gz]` + `train-labels-idx1-ubyte[.gz]` | `t10k-…` |
/// | CIFAR-10 binary | `data_batch_1.bin` … `data_batch_5.bin` | `test_batch.bin` |
/// | CIFAR-100 binary (fine labels) | `train.bin` | `test.bin` |
/// | NPZ | `train.npz` | `test.npz` |
///
/// and, when the folder holds none of them, its `cifar-10-batches-bin/` or
/// `cifar-100-binary/` subfolder (the CIFAR archives unpack to those). IDX names
/// with a dot (`train-images.idx3-ubyte`) are accepted too; when both the raw and
/// the `.gz` file exist the raw one is read.
///
/// A file is read as what its content says, whatever `split`: an IDX images file
/// (its labels file is found next to it), a CIFAR batch, or an NPZ. `split` only
/// matters for an NPZ without `x`/`y` that has `x_train`/`y_train` and
/// `x_test`/`y_test` (as Keras' `mnist.npz`).
pub fn load(path: &Path, split: Split) -> Result<Dataset> {
    load_with(path, split, &ReadOptions::default())
}

/// Reads one split from `path` as [`load`] does, and also image data: a folder
/// in torchvision's `ImageFolder` layout (`path/<class>/<image>`, or
/// `path/train/...` and `path/val/...` or `path/test/...` for the two splits)
/// and a list file (`.txt`, one `relative/path label` per line). Images are
/// decoded on demand ([`ImageFiles`]). Class names come from
/// `options.class_names`, else from the data (folder names, the standard names
/// of Fashion-MNIST and CIFAR).
pub fn load_with(path: &Path, split: Split, options: &ReadOptions) -> Result<Dataset> {
    let names_file = options.class_names.as_deref();
    let names = names_file.map(read_class_names).transpose()?;
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mut dataset = if metadata.is_dir() {
        match images::folder::image_folder_root(path, split)? {
            Some(root) => images::folder::read_folder(&root, options.skip_bad_images)?,
            None => layout::find_layout(path, split)?.read(split)?,
        }
    } else if images::list::is_list(path) {
        let limit = match (&names, names_file, options.classes) {
            (Some(names), Some(file), _) => Some(images::list::ClassLimit {
                classes: names.len(),
                from: format!("named in {}", file.display()),
            }),
            (_, _, Some(classes)) => Some(images::list::ClassLimit {
                classes,
                from: "in the model".into(),
            }),
            _ => None,
        };
        let root = options.image_root.as_deref();
        images::list::read_list(path, root, limit.as_ref(), options.skip_bad_images)?
    } else {
        layout::read_file(path, split)?
    };
    match (names, names_file) {
        (Some(names), Some(file)) => {
            if names.len() < dataset.classes {
                return Err(Error::config(format!(
                    "{}: names {} classes, but {} has labels up to {}",
                    file.display(),
                    names.len(),
                    dataset.source,
                    dataset.classes - 1
                )));
            }
            dataset.class_names = Some(names);
        }
        _ if dataset.class_names.is_none() => {
            dataset.class_names = names::default_names(path, &dataset.source, dataset.classes);
        }
        _ => {}
    }
    Ok(dataset)
}
