//! A long-tailed train/test pair written as one compact little-endian binary
//! that a web page reads with `DataView` and typed arrays (`web/` of the
//! repository trains on it in the browser).
//!
//! The subset is the one `train` builds: [`long_tail_counts`] from the smallest
//! class count (or less, to stay under a size), then [`subsample`] with the seed;
//! the test split is kept balanced, optionally a seeded random part of it
//! ([`limit`]). The normalisation is the one `train` applies to u8 pixels by
//! default: per-channel statistics of the whole (balanced) training split.
//!
//! # Format, version 1
//!
//! Every integer is a little-endian `u32`, every real a little-endian `f32`.
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `LDAMDATA` |
//! | 4 | version, 1 |
//! | 4 | `header_bytes`: offset of the first section (a multiple of 4) |
//! | 4 | classes `C` |
//! | 4 | rank `R` of one example |
//! | 4 x R | example shape, channels first (`1, 28, 28`) |
//! | 4 | pixel type: 0 = u8 (network value `byte / 255`), 1 = f32 (as stored) |
//! | 4 | normalisation channels `K` (0: none) |
//! | 4 x K, 4 x K | per-channel mean, then standard deviation: the network sees `(value - mean) / std` |
//! | 4, 4 | train examples `N_train`, test examples `N_test` |
//! | 4 x C | training examples per class |
//! | 4 + n | class names: byte length, then a UTF-8 JSON array of strings (length 0: unnamed) |
//! | 4 + n | description: byte length, then UTF-8 text (what was read, ratio, seed) |
//! | | zero bytes up to `header_bytes` |
//!
//! Then four sections, each starting at a multiple of 4 (zero padding between):
//! train labels (`u32 x N_train`), train pixels (`N_train x prod(shape)` values
//! of the pixel type), test labels, test pixels. Examples are stored class after
//! class for train (as [`subsample`] keeps them) and in file order for test.

use crate::error::{Error, Result};
use crate::train::batches::{Normalization, NormalizeChoice};
use crate::train::data::{self, class_counts, Dataset, Pixels, Split};
use crate::train::evaluate::limit;
use crate::train::longtail::{check_ratio, long_tail_counts, subsample, Profile};
use crate::train::report::write_atomically;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first 8 bytes of every exported file.
pub const MAGIC: &[u8; 8] = b"LDAMDATA";
/// The format version this module writes and reads.
pub const VERSION: u32 = 1;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// Training data (a file or folder, as `train` reads it).
    pub train_data: PathBuf,
    /// Test data; the same folder as `train_data` serves (its test split is read).
    pub test_data: PathBuf,
    /// `n_max / n_min` of the long-tailed training subset (1: balanced).
    pub imbalance_ratio: f64,
    pub profile: Profile,
    /// At most this many training examples: the head count is lowered until the
    /// long-tailed counts sum to no more. `None`: the head keeps the smallest
    /// class count, as `train` does.
    pub max_train: Option<usize>,
    /// A seeded random part of the test split of at most this many examples.
    pub max_test: Option<usize>,
    /// Seed of the long-tail subsample and of the test part.
    pub seed: u64,
    /// One name per class, in class order; empty when unknown.
    pub class_names: Vec<String>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            train_data: PathBuf::new(),
            test_data: PathBuf::new(),
            imbalance_ratio: 100.0,
            profile: Profile::Exp,
            max_train: Some(5000),
            max_test: Some(2000),
            seed: 0,
            class_names: Vec::new(),
        }
    }
}

/// A train/test pair as the format holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub train: Dataset,
    pub test: Dataset,
    pub normalization: Option<Normalization>,
    pub class_names: Vec<String>,
    pub description: String,
}

impl Exported {
    /// Training examples per class.
    pub fn train_counts(&self) -> Vec<u64> {
        class_counts(&self.train.labels, self.train.classes)
    }
}

/// Reads, long-tails and limits the data that `settings` name.
pub fn prepare(settings: &ExportSettings) -> Result<Exported> {
    check_ratio(settings.imbalance_ratio).map_err(|e| Error::in_setting("imbalance_ratio", e))?;
    let full_train = data::load(&settings.train_data, Split::Train)
        .map_err(|e| Error::in_setting("train", e))?;
    let test =
        data::load(&settings.test_data, Split::Test).map_err(|e| Error::in_setting("test", e))?;
    if test.shape != full_train.shape {
        return Err(Error::config(format!(
            "{} holds examples of shape {:?}, but {} holds {:?}",
            test.source, test.shape, full_train.source, full_train.shape
        )));
    }
    let classes = full_train.classes.max(test.classes);
    if !settings.class_names.is_empty() && settings.class_names.len() != classes {
        return Err(Error::setting(
            "class_names",
            format!("{} names for {classes} classes", settings.class_names.len()),
        ));
    }
    let mut full_train = full_train;
    full_train.classes = classes;
    let mut test = test;
    test.classes = classes;

    let normalization = NormalizeChoice::default_for(&full_train).resolve(&full_train)?;
    let smallest = full_train.class_counts().into_iter().min().unwrap_or(0) as usize;
    let counts =
        |n_max| long_tail_counts(n_max, classes, settings.imbalance_ratio, settings.profile);
    let n_max = match settings.max_train {
        // The counts grow with the head count: the largest head that fits.
        Some(cap) => {
            let (mut low, mut high) = (0usize, smallest);
            while low < high {
                let mid = low + (high - low).div_ceil(2);
                if counts(mid).iter().sum::<usize>() <= cap {
                    low = mid;
                } else {
                    high = mid - 1;
                }
            }
            low
        }
        None => smallest,
    };
    let wanted = counts(n_max);
    if wanted.iter().sum::<usize>() == 0 {
        return Err(Error::setting(
            "max_train",
            "leaves no training examples; allow more",
        ));
    }
    let train = subsample(&full_train, &wanted, settings.seed)?;
    let test = limit(test, settings.max_test, settings.seed)?;
    let description = format!(
        "train: {}; ratio {}, profile {}; test: {}",
        train.source, settings.imbalance_ratio, settings.profile, test.source
    );
    Ok(Exported {
        train,
        test,
        normalization,
        class_names: settings.class_names.clone(),
        description,
    })
}

fn push_u32(out: &mut Vec<u8>, value: usize) -> Result<()> {
    let value = u32::try_from(value)
        .map_err(|_| Error::config(format!("{value} does not fit the format's 32 bits")))?;
    out.extend_from_slice(&value.to_le_bytes());
    Ok(())
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

fn push_text(out: &mut Vec<u8>, text: &str) -> Result<()> {
    push_u32(out, text.len())?;
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn push_split(out: &mut Vec<u8>, data: &Dataset) -> Result<()> {
    pad4(out);
    for &label in &data.labels {
        push_u32(out, label as usize)?;
    }
    pad4(out);
    match &data.images {
        Pixels::U8(values) => out.extend_from_slice(values),
        Pixels::F32(values) => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Pixels::Files(_) => {
            return Err(Error::config(format!(
                "{}: image files are decoded on demand; export reads in-memory datasets \
                 (IDX, CIFAR, NPZ)",
                data.source
            )))
        }
    }
    Ok(())
}

/// The bytes of the format above.
pub fn encode(data: &Exported) -> Result<Vec<u8>> {
    let (train, test) = (&data.train, &data.test);
    if train.shape != test.shape
        || train.classes != test.classes
        || std::mem::discriminant(&train.images) != std::mem::discriminant(&test.images)
    {
        return Err(Error::invalid(
            "train and test differ in example shape, classes or pixel type",
        ));
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    push_u32(&mut out, VERSION as usize)?;
    let header_at = out.len();
    push_u32(&mut out, 0)?; // header_bytes, filled in below
    push_u32(&mut out, train.classes)?;
    push_u32(&mut out, train.shape.len())?;
    for &d in &train.shape {
        push_u32(&mut out, d)?;
    }
    push_u32(&mut out, matches!(train.images, Pixels::F32(_)) as usize)?;
    match &data.normalization {
        Some(n) => {
            push_u32(&mut out, n.mean.len())?;
            for v in n.mean.iter().chain(&n.std) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        None => push_u32(&mut out, 0)?,
    }
    push_u32(&mut out, train.len())?;
    push_u32(&mut out, test.len())?;
    for count in data.train_counts() {
        push_u32(&mut out, count as usize)?;
    }
    let names = if data.class_names.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&data.class_names).map_err(|e| Error::invalid(e.to_string()))?
    };
    push_text(&mut out, &names)?;
    push_text(&mut out, &data.description)?;
    pad4(&mut out);
    let header_bytes = out.len();
    out[header_at..header_at + 4].copy_from_slice(&(header_bytes as u32).to_le_bytes());
    push_split(&mut out, train)?;
    push_split(&mut out, test)?;
    Ok(out)
}

/// Writes [`encode`]'s bytes to `path` atomically; an existing file is an
/// error unless `overwrite`.
pub fn write(data: &Exported, path: &Path, overwrite: bool) -> Result<()> {
    if path.exists() && !overwrite {
        return Err(Error::OutputExists {
            path: path.to_path_buf(),
        });
    }
    let bytes = encode(data)?;
    write_atomically(path, |file| file.write_all(&bytes))
}

/// Reads a file [`write`] wrote.
pub fn read(path: &Path) -> Result<Exported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes, &path.display().to_string())
}

/// A cursor over the bytes that fails, naming `source`, where they end early.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
    source: &'b str,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            Error::config(format!(
                "{}: truncated ({} bytes, {n} more wanted at byte {})",
                self.source,
                self.bytes.len(),
                self.at
            ))
        })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = self.take(n.checked_mul(4).unwrap_or(usize::MAX))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn text(&mut self) -> Result<String> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Error::config(format!("{}: text is not UTF-8", self.source)))
    }

    fn align(&mut self) -> Result<()> {
        let to = self.at.next_multiple_of(4);
        self.take(to - self.at).map(|_| ())
    }

    fn split(
        &mut self,
        n: usize,
        shape: &[usize],
        float: bool,
        classes: usize,
        name: &str,
    ) -> Result<Dataset> {
        self.align()?;
        let labels = (0..n)
            .map(|_| self.u32().map(|l| l as i64))
            .collect::<Result<Vec<i64>>>()?;
        self.align()?;
        let values = n
            .checked_mul(shape.iter().product())
            .ok_or_else(|| Error::config(format!("{}: sizes overflow", self.source)))?;
        let images = if float {
            Pixels::F32(self.f32s(values)?)
        } else {
            Pixels::U8(self.take(values)?.to_vec())
        };
        Dataset::new(
            images,
            shape.to_vec(),
            labels,
            classes,
            format!("{} ({name})", self.source),
        )
    }
}

/// Reads the bytes [`encode`] writes; `source` names them in errors. Every
/// size is checked against the bytes present before anything is allocated.
pub fn decode(bytes: &[u8], source: &str) -> Result<Exported> {
    let mut r = Reader {
        bytes,
        at: 0,
        source,
    };
    if r.take(MAGIC.len()).ok() != Some(MAGIC.as_slice()) {
        return Err(Error::config(format!(
            "{source}: not an exported dataset (no LDAMDATA magic)"
        )));
    }
    let version = r.u32()?;
    if version != VERSION as usize {
        return Err(Error::config(format!(
            "{source}: format version {version}, this tool reads {VERSION}"
        )));
    }
    let header_bytes = r.u32()?;
    let classes = r.u32()?;
    let rank = r.u32()?;
    let shape = (0..rank.min(bytes.len() / 4))
        .map(|_| r.u32())
        .collect::<Result<Vec<usize>>>()?;
    let float = match r.u32()? {
        0 => false,
        1 => true,
        other => {
            return Err(Error::config(format!(
                "{source}: unknown pixel type {other}"
            )))
        }
    };
    let channels = r.u32()?;
    let normalization = if channels == 0 {
        None
    } else {
        let mean = r.f32s(channels)?;
        let std = r.f32s(channels)?;
        Some(Normalization { mean, std })
    };
    let (n_train, n_test) = (r.u32()?, r.u32()?);
    let counts = (0..classes.min(bytes.len() / 4))
        .map(|_| r.u32())
        .collect::<Result<Vec<usize>>>()?;
    let names = r.text()?;
    let class_names: Vec<String> = if names.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&names)
            .map_err(|e| Error::config(format!("{source}: class names: {e}")))?
    };
    let description = r.text()?;
    if header_bytes < r.at || header_bytes > bytes.len() {
        return Err(Error::config(format!(
            "{source}: header size {header_bytes} does not fit its fields"
        )));
    }
    r.at = header_bytes;
    let train = r.split(n_train, &shape, float, classes, "train")?;
    let test = r.split(n_test, &shape, float, classes, "test")?;
    let exported = Exported {
        train,
        test,
        normalization,
        class_names,
        description,
    };
    let stored: Vec<u64> = counts.iter().map(|&c| c as u64).collect();
    if exported.train_counts() != stored {
        return Err(Error::config(format!(
            "{source}: the header's class counts {stored:?} differ from the labels'"
        )));
    }
    Ok(exported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(float: bool) -> Exported {
        let shape = vec![1, 2, 3];
        let make = |labels: Vec<i64>| {
            let n = labels.len() * 6;
            let images = if float {
                Pixels::F32((0..n).map(|i| i as f32 * 0.5 - 1.0).collect())
            } else {
                Pixels::U8((0..n).map(|i| (i * 7 % 256) as u8).collect())
            };
            Dataset::new(images, shape.clone(), labels, 3, "made").unwrap()
        };
        Exported {
            train: make(vec![0, 0, 0, 1, 2]),
            test: make(vec![2, 1, 0]),
            normalization: Some(Normalization {
                mean: vec![0.25],
                std: vec![0.5],
            }),
            class_names: vec!["a".into(), "b é".into(), "c".into()],
            description: "made up".into(),
        }
    }

    #[test]
    fn decode_reads_back_what_encode_writes() {
        for float in [false, true] {
            let data = sample(float);
            let bytes = encode(&data).unwrap();
            assert_eq!(&bytes[..8], MAGIC);
            let back = decode(&bytes, "made").unwrap();
            assert_eq!(back.train.labels, data.train.labels);
            assert_eq!(back.train.images, data.train.images);
            assert_eq!(back.test.images, data.test.images);
            assert_eq!(back.test.labels, data.test.labels);
            assert_eq!(back.normalization, data.normalization);
            assert_eq!(back.class_names, data.class_names);
            assert_eq!(back.description, data.description);
            assert_eq!(back.train_counts(), vec![3, 1, 1]);
        }
    }

    #[test]
    fn sections_start_at_multiples_of_four() {
        let bytes = encode(&sample(false)).unwrap();
        let header = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        assert_eq!(header % 4, 0);
        // u8 pixels: 5 labels, 30 pixel bytes (padded to 32), 3 labels, 18 pixels.
        assert_eq!(bytes.len(), header + 20 + 32 + 12 + 18);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_errors() {
        let bytes = encode(&sample(true)).unwrap();
        for cut in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], "cut").is_err(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = b'X';
        assert!(decode(&other, "x")
            .unwrap_err()
            .to_string()
            .contains("LDAMDATA"));
    }
}
