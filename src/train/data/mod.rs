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
//! (`content`), and one reader per format (`idx`, `cifar`, `npz`).

mod cifar;
mod content;
mod dataset;
pub mod export;
mod idx;
mod layout;
mod npz;

pub use dataset::{class_counts, Dataset, Pixels, Split};

use crate::error::{Error, Result};
use std::path::Path;

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
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if metadata.is_dir() {
        layout::find_layout(path, split)?.read(split)
    } else {
        layout::read_file(path, split)
    }
}
