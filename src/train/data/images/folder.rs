//! torchvision's `ImageFolder` layout: `ROOT/<class name>/.../<image>`, classes
//! numbered in the sorted order of their folder names, images in each class in
//! the sorted order of their paths (subfolders included), files with other
//! extensions ignored. Folders whose names start with a dot are not classes.

use super::decode::has_image_extension;
use super::{check_files, ImageFiles};
use crate::error::{Error, Result};
use crate::train::data::dataset::{Dataset, Pixels, Split};
use std::path::{Path, PathBuf};

/// The folder names that hold one split under a dataset's root.
fn split_names(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &["train"],
        Split::Test => &["val", "test"],
    }
}

/// The class root of `split` when `dir` is an image folder: `dir/train` (or
/// `dir/val`, `dir/test`) when that is one, else `dir` itself when it is one.
pub(in crate::train::data) fn image_folder_root(
    dir: &Path,
    split: Split,
) -> Result<Option<PathBuf>> {
    for name in split_names(split) {
        let sub = dir.join(name);
        if sub.is_dir() && is_class_root(&sub)? {
            return Ok(Some(sub));
        }
    }
    Ok(is_class_root(dir)?.then(|| dir.to_path_buf()))
}

/// Whether some (non-hidden) subfolder of `dir` holds an image file directly.
fn is_class_root(dir: &Path) -> Result<bool> {
    for class_dir in subfolders(dir)? {
        let entries = std::fs::read_dir(&class_dir).map_err(|e| Error::io(&class_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&class_dir, e))?;
            if has_image_extension(&entry.path()) && entry.path().is_file() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The non-hidden subfolders of `dir`, sorted by name.
fn subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        if !hidden && path.is_dir() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn utf8_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::config(format!(
                "{}: the name is not UTF-8; rename it",
                path.display()
            ))
        })
}

/// Image files under `dir` (recursively), sorted by path.
fn images_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        entries.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    entries.sort();
    for path in entries {
        let file_type = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if file_type.is_dir() {
            images_under(&path, out)?;
        } else if has_image_extension(&path) && path.is_file() {
            utf8_name(&path)?;
            out.push(path);
        }
    }
    Ok(())
}

/// Reads the class folders under `root`.
pub(in crate::train::data) fn read_folder(root: &Path, skip_bad: bool) -> Result<Dataset> {
    let mut names = Vec::new();
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (class, class_dir) in subfolders(root)?.into_iter().enumerate() {
        names.push(utf8_name(&class_dir)?);
        let before = paths.len();
        images_under(&class_dir, &mut paths)?;
        if paths.len() == before {
            return Err(Error::config(format!(
                "{}: empty class folder (no .jpg, .jpeg, .png or .bmp file); remove it or add \
                 its images",
                class_dir.display()
            )));
        }
        labels.resize(paths.len(), class as i64);
    }
    let source = format!("image folder {}", root.display());
    let checked = check_files(paths, labels, skip_bad, |_| String::new(), &source)?;
    let (height, width) = checked.first;
    let files = ImageFiles::new(checked.paths, [3, height, width]);
    let mut dataset = Dataset::new(
        Pixels::Files(files),
        vec![3, height, width],
        checked.labels,
        names.len(),
        source,
    )?;
    dataset.class_names = Some(names);
    dataset.skipped_images = checked.skipped;
    Ok(dataset)
}
