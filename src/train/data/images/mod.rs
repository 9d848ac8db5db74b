//! Datasets of image files, decoded on demand: folders in torchvision's
//! `ImageFolder` layout (`folder`) and list files of `path label` lines as
//! ImageNet-LT, Places-LT and iNaturalist publish them (`list`).
//!
//! A reader keeps only the paths and labels ([`ImageFiles`]); pixels are decoded
//! when a batch needs them, in parallel on the batch pipeline, so memory does not
//! grow with the dataset. Every file's header is read when the dataset is read,
//! so a missing, unreadable or non-image file stops before training starts, with
//! its name; with `skip_bad_images` every file is decoded once instead and the
//! bad ones are left out and counted.
//!
//! The example shape is the model's input (`[channels, height, width]`, set by
//! [`ImageFiles::with_shape`] when the dataset is fitted to the model): images of
//! exactly that size are used as decoded, others go through torchvision's
//! evaluation geometry (`transform`), and training may draw a
//! `RandomResizedCrop` instead.

pub(super) mod decode;
pub(super) mod folder;
pub(super) mod list;
pub mod transform;

use crate::error::{Error, Result};
use rand::RngExt;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The image files of a dataset, one per example, and the shape each is
/// decoded to.
#[derive(Clone, PartialEq)]
pub struct ImageFiles {
    paths: Arc<Vec<PathBuf>>,
    shape: [usize; 3],
}

impl ImageFiles {
    pub fn new(paths: Vec<PathBuf>, shape: [usize; 3]) -> ImageFiles {
        ImageFiles {
            paths: Arc::new(paths),
            shape,
        }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// `[channels, height, width]` of a decoded example.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    pub fn path(&self, i: usize) -> &Path {
        &self.paths[i]
    }

    /// The same files decoded to `shape` (1 or 3 channels).
    pub fn with_shape(&self, shape: [usize; 3]) -> ImageFiles {
        ImageFiles {
            paths: self.paths.clone(),
            shape,
        }
    }

    /// The files at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageFiles {
        ImageFiles::new(
            indices.iter().map(|&i| self.paths[i].clone()).collect(),
            self.shape,
        )
    }

    fn decode(&self, i: usize) -> Result<decode::Planar> {
        let path = self.path(i);
        decode::decode(path, self.shape[0]).map_err(|why| bad_image(path, &why))
    }

    /// Example `i` as evaluation sees it: as decoded when its size is the
    /// example shape, else `Resize` of the shorter side to `size * 256/224` and
    /// `CenterCrop(size)`.
    pub fn write_eval(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let image = self.decode(i)?;
        let [channels, out_h, out_w] = self.shape;
        match transform::eval_geometry(image.height, image.width, out_h, out_w) {
            None => out.copy_from_slice(&image.values),
            Some(((new_h, new_w), offset)) => transform::resample(
                &image.values,
                [channels, image.height, image.width],
                (0, 0, image.height, image.width),
                (new_h, new_w),
                offset,
                (out_h, out_w),
                out,
            ),
        }
        Ok(())
    }

    /// Example `i` through `RandomResizedCrop(size)` and a horizontal flip with
    /// probability 1/2, drawn from `rng`.
    pub fn write_resized_crop_flip(
        &self,
        i: usize,
        rng: &mut impl RngExt,
        out: &mut [f32],
    ) -> Result<()> {
        let image = self.decode(i)?;
        let [channels, out_h, out_w] = self.shape;
        transform::resized_crop_flip(
            &image.values,
            [channels, image.height, image.width],
            (out_h, out_w),
            rng,
            out,
        );
        Ok(())
    }
}

fn bad_image(path: &Path, why: &str) -> Error {
    Error::config(format!("{}: {why}", path.display()))
}

/// What reading image files found: the examples kept (paths, labels) and the
/// files left out as bad.
pub(super) struct Checked {
    pub paths: Vec<PathBuf>,
    pub labels: Vec<i64>,
    /// `(height, width)` of the first kept image.
    pub first: (usize, usize),
    pub skipped: usize,
}

/// Reads every file's header (or, when `skip_bad`, decodes every file) in
/// parallel; a bad file is an error naming it and `describe(i)` (where it was
/// listed), or is left out and counted when `skip_bad`.
pub(super) fn check_files(
    paths: Vec<PathBuf>,
    labels: Vec<i64>,
    skip_bad: bool,
    describe: impl Fn(usize) -> String + Sync,
    source: &str,
) -> Result<Checked> {
    let results: Vec<std::result::Result<(usize, usize), String>> = paths
        .par_iter()
        .map(|path| {
            if skip_bad {
                decode::decode(path, 3).map(|image| (image.height, image.width))
            } else {
                decode::dimensions(path).map(|(w, h)| (h as usize, w as usize))
            }
        })
        .collect();
    let mut kept_paths = Vec::with_capacity(paths.len());
    let mut kept_labels = Vec::with_capacity(labels.len());
    let mut first = None;
    let mut skipped = 0;
    for (i, ((path, label), result)) in paths.into_iter().zip(labels).zip(results).enumerate() {
        match result {
            Ok(dims) => {
                first.get_or_insert(dims);
                kept_paths.push(path);
                kept_labels.push(label);
            }
            Err(_) if skip_bad => skipped += 1,
            Err(why) => {
                return Err(Error::config(format!(
                    "{}: {why}{}",
                    path.display(),
                    describe(i)
                )))
            }
        }
    }
    let first = first.ok_or_else(|| {
        Error::config(format!(
            "{source}: no readable image ({skipped} bad files skipped)"
        ))
    })?;
    Ok(Checked {
        paths: kept_paths,
        labels: kept_labels,
        first,
        skipped,
    })
}
