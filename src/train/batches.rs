//! From dataset examples to network input: the reference's augmentation
//! (`RandomCrop(padding=4)` + `RandomHorizontalFlip`), torchvision's ImageNet
//! augmentation for image files (`RandomResizedCrop` + `RandomHorizontalFlip`),
//! per-channel normalisation, and a producer thread that assembles the next
//! batches (in parallel, with rayon; image files are decoded there, so only the
//! batches in flight are ever in memory) while the runtime trains on the
//! current one.
//!
//! Every random choice is a pure function of (seed, epoch, position in the epoch),
//! never of thread timing or of where a run was resumed, so an interrupted and
//! resumed run sees exactly the batches an uninterrupted one sees.

use crate::backend::Batch;
use crate::error::{Error, Result};
use crate::train::data::images::transform;
use crate::train::data::{Dataset, Pixels};
use rand::RngExt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

/// Zero padding on each side before the random crop (the reference's 4).
pub const CROP_PADDING: usize = 4;

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    None,
    /// Random crop of the original size from the image padded with 4 zero pixels
    /// on each side, then a horizontal flip with probability 1/2. On image files
    /// decoded to more than [`CROP_FLIP_MAX_SIDE`] pixels a side it means
    /// [`Augment::ResizedCropFlip`], the recipe such images are trained with.
    CropFlip,
    /// torchvision's `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`
    /// of the image as decoded (in-memory images: as stored), resampled to the
    /// example size, then a horizontal flip with probability 1/2.
    ResizedCropFlip,
}

keyword_enum!(Augment {
    None => "none",
    CropFlip => "crop-flip",
    ResizedCropFlip => "resized-crop-flip",
});

/// The largest side for which `crop-flip` on image files stays the CIFAR
/// recipe (pad-crop-flip at the model's size).
pub const CROP_FLIP_MAX_SIDE: usize = 32;

impl Augment {
    /// The augmentation applied to `dataset`: `crop-flip` becomes
    /// `resized-crop-flip` on image files larger than 32x32.
    pub fn for_data(self, dataset: &Dataset) -> Augment {
        let large = dataset
            .shape
            .iter()
            .skip(1)
            .any(|&d| d > CROP_FLIP_MAX_SIDE);
        if self == Augment::CropFlip && dataset.is_image_files() && large {
            Augment::ResizedCropFlip
        } else {
            self
        }
    }
}

/// Per-channel `(x - mean) / std`, applied after u8 pixels are scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// The mean and (population) standard deviation of every channel over all
    /// examples of `dataset`, in the values the network sees before normalising.
    pub fn of_dataset(dataset: &Dataset) -> Result<Normalization> {
        let channels = channels_of(dataset)?;
        let plane = dataset.example_len() / channels;
        // Per channel sums in f64 (60000 x 784 values overflow f32's
        // precision), over fixed chunks added in order: the same statistics
        // whatever the threads did.
        let indices: Vec<usize> = (0..dataset.len()).collect();
        let partial = indices
            .par_chunks(STATISTICS_CHUNK)
            .map(|chunk| -> Result<Vec<(f64, f64)>> {
                let mut acc = vec![(0.0f64, 0.0f64); channels];
                let mut example = vec![0.0; dataset.example_len()];
                for &i in chunk {
                    dataset.write_example(i, &mut example)?;
                    for (c, values) in example.chunks_exact(plane).enumerate() {
                        for &v in values {
                            acc[c].0 += f64::from(v);
                            acc[c].1 += f64::from(v) * f64::from(v);
                        }
                    }
                }
                Ok(acc)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut sums = vec![(0.0f64, 0.0f64); channels];
        for acc in partial {
            for (s, a) in sums.iter_mut().zip(acc) {
                s.0 += a.0;
                s.1 += a.1;
            }
        }
        let n = (dataset.len() * plane) as f64;
        let mut mean = Vec::with_capacity(channels);
        let mut std = Vec::with_capacity(channels);
        for (sum, sum_sq) in sums {
            let m = sum / n;
            let var = (sum_sq / n - m * m).max(0.0);
            mean.push(m as f32);
            // A constant channel would divide by zero; leave it unscaled.
            std.push(if var > 0.0 { var.sqrt() as f32 } else { 1.0 });
        }
        Ok(Normalization { mean, std })
    }

    /// torchvision's ImageNet statistics (the `imagenet` preset).
    pub fn imagenet() -> Normalization {
        Normalization {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Parses `MEANS/STDS`, e.g. `0.4914,0.4822,0.4465/0.2023,0.1994,0.2010`.
    pub fn parse(text: &str) -> Result<Normalization> {
        let bad = |why: &str| {
            Error::setting(
                "normalize",
                format!(
                    "'{text}': {why} (expected none, dataset, imagenet, or MEANS/STDS such \
                     as 0.5,0.5,0.5/0.25,0.25,0.25)"
                ),
            )
        };
        let (means, stds) = text.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let numbers = |part: &str| -> Result<Vec<f32>> {
            part.split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f32>()
                        .map_err(|_| bad(&format!("'{v}' is not a number")))
                })
                .collect()
        };
        let (mean, std) = (numbers(means)?, numbers(stds)?);
        if mean.len() != std.len() {
            return Err(bad(&format!(
                "{} means but {} standard deviations",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(bad(&format!("standard deviation {s} is not positive")));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(bad("a mean is not finite"));
        }
        Ok(Normalization { mean, std })
    }

    /// The `MEANS/STDS` text that [`Normalization::parse`] reads back exactly.
    pub fn to_arg(&self) -> String {
        let join = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
        format!("{}/{}", join(&self.mean), join(&self.std))
    }
}

/// What the setting `normalize` asked for, before the data is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormalizeChoice {
    None,
    /// Statistics of the training set (default for u8 images).
    Dataset,
    Fixed(Normalization),
}

impl NormalizeChoice {
    /// `none`, `dataset`, `imagenet` (torchvision's ImageNet statistics), or
    /// `MEANS/STDS`.
    pub fn parse(text: &str) -> Result<NormalizeChoice> {
        match text {
            "none" => Ok(NormalizeChoice::None),
            "dataset" => Ok(NormalizeChoice::Dataset),
            "imagenet" => Ok(NormalizeChoice::Fixed(Normalization::imagenet())),
            other => Normalization::parse(other).map(NormalizeChoice::Fixed),
        }
    }

    /// The default for `dataset`: its own statistics for u8 images and image
    /// files (scaled to [0, 1] first), none for float data, which is used
    /// exactly as given.
    pub fn default_for(dataset: &Dataset) -> NormalizeChoice {
        match dataset.images {
            Pixels::U8(_) | Pixels::Files(_) => NormalizeChoice::Dataset,
            Pixels::F32(_) => NormalizeChoice::None,
        }
    }

    /// The concrete normalisation, computing statistics from `stats_from` when
    /// asked for `dataset`; `None` means identity.
    pub fn resolve(&self, stats_from: &Dataset) -> Result<Option<Normalization>> {
        match self {
            NormalizeChoice::None => Ok(None),
            NormalizeChoice::Dataset => Normalization::of_dataset(stats_from).map(Some),
            NormalizeChoice::Fixed(n) => Ok(Some(n.clone())),
        }
    }
}

/// How examples become network input: augmentation, normalisation, and the
/// seed their randomness derives from.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub augment: Augment,
    pub normalization: Option<Normalization>,
    pub seed: u64,
}

impl Preprocess {
    /// Evaluation input: no augmentation, the same normalisation.
    pub fn for_eval(&self) -> Preprocess {
        Preprocess {
            augment: Augment::None,
            ..self.clone()
        }
    }

    /// Checks that the settings fit `dataset`'s example shape.
    pub fn check(&self, dataset: &Dataset) -> Result<()> {
        if let Some(n) = &self.normalization {
            let channels = channels_of(dataset)?;
            if n.mean.len() != channels {
                return Err(Error::setting(
                    "normalize",
                    format!(
                        "gives {} channel(s), but {} has {channels}",
                        n.mean.len(),
                        dataset.source
                    ),
                ));
            }
        }
        if self.augment != Augment::None && dataset.shape.len() != 3 {
            return Err(Error::AugmentNeedsImages {
                data: dataset.source.clone(),
                shape: dataset.shape.clone(),
            });
        }
        Ok(())
    }
}

fn channels_of(dataset: &Dataset) -> Result<usize> {
    match dataset.shape.as_slice() {
        [c, _, _] => Ok(*c),
        [_] => Ok(1),
        other => Err(Error::config(format!(
            "{}: examples of shape {other:?} are neither images nor feature vectors",
            dataset.source
        ))),
    }
}

/// splitmix64: decorrelates the small integers (seed, epoch, position) that
/// name an example's random stream.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of one stream, named by its parts (seed, purpose, epoch, ...).
pub fn derive_seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0, |acc, &p| mix(acc ^ mix(p)))
}

/// The random number generator of `parts` (see [`derive_seed`]).
pub fn rng_for(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(parts))
}

/// Purposes of random streams, so that no two uses share one.
pub const STREAM_ORDER: u64 = 1;
pub const STREAM_AUGMENT: u64 = 2;
pub const STREAM_LIMIT: u64 = 3;

/// Examples per chunk of the dataset statistics.
const STATISTICS_CHUNK: usize = 1024;

/// Writes example `index` of `dataset`, preprocessed, into `out`; `rng_parts`
/// name its augmentation stream. Fails only on an image file that cannot be
/// decoded.
fn write_preprocessed(
    dataset: &Dataset,
    index: usize,
    preprocess: &Preprocess,
    rng_parts: [u64; 4],
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) -> Result<()> {
    match (preprocess.augment.for_data(dataset), &dataset.images) {
        (Augment::None, _) => dataset.write_example(index, out)?,
        (Augment::ResizedCropFlip, Pixels::Files(files)) => {
            files.write_resized_crop_flip(index, &mut rng_for(&rng_parts), out)?
        }
        (Augment::ResizedCropFlip, _) => {
            scratch.resize(dataset.example_len(), 0.0);
            dataset.write_example(index, scratch)?;
            let [channels, height, width] = dataset.shape[..] else {
                unreachable!("Preprocess::check requires images for resized-crop-flip")
            };
            transform::resized_crop_flip(
                scratch,
                [channels, height, width],
                (height, width),
                &mut rng_for(&rng_parts),
                out,
            );
        }
        (Augment::CropFlip, _) => {
            scratch.resize(dataset.example_len(), 0.0);
            dataset.write_example(index, scratch)?;
            let mut rng = rng_for(&rng_parts);
            let [channels, height, width] = dataset.shape[..] else {
                unreachable!("Preprocess::check requires images for crop-flip")
            };
            // Offsets into the padded image: 0..=2p in each direction.
            let dy = rng.random_range(0..=2 * CROP_PADDING) as isize - CROP_PADDING as isize;
            let dx = rng.random_range(0..=2 * CROP_PADDING) as isize - CROP_PADDING as isize;
            let flip = rng.random_bool(0.5);
            crop_flip(scratch, [channels, height, width], dy, dx, flip, out);
        }
    }
    if let Some(n) = &preprocess.normalization {
        let plane = out.len() / n.mean.len();
        for (c, values) in out.chunks_exact_mut(plane).enumerate() {
            let (m, s) = (n.mean[c], n.std[c]);
            for v in values {
                *v = (*v - m) / s;
            }
        }
    }
    Ok(())
}

/// `out[c][y][x] = image[c][y + dy][x' + dx]` with zeros outside the image, where
/// `x' = width - 1 - x` when flipping (the flip is applied to the crop).
fn crop_flip(
    image: &[f32],
    [channels, height, width]: [usize; 3],
    dy: isize,
    dx: isize,
    flip: bool,
    out: &mut [f32],
) {
    for c in 0..channels {
        for y in 0..height {
            let sy = y as isize + dy;
            let row = &mut out[(c * height + y) * width..][..width];
            if sy < 0 || sy >= height as isize {
                row.fill(0.0);
                continue;
            }
            let src = &image[(c * height + sy as usize) * width..][..width];
            for (x, o) in row.iter_mut().enumerate() {
                let xc = if flip { width - 1 - x } else { x };
                let sx = xc as isize + dx;
                *o = if sx < 0 || sx >= width as isize {
                    0.0
                } else {
                    src[sx as usize]
                };
            }
        }
    }
}

/// Assembles the examples at `indices` into a batch. `epoch` and `first` (the
/// position of `indices[0]` in the epoch's order) name each example's
/// augmentation stream. Fails only on an image file that cannot be decoded.
pub fn assemble(
    dataset: &Dataset,
    indices: &[usize],
    preprocess: &Preprocess,
    epoch: usize,
    first: usize,
) -> Result<Batch> {
    let n = dataset.example_len();
    let mut data = vec![0.0f32; indices.len() * n];
    data.par_chunks_mut(n)
        .zip(indices.par_iter())
        .enumerate()
        .try_for_each_init(Vec::new, |scratch, (k, (out, &index))| {
            let parts = [
                preprocess.seed,
                STREAM_AUGMENT,
                epoch as u64,
                (first + k) as u64,
            ];
            write_preprocessed(dataset, index, preprocess, parts, scratch, out)
        })?;
    let mut shape = vec![indices.len() as i64];
    shape.extend(dataset.shape.iter().map(|&d| d as i64));
    Ok(Batch {
        shape,
        data,
        labels: indices.iter().map(|&i| dataset.labels[i]).collect(),
    })
}

/// Batches of one epoch, assembled ahead on a background thread (at most
/// `AHEAD` waiting), starting at batch `start`. A batch that cannot be
/// assembled (an image file that does not decode) is its error, and the last
/// item.
pub struct Producer {
    receiver: Receiver<(usize, Result<Batch>)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

const AHEAD: usize = 2;

impl Producer {
    pub fn spawn(
        dataset: Arc<Dataset>,
        order: Vec<usize>,
        batch_size: usize,
        start: usize,
        preprocess: Arc<Preprocess>,
        epoch: usize,
    ) -> Producer {
        let (sender, receiver) = sync_channel(AHEAD);
        let handle = std::thread::spawn(move || {
            for (b, indices) in order.chunks(batch_size).enumerate().skip(start) {
                let batch = assemble(&dataset, indices, &preprocess, epoch, b * batch_size);
                let failed = batch.is_err();
                // The consumer stopped early (interrupt, error): stop too.
                if sender.send((b, batch)).is_err() || failed {
                    return;
                }
            }
        });
        Producer {
            receiver,
            handle: Some(handle),
        }
    }
}

impl Iterator for Producer {
    /// (batch index in the epoch, batch)
    type Item = (usize, Result<Batch>);
    fn next(&mut self) -> Option<(usize, Result<Batch>)> {
        self.receiver.recv().ok()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Unblock a producer waiting to send, then wait for it: no thread outlives
        // the epoch it serves.
        let (_, dead) = sync_channel(0);
        drop(std::mem::replace(&mut self.receiver, dead));
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Evaluation batches of `dataset` in order (no augmentation).
pub fn eval_batches<'a>(
    dataset: &'a Dataset,
    preprocess: &'a Preprocess,
    batch_size: usize,
) -> impl Iterator<Item = Result<Batch>> + 'a {
    let eval = preprocess.for_eval();
    (0..dataset.len()).step_by(batch_size).map(move |first| {
        let indices: Vec<usize> = (first..(first + batch_size).min(dataset.len())).collect();
        assemble(dataset, &indices, &eval, 0, first)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        // 2 examples, 1 channel, 2x3
        Dataset::new(
            Pixels::U8(vec![0, 51, 102, 153, 204, 255, 255, 255, 255, 0, 0, 0]),
            vec![1, 2, 3],
            vec![0, 1],
            2,
            "tiny",
        )
        .expect("valid")
    }

    #[test]
    fn crop_flip_shifts_with_zero_fill_and_mirrors() {
        let image = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [0.0; 6];
        crop_flip(&image, [1, 2, 3], 0, 1, false, &mut out);
        assert_eq!(out, [2.0, 3.0, 0.0, 5.0, 6.0, 0.0]);
        crop_flip(&image, [1, 2, 3], -1, 0, true, &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 3.0, 2.0, 1.0]);
    }

    #[test]
    fn dataset_statistics_are_population_mean_and_std() {
        let n = Normalization::of_dataset(&tiny()).expect("stats");
        let values: Vec<f64> = [0, 51, 102, 153, 204, 255, 255, 255, 255, 0, 0, 0]
            .iter()
            .map(|&v| f64::from(v) / 255.0)
            .collect();
        let mean = values.iter().sum::<f64>() / 12.0;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 12.0;
        assert!((f64::from(n.mean[0]) - mean).abs() < 1e-6);
        assert!((f64::from(n.std[0]) - var.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn normalize_text_round_trips_and_rejects_nonsense() {
        let n = Normalization::parse("0.4914,0.4822,0.4465/0.2023,0.1994,0.201").expect("ok");
        assert_eq!(Normalization::parse(&n.to_arg()).expect("again"), n);
        for bad in ["0.5", "0.5/0", "0.5,0.5/0.2", "a/0.2"] {
            assert!(NormalizeChoice::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batches_depend_on_position_not_on_how_they_are_cut() {
        let ds = tiny();
        let pre = Preprocess {
            augment: Augment::CropFlip,
            normalization: Some(Normalization {
                mean: vec![0.5],
                std: vec![0.25],
            }),
            seed: 7,
        };
        let whole = assemble(&ds, &[1, 0], &pre, 3, 0).unwrap();
        let second = assemble(&ds, &[0], &pre, 3, 1).unwrap();
        assert_eq!(whole.data[6..], second.data[..]);
        assert_eq!(whole.shape, vec![2, 1, 2, 3]);
        assert_eq!(whole.labels, vec![1, 0]);
        // Another epoch draws other crops for at least one of many examples.
        let many: Vec<usize> = vec![0; 64];
        assert_ne!(
            assemble(&ds, &many, &pre, 3, 0).unwrap().data,
            assemble(&ds, &many, &pre, 4, 0).unwrap().data
        );
    }

    #[test]
    fn producer_yields_every_batch_from_start() {
        let ds = Arc::new(tiny());
        let pre = Arc::new(Preprocess {
            augment: Augment::None,
            normalization: None,
            seed: 0,
        });
        let got: Vec<(usize, Vec<i64>)> =
            Producer::spawn(ds.clone(), vec![1, 0, 1, 1, 0], 2, 1, pre, 0)
                .map(|(b, batch)| (b, batch.unwrap().labels))
                .collect();
        assert_eq!(got, vec![(1, vec![1, 1]), (2, vec![0])]);
        // Dropping a producer mid-epoch ends its thread.
        let pre = Arc::new(Preprocess {
            augment: Augment::None,
            normalization: None,
            seed: 0,
        });
        let mut p = Producer::spawn(ds, vec![0; 100], 1, 0, pre, 0);
        assert!(p.next().is_some());
        drop(p);
    }
}
