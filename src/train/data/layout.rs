//! Which reader reads what: the standard file names of one split in a folder,
//! and a single file recognised by its content.

use crate::error::{Error, Result};
use crate::npz::ZIP_MAGIC;
use crate::train::data::cifar::{cifar_kind_from_name, read_cifar_files, CifarKind};
use crate::train::data::content::Content;
use crate::train::data::dataset::{Dataset, Split};
use crate::train::data::idx::{
    idx_labels_next_to, read_idx_pair, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
};
use crate::train::data::npz::read_npz;
use std::path::{Path, PathBuf};

/// The files of one split in a folder, by format.
#[derive(Debug)]
pub(super) enum Layout {
    Idx { images: PathBuf, labels: PathBuf },
    Cifar10(Vec<PathBuf>),
    Cifar100(PathBuf),
    Npz(PathBuf),
}

impl Layout {
    fn files(&self) -> String {
        let names: Vec<&Path> = match self {
            Layout::Idx { images, labels } => vec![images, labels],
            Layout::Cifar10(files) => files.iter().map(PathBuf::as_path).collect(),
            Layout::Cifar100(file) | Layout::Npz(file) => vec![file],
        };
        names
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn read(&self, split: Split) -> Result<Dataset> {
        match self {
            Layout::Idx { images, labels } => read_idx_pair(images, labels),
            Layout::Cifar10(files) => read_cifar_files(files, Some(CifarKind::Ten)),
            Layout::Cifar100(file) => {
                read_cifar_files(std::slice::from_ref(file), Some(CifarKind::Hundred))
            }
            Layout::Npz(file) => read_npz(file, split),
        }
    }
}

/// The folder names the CIFAR archives unpack to.
const CIFAR_SUBFOLDERS: [&str; 2] = ["cifar-10-batches-bin", "cifar-100-binary"];

pub(super) fn find_layout(dir: &Path, split: Split) -> Result<Layout> {
    let mut found = layouts_in(dir, split)?;
    if found.is_empty() {
        for sub in CIFAR_SUBFOLDERS {
            let sub = dir.join(sub);
            if sub.is_dir() {
                found.extend(layouts_in(&sub, split)?);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let (idx, cifar10, cifar100) = match split {
                Split::Train => ("train", "data_batch_1.bin .. data_batch_5.bin", "train.bin"),
                Split::Test => ("t10k", "test_batch.bin", "test.bin"),
            };
            Err(Error::config(format!(
                "{}: no {split} data found; expected {idx}-images-idx3-ubyte[.gz] + \
                 {idx}-labels-idx1-ubyte[.gz] (IDX), {cifar10} (CIFAR-10), {cifar100} \
                 (CIFAR-100), {split}.npz, or class folders of .jpg/.png/.bmp images",
                dir.display()
            )))
        }
        _ => Err(Error::config(format!(
            "{}: more than one {split} dataset ({}); keep one per folder or pass the \
             file to read",
            dir.display(),
            found
                .iter()
                .map(|l| format!("[{}]", l.files()))
                .collect::<Vec<_>>()
                .join(" and ")
        ))),
    }
}

fn layouts_in(dir: &Path, split: Split) -> Result<Vec<Layout>> {
    let first_file = |names: &[String]| names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
    // `kind_dims` is "images-idx3" or "labels-idx1"; some unpackers write a dot.
    let idx_names = |prefix: &str, kind_dims: &str| -> Vec<String> {
        let (kind, dims) = kind_dims.split_once('-').expect("kind-dims literal");
        vec![
            format!("{prefix}-{kind}-{dims}-ubyte"),
            format!("{prefix}-{kind}-{dims}-ubyte.gz"),
            format!("{prefix}-{kind}.{dims}-ubyte"),
            format!("{prefix}-{kind}.{dims}-ubyte.gz"),
        ]
    };
    let (idx_prefix, cifar10, cifar100, npz) = match split {
        Split::Train => (
            "train",
            (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            "train.bin",
            "train.npz",
        ),
        Split::Test => (
            "t10k",
            vec!["test_batch.bin".to_string()],
            "test.bin",
            "test.npz",
        ),
    };

    let mut found = Vec::new();
    let images = first_file(&idx_names(idx_prefix, "images-idx3"));
    let labels = first_file(&idx_names(idx_prefix, "labels-idx1"));
    match (images, labels) {
        (Some(images), Some(labels)) => found.push(Layout::Idx { images, labels }),
        (None, None) => {}
        (Some(present), None) | (None, Some(present)) => {
            return Err(Error::config(format!(
                "{}: found, but not its IDX partner ({}-images-idx3-ubyte[.gz] and \
                 {}-labels-idx1-ubyte[.gz] belong together)",
                present.display(),
                idx_prefix,
                idx_prefix
            )));
        }
    }

    let batches: Vec<PathBuf> = cifar10.iter().map(|n| dir.join(n)).collect();
    let missing: Vec<&PathBuf> = batches.iter().filter(|p| !p.is_file()).collect();
    if missing.is_empty() {
        found.push(Layout::Cifar10(batches.clone()));
    } else if missing.len() < batches.len() {
        return Err(Error::config(format!(
            "{}: CIFAR-10 {split} batch missing (the set is {})",
            missing[0].display(),
            cifar10.join(", ")
        )));
    }
    if dir.join(cifar100).is_file() {
        found.push(Layout::Cifar100(dir.join(cifar100)));
    }
    if dir.join(npz).is_file() {
        found.push(Layout::Npz(dir.join(npz)));
    }
    Ok(found)
}

/// A single file, read as what its content says (see [`super::load`]).
pub(super) fn read_file(path: &Path, split: Split) -> Result<Dataset> {
    let mut content = Content::open(path)?;
    let head = content.peek(4)?;
    if head.starts_with(&ZIP_MAGIC) {
        if content.gzip {
            return Err(content.corrupt("a gzip-compressed zip archive; gunzip it first"));
        }
        return read_npz(path, split);
    }
    // A CIFAR record may start with these bytes too (label 0, pixels 0, 8, 3), so
    // the standard CIFAR names win over the IDX magic.
    if cifar_kind_from_name(path).is_none() {
        if head == IDX_IMAGES_MAGIC {
            return read_idx_pair(path, &idx_labels_next_to(path)?);
        }
        if head == IDX_LABELS_MAGIC {
            return Err(Error::config(format!(
                "{}: an IDX labels file; pass its images file (…-images-idx3-ubyte) or \
                 the folder that holds both",
                path.display()
            )));
        }
    }
    read_cifar_files(&[path.to_path_buf()], cifar_kind_from_name(path))
}
