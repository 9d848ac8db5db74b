//! The dataset every reader returns: pixels (in memory, or image files decoded
//! on demand), example shape, labels, class names.

use crate::error::{Error, Result};
use crate::train::data::images::ImageFiles;
use std::fmt;

/// Which half of a dataset to read from a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Pixel storage, row after row of examples in channel-height-width order.
#[derive(Clone, PartialEq)]
pub enum Pixels {
    /// Raw bytes 0..=255; [`Dataset::write_example`] scales them to [0, 1].
    U8(Vec<u8>),
    /// Values used as they are (an NPZ with float32 `x`).
    F32(Vec<f32>),
    /// Image files decoded when an example is read (image folders and lists).
    Files(ImageFiles),
}

impl Pixels {
    /// Number of stored values (examples x values per example).
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len(),
            Pixels::Files(files) => files.len() * files.shape().iter().product::<usize>(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn type_name(&self) -> &'static str {
        match self {
            Pixels::U8(_) => "u8",
            Pixels::F32(_) => "f32",
            Pixels::Files(_) => "files",
        }
    }
}

/// Type and length only: a failed assertion should not print millions of values.
impl fmt::Debug for Pixels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Pixels::{}[{}]",
            self.type_name().to_uppercase(),
            self.len()
        )
    }
}

/// Labelled examples of one split. Invariants (checked by [`Dataset::new`], kept
/// by every method): `images.len() == labels.len() * shape.iter().product()`,
/// every label lies in `0..classes`, and there is at least one example.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    pub images: Pixels,
    /// Shape of one example, channels first: `[1, 28, 28]`, `[3, 32, 32]`, or
    /// `[d]` for flat feature vectors from an NPZ.
    pub shape: Vec<usize>,
    pub labels: Vec<i64>,
    /// `max(label) + 1` for IDX and NPZ; 10 or 100 for CIFAR, which fixes it.
    pub classes: usize,
    /// What was read, for messages and reports (format and file names).
    pub source: String,
    /// One name per class when the data or the caller tells them (image folder
    /// names, a class-names file, the standard names of a recognised format).
    pub class_names: Option<Vec<String>>,
    /// Image files left out as unreadable (`skip_bad_images`).
    pub skipped_images: usize,
}

/// Examples per class; labels outside `0..classes` are not counted ([`Dataset`]
/// guarantees there are none).
pub fn class_counts(labels: &[i64], classes: usize) -> Vec<u64> {
    let mut counts = vec![0u64; classes];
    for &label in labels {
        if let Some(slot) = usize::try_from(label).ok().and_then(|l| counts.get_mut(l)) {
            *slot += 1;
        }
    }
    counts
}

/// A summary, for the same reason as [`Pixels`]' `Debug`.
impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("examples", &self.len())
            .field("shape", &self.shape)
            .field("pixels", &self.images.type_name())
            .field("classes", &self.classes)
            .field("source", &self.source)
            .finish()
    }
}

impl Dataset {
    /// Checks the invariants above; `source` names the data in any error.
    pub fn new(
        images: Pixels,
        shape: Vec<usize>,
        labels: Vec<i64>,
        classes: usize,
        source: impl Into<String>,
    ) -> Result<Dataset> {
        let source = source.into();
        let example_len = checked_product(&shape)
            .filter(|&n| n > 0 && !shape.is_empty())
            .ok_or_else(|| Error::config(format!("{source}: invalid example shape {shape:?}")))?;
        if labels.is_empty() {
            return Err(Error::config(format!("{source}: holds no examples")));
        }
        if let Pixels::Files(files) = &images {
            if files.shape().as_slice() != shape.as_slice() {
                return Err(Error::config(format!(
                    "{source}: images decode to {:?}, not the example shape {shape:?}",
                    files.shape()
                )));
            }
        }
        if labels.len().checked_mul(example_len) != Some(images.len()) {
            return Err(Error::config(format!(
                "{source}: {} pixel values for {} examples of shape {shape:?}",
                images.len(),
                labels.len()
            )));
        }
        if let Some((i, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::try_from(l).map_or(true, |l| l >= classes))
        {
            return Err(Error::config(format!(
                "{source}: label {label} of example {i} is outside 0..{classes}"
            )));
        }
        Ok(Dataset {
            images,
            shape,
            labels,
            classes,
            source,
            class_names: None,
            skipped_images: 0,
        })
    }

    /// Whether examples are image files decoded on demand.
    pub fn is_image_files(&self) -> bool {
        matches!(self.images, Pixels::Files(_))
    }

    /// The name of class `class`: its given name, else its number.
    pub fn class_name(&self, class: usize) -> String {
        self.class_names
            .as_ref()
            .and_then(|names| names.get(class))
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }

    /// An image-file dataset decoded to `shape` (`[channels, height, width]`,
    /// 1 or 3 channels): the model's input. Other datasets are returned as they
    /// are.
    pub fn with_image_shape(self, shape: [usize; 3]) -> Result<Dataset> {
        let Pixels::Files(files) = &self.images else {
            return Ok(self);
        };
        if !matches!(shape[0], 1 | 3) || shape[1] == 0 || shape[2] == 0 {
            return Err(Error::config(format!(
                "{}: images can be decoded to 1 (grey) or 3 (RGB) channels of a fixed size, \
                 not {shape:?}",
                self.source
            )));
        }
        let images = Pixels::Files(files.with_shape(shape));
        Ok(Dataset {
            images,
            shape: shape.to_vec(),
            ..self
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per example: the product of [`Dataset::shape`].
    pub fn example_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Writes example `i` into `out` as f32 in channel-height-width order, u8
    /// pixels divided by 255 (the reference's `ToTensor`), f32 values copied,
    /// image files decoded (and resized as evaluation does, see
    /// [`ImageFiles::write_eval`]); only a file that cannot be decoded fails.
    ///
    /// # Panics
    /// If `i >= self.len()` or `out.len() != self.example_len()`: both are the
    /// caller's indexing mistakes, like slice indexing.
    pub fn write_example(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let n = self.example_len();
        assert!(i < self.len(), "example {i} of {}", self.len());
        assert_eq!(out.len(), n, "output buffer length vs example length");
        let range = i * n..(i + 1) * n;
        match &self.images {
            Pixels::U8(pixels) => {
                for (o, &p) in out.iter_mut().zip(&pixels[range]) {
                    *o = f32::from(p) / 255.0;
                }
            }
            Pixels::F32(values) => out.copy_from_slice(&values[range]),
            Pixels::Files(files) => return files.write_eval(i, out),
        }
        Ok(())
    }

    /// Example `i` as a new f32 vector; see [`Dataset::write_example`].
    pub fn example(&self, i: usize) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.example_len()];
        self.write_example(i, &mut out)?;
        Ok(out)
    }

    /// Examples per class, indexed by class.
    pub fn class_counts(&self) -> Vec<u64> {
        class_counts(&self.labels, self.classes)
    }

    /// The examples at `indices`, in that order (repeats allowed); `classes` and
    /// `shape` are kept even when a class ends up absent.
    pub fn subset(&self, indices: &[usize], source: impl Into<String>) -> Result<Dataset> {
        let source = source.into();
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::config(format!(
                "{}: example {bad} requested, but it holds {}",
                self.source,
                self.len()
            )));
        }
        let n = self.example_len();
        fn gather<T: Copy>(values: &[T], indices: &[usize], n: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(indices.len() * n);
            for &i in indices {
                out.extend_from_slice(&values[i * n..(i + 1) * n]);
            }
            out
        }
        let images = match &self.images {
            Pixels::U8(v) => Pixels::U8(gather(v, indices, n)),
            Pixels::F32(v) => Pixels::F32(gather(v, indices, n)),
            Pixels::Files(files) => Pixels::Files(files.subset(indices)),
        };
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(Dataset {
            class_names: self.class_names.clone(),
            skipped_images: self.skipped_images,
            ..Dataset::new(images, self.shape.clone(), labels, self.classes, source)?
        })
    }

    /// The same examples with `channels` channels: a one-channel (grey) set is
    /// repeated into each channel, so a network built for RGB input can train on
    /// Fashion-MNIST. Only done when asked, since it triples the memory; a set
    /// that already has `channels` channels is returned unchanged.
    pub fn broadcast_channels(&self, channels: usize) -> Result<Dataset> {
        let [have, height, width] = self.shape[..] else {
            return Err(Error::config(format!(
                "{}: examples have shape {:?}, not channels x height x width, so they \
                 cannot be given {channels} channels",
                self.source, self.shape
            )));
        };
        if have == channels {
            return Ok(self.clone());
        }
        if have != 1 || channels == 0 {
            return Err(Error::config(format!(
                "{}: cannot turn {have} channels into {channels}; only one-channel \
                 (grey) images are broadcast",
                self.source
            )));
        }
        let plane = height * width;
        fn repeat<T: Copy>(values: &[T], plane: usize, channels: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(values.len() * channels);
            for example in values.chunks_exact(plane) {
                for _ in 0..channels {
                    out.extend_from_slice(example);
                }
            }
            out
        }
        let images = match &self.images {
            Pixels::U8(v) => Pixels::U8(repeat(v, plane, channels)),
            Pixels::F32(v) => Pixels::F32(repeat(v, plane, channels)),
            // Decoded to the new channel count instead.
            Pixels::Files(_) => return self.clone().with_image_shape([channels, height, width]),
        };
        Ok(Dataset {
            class_names: self.class_names.clone(),
            skipped_images: self.skipped_images,
            ..Dataset::new(
                images,
                vec![channels, height, width],
                self.labels.clone(),
                self.classes,
                format!("{} (grey repeated into {channels} channels)", self.source),
            )?
        })
    }
}

/// The number of values in an array of dimensions `dims`, or `None` on overflow.
pub(super) fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_new_rejects_inconsistent_parts() {
        let ok = Dataset::new(Pixels::U8(vec![0; 8]), vec![1, 2, 2], vec![0, 1], 2, "t");
        assert!(ok.is_ok());
        let short = Dataset::new(Pixels::U8(vec![0; 7]), vec![1, 2, 2], vec![0, 1], 2, "t");
        assert!(short.unwrap_err().to_string().contains("7 pixel values"));
        let label = Dataset::new(Pixels::U8(vec![0; 8]), vec![1, 2, 2], vec![0, 2], 2, "t");
        assert!(label
            .unwrap_err()
            .to_string()
            .contains("label 2 of example 1"));
        let empty = Dataset::new(Pixels::U8(vec![]), vec![1, 2, 2], vec![], 2, "t");
        assert!(empty.unwrap_err().to_string().contains("no examples"));
    }

    #[test]
    fn u8_examples_are_scaled_and_grey_broadcasts_to_rgb() {
        let data = Dataset::new(
            Pixels::U8(vec![0, 255, 51, 102]),
            vec![1, 1, 2],
            vec![0, 1],
            2,
            "t",
        )
        .unwrap();
        assert_eq!(data.example(1).unwrap(), vec![0.2, 0.4]);
        let rgb = data.broadcast_channels(3).unwrap();
        assert_eq!(rgb.shape, vec![3, 1, 2]);
        assert_eq!(rgb.example(0).unwrap(), vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        assert!(rgb.broadcast_channels(1).is_err());
        assert_eq!(rgb.broadcast_channels(3).unwrap(), rgb);
    }

    #[test]
    fn subset_keeps_order_and_rejects_out_of_range_indices() {
        let data = Dataset::new(
            Pixels::F32(vec![0.5, 1.5, 2.5]),
            vec![1],
            vec![0, 1, 2],
            3,
            "t",
        )
        .unwrap();
        let sub = data.subset(&[2, 0, 2], "sub").unwrap();
        assert_eq!(sub.labels, vec![2, 0, 2]);
        assert_eq!(sub.example(0).unwrap(), vec![2.5]);
        assert_eq!(sub.classes, 3);
        assert!(data
            .subset(&[3], "sub")
            .unwrap_err()
            .to_string()
            .contains("example 3"));
    }
}
