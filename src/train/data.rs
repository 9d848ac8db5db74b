//! Image-classification datasets read straight from the files users already have:
//! MNIST-style IDX (Fashion-MNIST, raw or gzipped), the CIFAR-10/100 binary
//! batches, and NPZ archives with arrays `x` and `y` (LDAM-DRW.md §6).
//!
//! [`load`] takes a file or a folder. A folder is searched for the standard file
//! names of one split, so the same folder serves `--data` for both training and
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

use crate::error::{Error, Result};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
}

impl Pixels {
    /// Number of stored values (examples x values per example).
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn type_name(&self) -> &'static str {
        match self {
            Pixels::U8(_) => "u8",
            Pixels::F32(_) => "f32",
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
    /// pixels divided by 255 (the reference's `ToTensor`), f32 values copied.
    ///
    /// # Panics
    /// If `i >= self.len()` or `out.len() != self.example_len()`: both are the
    /// caller's indexing mistakes, like slice indexing.
    pub fn write_example(&self, i: usize, out: &mut [f32]) {
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
        }
    }

    /// Example `i` as a new f32 vector; see [`Dataset::write_example`].
    pub fn example(&self, i: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.example_len()];
        self.write_example(i, &mut out);
        out
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
        };
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Dataset::new(images, self.shape.clone(), labels, self.classes, source)
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
        };
        Dataset::new(
            images,
            vec![channels, height, width],
            self.labels.clone(),
            self.classes,
            format!("{} (grey repeated into {channels} channels)", self.source),
        )
    }
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
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if metadata.is_dir() {
        find_layout(path, split)?.read(split)
    } else {
        read_file(path, split)
    }
}

// ---------------------------------------------------------------------------
// Folder layouts

/// The files of one split in a folder, by format.
#[derive(Debug)]
enum Layout {
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

    fn read(&self, split: Split) -> Result<Dataset> {
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

fn find_layout(dir: &Path, split: Split) -> Result<Layout> {
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
                 (CIFAR-100) or {split}.npz",
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

// ---------------------------------------------------------------------------
// Single files, recognised by content

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";
/// IDX magic: two zero bytes, element type 0x08 (unsigned byte), dimensions.
const IDX_IMAGES_MAGIC: [u8; 4] = [0, 0, 0x08, 3];
const IDX_LABELS_MAGIC: [u8; 4] = [0, 0, 0x08, 1];

fn read_file(path: &Path, split: Split) -> Result<Dataset> {
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

/// `train-images-idx3-ubyte.gz` -> `train-labels-idx1-ubyte[.gz]` in the same folder.
fn idx_labels_next_to(images: &Path) -> Result<PathBuf> {
    let name = images
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    let labels_stem = stem
        .replace("images-idx3", "labels-idx1")
        .replace("images.idx3", "labels.idx1");
    if labels_stem == stem {
        return Err(Error::config(format!(
            "{}: an IDX images file, but its name has no 'images-idx3' to find the \
             labels file by; pass the folder, named train-/t10k-images-idx3-ubyte",
            images.display()
        )));
    }
    [labels_stem.clone(), format!("{labels_stem}.gz")]
        .iter()
        .map(|n| images.with_file_name(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::config(format!(
                "{}: no labels file {labels_stem}[.gz] next to it",
                images.display()
            ))
        })
}

/// A file's bytes, inflated when they start with the gzip magic (whatever the name).
struct Content<'p> {
    path: &'p Path,
    reader: Box<dyn BufRead>,
    gzip: bool,
    /// Size on disk: bounds how much a header can honestly claim.
    file_len: u64,
}

impl<'p> Content<'p> {
    fn open(path: &'p Path) -> Result<Content<'p>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut raw = BufReader::new(file);
        let gzip = raw
            .fill_buf()
            .map_err(|e| Error::io(path, e))?
            .starts_with(&GZIP_MAGIC);
        let reader: Box<dyn BufRead> = if gzip {
            // Multi-member, as `gzip` itself reads concatenated members.
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(raw)))
        } else {
            Box::new(raw)
        };
        Ok(Content {
            path,
            reader,
            gzip,
            file_len,
        })
    }

    /// Up to `n` leading bytes of the content, without consuming them.
    fn peek(&mut self, n: usize) -> Result<Vec<u8>> {
        let (path, gzip) = (self.path, self.gzip);
        let buf = self
            .reader
            .fill_buf()
            .map_err(|e| read_error(path, gzip, e))?;
        Ok(buf[..buf.len().min(n)].to_vec())
    }

    /// How much to reserve up front for content a header says is `claimed` bytes
    /// long: never more than the file could plausibly inflate to at an ordinary
    /// ratio (the buffer grows past it if the data really is longer), so a lying
    /// header cannot make the reader reserve memory the bytes do not back.
    fn reservation(&self, claimed: u64) -> usize {
        let plausible = if self.gzip {
            self.file_len.saturating_mul(PLAUSIBLE_DEFLATE_RATIO)
        } else {
            self.file_len
        };
        usize::try_from(claimed.min(plausible)).unwrap_or(0)
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.reader.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt(&format!("truncated: ends inside the {what}"))
            } else {
                self.read_error(e)
            }
        })
    }

    /// Reads at most `limit` bytes, then reports whether more followed.
    fn read_up_to(&mut self, limit: u64) -> Result<(Vec<u8>, bool)> {
        let mut out = Vec::with_capacity(self.reservation(limit));
        (&mut self.reader)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| self.read_error(e))?;
        let (path, gzip) = (self.path, self.gzip);
        let more = !self
            .reader
            .fill_buf()
            .map_err(|e| read_error(path, gzip, e))?
            .is_empty();
        Ok((out, more))
    }

    fn read_all(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(if self.gzip { 0 } else { self.file_len as usize });
        self.reader
            .read_to_end(&mut out)
            .map_err(|e| self.read_error(e))?;
        Ok(out)
    }

    fn read_error(&self, e: std::io::Error) -> Error {
        read_error(self.path, self.gzip, e)
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::config(format!("{}: {what}", self.path.display()))
    }
}

/// Deflate can reach 1032:1, but image and label files compress by far less: up
/// front, readers reserve at most this ratio times the compressed size.
const PLAUSIBLE_DEFLATE_RATIO: u64 = 8;

fn read_error(path: &Path, gzip: bool, e: std::io::Error) -> Error {
    if gzip {
        // flate2 reports bad or truncated gzip data as I/O errors.
        Error::config(format!(
            "{}: corrupt or truncated gzip data ({e})",
            path.display()
        ))
    } else {
        Error::io(path, e)
    }
}

// ---------------------------------------------------------------------------
// IDX (http://yann.lecun.com/exdb/mnist/): magic 0x0000 08 0D, then D big-endian
// u32 dimensions, then the bytes in row-major order.

/// The dimensions and bytes of one unsigned-byte IDX file whose magic must be
/// `magic` (which also fixes the number of dimensions).
fn read_idx(path: &Path, magic: [u8; 4], what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut content = Content::open(path)?;
    let mut head = [0u8; 4];
    content.read_exact(&mut head, "IDX header")?;
    if head != magic {
        let found = u32::from_be_bytes(head);
        let expected = u32::from_be_bytes(magic);
        let why = if head[..2] != [0, 0] {
            "not an IDX file".to_string()
        } else if head[2] != 0x08 {
            format!(
                "IDX element type 0x{:02x} is not unsigned bytes (0x08)",
                head[2]
            )
        } else {
            format!(
                "an IDX file with {} dimensions, not an IDX {what} file",
                head[3]
            )
        };
        return Err(content.corrupt(&format!(
            "{why}; magic 0x{found:08x}, expected 0x{expected:08x}"
        )));
    }
    let mut dims = Vec::with_capacity(magic[3] as usize);
    for _ in 0..magic[3] {
        let mut dim = [0u8; 4];
        content.read_exact(&mut dim, "IDX header")?;
        dims.push(u32::from_be_bytes(dim) as usize);
    }
    let shown = dims
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" x ");
    let expected = checked_product(&dims)
        .ok_or_else(|| content.corrupt(&format!("IDX dimensions {shown} overflow")))?;
    let (bytes, more) = content.read_up_to(expected as u64)?;
    if bytes.len() < expected {
        return Err(content.corrupt(&format!(
            "truncated: the IDX header declares {shown} {what} ({expected} bytes) but \
             only {} bytes follow it",
            bytes.len()
        )));
    }
    if more {
        return Err(content.corrupt(&format!(
            "more bytes than the IDX header's {shown} {what} ({expected} bytes)"
        )));
    }
    Ok((dims, bytes))
}

fn read_idx_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let (dims, pixels) = read_idx(images, IDX_IMAGES_MAGIC, "images")?;
    let (label_dims, label_bytes) = read_idx(labels, IDX_LABELS_MAGIC, "labels")?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if label_dims[0] != n {
        return Err(Error::config(format!(
            "{}: {} labels, but {} holds {n} images",
            labels.display(),
            label_dims[0],
            images.display()
        )));
    }
    if n == 0 || rows == 0 || cols == 0 {
        return Err(Error::config(format!(
            "{}: holds no images ({n} x {rows} x {cols})",
            images.display()
        )));
    }
    let labels_i64: Vec<i64> = label_bytes.iter().map(|&l| i64::from(l)).collect();
    let classes = label_bytes
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1);
    Dataset::new(
        Pixels::U8(pixels),
        vec![1, rows, cols],
        labels_i64,
        classes,
        format!("IDX {} + {}", images.display(), labels.display()),
    )
}

// ---------------------------------------------------------------------------
// CIFAR binary (https://www.cs.toronto.edu/~kriz/cifar.html): records of label
// byte(s) then 3072 pixels, 1024 red, 1024 green, 1024 blue, each row-major 32x32:
// already channel-height-width.

const CIFAR_PIXELS: usize = 3 * 32 * 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CifarKind {
    /// One label byte.
    Ten,
    /// A coarse (20 superclasses) and a fine (100 classes) label byte; we train on fine.
    Hundred,
}

impl CifarKind {
    fn name(self) -> &'static str {
        match self {
            CifarKind::Ten => "CIFAR-10",
            CifarKind::Hundred => "CIFAR-100",
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Ten => 1,
            CifarKind::Hundred => 2,
        }
    }

    fn record_len(self) -> usize {
        self.label_bytes() + CIFAR_PIXELS
    }

    fn classes(self) -> usize {
        match self {
            CifarKind::Ten => 10,
            CifarKind::Hundred => 100,
        }
    }

    /// The (fine) label of a record, or why the record cannot be of this kind.
    fn label(self, record: &[u8]) -> std::result::Result<u8, String> {
        match self {
            CifarKind::Ten if record[0] < 10 => Ok(record[0]),
            CifarKind::Ten => Err(format!(
                "label {} is not a CIFAR-10 class (0..9)",
                record[0]
            )),
            CifarKind::Hundred if record[0] >= 20 => Err(format!(
                "coarse label {} is not a CIFAR-100 superclass (0..19)",
                record[0]
            )),
            CifarKind::Hundred if record[1] < 100 => Ok(record[1]),
            CifarKind::Hundred => Err(format!(
                "fine label {} is not a CIFAR-100 class (0..99)",
                record[1]
            )),
        }
    }
}

/// The standard names fix the kind: the two formats have no magic to tell them apart.
fn cifar_kind_from_name(path: &Path) -> Option<CifarKind> {
    let name = path.file_name()?.to_str()?;
    if name == "test_batch.bin"
        || name
            .strip_prefix("data_batch_")
            .and_then(|s| s.strip_suffix(".bin"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        Some(CifarKind::Ten)
    } else if name == "train.bin" || name == "test.bin" {
        Some(CifarKind::Hundred)
    } else {
        None
    }
}

/// Reads and concatenates CIFAR batch files; `kind` is `None` for a file whose
/// name does not say, decided then by record size and label ranges.
fn read_cifar_files(files: &[PathBuf], kind: Option<CifarKind>) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut kind_seen = kind;
    for path in files {
        let bytes = Content::open(path)?.read_all()?;
        let kind = match kind_seen {
            Some(kind) => kind,
            None => guess_cifar_kind(path, &bytes)?,
        };
        kind_seen = Some(kind);
        let record_len = kind.record_len();
        let describe = || format!("{} {}-byte records", kind.name(), record_len);
        if bytes.is_empty() {
            return Err(Error::config(format!("{}: empty file", path.display())));
        }
        if bytes.starts_with(&ZIP_MAGIC) {
            return Err(Error::config(format!(
                "{}: a zip archive, not {}",
                path.display(),
                describe()
            )));
        }
        if bytes.len() % record_len != 0 {
            return Err(Error::config(format!(
                "{}: {} bytes is not a whole number of {} (label + 3072 pixels); \
                 truncated or not {}",
                path.display(),
                bytes.len(),
                describe(),
                kind.name()
            )));
        }
        pixels.reserve(bytes.len() / record_len * CIFAR_PIXELS);
        for (i, record) in bytes.chunks_exact(record_len).enumerate() {
            let label = kind
                .label(record)
                .map_err(|why| Error::config(format!("{}: record {i}: {why}", path.display())))?;
            labels.push(i64::from(label));
            pixels.extend_from_slice(&record[kind.label_bytes()..]);
        }
    }
    let kind = kind_seen.expect("read_cifar_files is given at least one file");
    let names = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Dataset::new(
        Pixels::U8(pixels),
        vec![3, 32, 32],
        labels,
        kind.classes(),
        format!("{} {names}", kind.name()),
    )
}

/// The CIFAR kind whose record size divides the file and whose labels are all in range.
fn guess_cifar_kind(path: &Path, bytes: &[u8]) -> Result<CifarKind> {
    let fits = |kind: CifarKind| {
        !bytes.is_empty()
            && bytes.len() % kind.record_len() == 0
            && bytes
                .chunks_exact(kind.record_len())
                .all(|r| kind.label(r).is_ok())
    };
    match (fits(CifarKind::Ten), fits(CifarKind::Hundred)) {
        (true, false) => Ok(CifarKind::Ten),
        (false, true) => Ok(CifarKind::Hundred),
        (true, true) => Err(Error::config(format!(
            "{}: could be CIFAR-10 or CIFAR-100 binary; name it data_batch_N.bin / \
             test_batch.bin (CIFAR-10) or train.bin / test.bin (CIFAR-100)",
            path.display()
        ))),
        (false, false) => Err(Error::config(format!(
            "{}: not a recognised dataset file: no IDX (0x00000803), gzip or zip/NPZ \
             magic number, and its {} bytes are not whole CIFAR-10 (3073-byte) or \
             CIFAR-100 (3074-byte) records with valid labels",
            path.display(),
            bytes.len()
        ))),
    }
}

// ---------------------------------------------------------------------------
// NPZ: a zip archive of .npy files (numpy.savez / savez_compressed). Read here
// rather than with ndarray-npy because (a) its zip support is built without
// deflate, so savez_compressed files would not open, and (b) it allocates the
// size an .npy header claims before reading a byte of data.

/// One member of a zip archive, from its central directory.
#[derive(Debug)]
struct ZipEntry {
    name: String,
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    local_offset: u64,
}

fn read_npz(path: &Path, split: Split) -> Result<Dataset> {
    let bad = |what: String| Error::config(format!("{}: {what}", path.display()));
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let entries = zip_entries(&mut file, path)?;
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == format!("{name}.npy") || e.name == name)
    };
    let split_suffix = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    let (x_key, y_key) = if find("x").is_some() || find("y").is_some() {
        ("x".to_string(), "y".to_string())
    } else {
        (format!("x_{split_suffix}"), format!("y_{split_suffix}"))
    };
    let member = |key: &str| {
        find(key).ok_or_else(|| {
            let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
            bad(format!(
                "no array '{key}' in the archive (it has: {}); an NPZ dataset needs \
                 'x' (N, ...) uint8 or float32 and 'y' (N,) integer",
                names.join(", ")
            ))
        })
    };
    let x_entry = member(&x_key)?;
    let y_entry = member(&y_key)?;

    let (x_header, x_bytes) = read_npy_member(&mut file, path, x_entry, &x_key)?;
    let (y_header, y_bytes) = read_npy_member(&mut file, path, y_entry, &y_key)?;

    let n = *x_header.shape.first().unwrap_or(&0);
    if x_header.shape.len() < 2 {
        return Err(bad(format!(
            "array '{x_key}' has shape {:?}; expected (N, ...) with one row per example",
            x_header.shape
        )));
    }
    let y_is_column =
        y_header.shape.len() == 1 || (y_header.shape.len() == 2 && y_header.shape[1] == 1);
    if !y_is_column || y_header.shape[0] != n {
        return Err(bad(format!(
            "array '{y_key}' has shape {:?}, but '{x_key}' holds {n} examples; expected ({n},)",
            y_header.shape
        )));
    }
    if x_header.fortran_order && x_header.shape.len() > 1 {
        return Err(bad(format!(
            "array '{x_key}' is stored in Fortran order; save np.ascontiguousarray(x)"
        )));
    }
    let labels =
        npy_integers(&y_header, &y_bytes).map_err(|why| bad(format!("array '{y_key}': {why}")))?;
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l < 0) {
        return Err(bad(format!(
            "array '{y_key}': label {l} of example {i} is negative"
        )));
    }
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);

    let (shape, nhwc) = npz_example_shape(&x_header.shape[1..]);
    let images = match (x_header.descr.kind, x_header.descr.size) {
        (b'u', 1) => Pixels::U8(x_bytes),
        (b'f', 4) => Pixels::F32(
            x_bytes
                .chunks_exact(4)
                .map(|b| {
                    let b = [b[0], b[1], b[2], b[3]];
                    if x_header.descr.big_endian {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    }
                })
                .collect(),
        ),
        _ => {
            return Err(bad(format!(
                "array '{x_key}' has dtype '{}'; expected uint8 or float32 \
                 (x.astype(np.float32))",
                x_header.descr.text
            )))
        }
    };
    let images = if nhwc {
        hwc_to_chw(images, &shape)
    } else {
        images
    };
    let layout = if nhwc {
        ", height-width-channels transposed"
    } else {
        ""
    };
    Dataset::new(
        images,
        shape,
        labels,
        classes,
        format!("NPZ {} ({x_key}, {y_key}{layout})", path.display()),
    )
}

/// Channels-first shape of one example from an NPZ's per-example dimensions, and
/// whether the data are height-width-channels (Keras' CIFAR layout) and need
/// transposing: (H, W) is grey; (C, H, W) when the first dimension looks like a
/// channel count (1, 3 or 4); else (H, W, C) when the last one does.
fn npz_example_shape(dims: &[usize]) -> (Vec<usize>, bool) {
    let is_channels = |d: usize| matches!(d, 1 | 3 | 4);
    match *dims {
        [h, w] => (vec![1, h, w], false),
        [c, _, _] if is_channels(c) => (dims.to_vec(), false),
        [h, w, c] if is_channels(c) => (vec![c, h, w], true),
        _ => (dims.to_vec(), false),
    }
}

fn hwc_to_chw(images: Pixels, chw: &[usize]) -> Pixels {
    let (c, h, w) = (chw[0], chw[1], chw[2]);
    fn transpose<T: Copy + Default>(values: &[T], c: usize, h: usize, w: usize) -> Vec<T> {
        let mut out = vec![T::default(); values.len()];
        let n = c * h * w;
        for (src, dst) in values.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        dst[(ch * h + y) * w + x] = src[(y * w + x) * c + ch];
                    }
                }
            }
        }
        out
    }
    match images {
        Pixels::U8(v) => Pixels::U8(transpose(&v, c, h, w)),
        Pixels::F32(v) => Pixels::F32(transpose(&v, c, h, w)),
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes were sliced"))
}

/// The central directory of a zip archive (PKWARE APPNOTE 4.3), zip64 included
/// (numpy.savez writes zip64 records).
fn zip_entries(file: &mut File, path: &Path) -> Result<Vec<ZipEntry>> {
    let bad = |what: &str| {
        Error::config(format!(
            "{}: not a readable NPZ (zip) archive: {what}",
            path.display()
        ))
    };
    let io = |e| Error::io(path, e);
    let file_len = file.metadata().map_err(io)?.len();
    // End of central directory: 22 bytes plus a comment of up to 65535.
    let tail_len = file_len.min(22 + 65535);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(file_len - tail_len))
        .map_err(io)?;
    file.read_exact(&mut tail).map_err(io)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| bad("no end-of-central-directory record (truncated?)"))?;
    let mut count = u64::from(le_u16(&tail, eocd + 10));
    let mut cd_size = u64::from(le_u32(&tail, eocd + 12));
    let mut cd_offset = u64::from(le_u32(&tail, eocd + 16));
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // The zip64 locator sits just before the classic record.
        let locator = eocd
            .checked_sub(20)
            .filter(|&l| tail[l..].starts_with(b"PK\x06\x07"))
            .ok_or_else(|| bad("zip64 end-of-central-directory locator missing"))?;
        let record_at = le_u64(&tail, locator + 8);
        let mut record = [0u8; 56];
        if record_at.checked_add(56).is_none_or(|end| end > file_len) {
            return Err(bad("zip64 end-of-central-directory record out of range"));
        }
        file.seek(SeekFrom::Start(record_at)).map_err(io)?;
        file.read_exact(&mut record).map_err(io)?;
        if !record.starts_with(b"PK\x06\x06") {
            return Err(bad("bad zip64 end-of-central-directory record"));
        }
        count = le_u64(&record, 32);
        cd_size = le_u64(&record, 40);
        cd_offset = le_u64(&record, 48);
    }
    if cd_offset
        .checked_add(cd_size)
        .is_none_or(|end| end > file_len)
    {
        return Err(bad("central directory lies outside the file (truncated?)"));
    }
    // Bounded by the file size, checked just above.
    let mut cd = vec![0u8; cd_size as usize];
    file.seek(SeekFrom::Start(cd_offset)).map_err(io)?;
    file.read_exact(&mut cd).map_err(io)?;

    let mut entries = Vec::new();
    let mut at = 0usize;
    while entries.len() as u64 != count {
        if at + 46 > cd.len() || !cd[at..].starts_with(b"PK\x01\x02") {
            return Err(bad("corrupt central directory"));
        }
        let name_len = le_u16(&cd, at + 28) as usize;
        let extra_len = le_u16(&cd, at + 30) as usize;
        let comment_len = le_u16(&cd, at + 32) as usize;
        let end = at + 46 + name_len + extra_len + comment_len;
        if end > cd.len() {
            return Err(bad("corrupt central directory"));
        }
        let mut entry = ZipEntry {
            name: String::from_utf8_lossy(&cd[at + 46..at + 46 + name_len]).into_owned(),
            flags: le_u16(&cd, at + 8),
            method: le_u16(&cd, at + 10),
            crc: le_u32(&cd, at + 16),
            compressed: u64::from(le_u32(&cd, at + 20)),
            uncompressed: u64::from(le_u32(&cd, at + 24)),
            local_offset: u64::from(le_u32(&cd, at + 42)),
        };
        // Zip64 extra field (id 1): 8-byte values for the fields that read 0xffffffff,
        // in the order uncompressed, compressed, local offset.
        let mut extra = &cd[at + 46 + name_len..at + 46 + name_len + extra_len];
        while extra.len() >= 4 {
            let (id, size) = (le_u16(extra, 0), le_u16(extra, 2) as usize);
            let data = extra
                .get(4..4 + size)
                .ok_or_else(|| bad("corrupt extra field"))?;
            if id == 1 {
                let mut values = data.chunks_exact(8).map(|c| le_u64(c, 0));
                for field in [
                    &mut entry.uncompressed,
                    &mut entry.compressed,
                    &mut entry.local_offset,
                ] {
                    if *field == 0xffff_ffff {
                        *field = values
                            .next()
                            .ok_or_else(|| bad("short zip64 extra field"))?;
                    }
                }
            }
            extra = &extra[4 + size..];
        }
        entries.push(entry);
        at = end;
    }
    Ok(entries)
}

/// The parsed header of one .npy member.
struct NpyHeader {
    descr: Dtype,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A simple numpy dtype such as `<f4`, `|u1`, `>i8`.
struct Dtype {
    text: String,
    big_endian: bool,
    /// `b'u'`, `b'i'`, `b'f'`, ...
    kind: u8,
    size: usize,
}

/// Reads member `entry` as an .npy array: its header and exactly the data bytes
/// the header declares (the CRC-32 checked).
fn read_npy_member(
    file: &mut File,
    path: &Path,
    entry: &ZipEntry,
    key: &str,
) -> Result<(NpyHeader, Vec<u8>)> {
    let bad = |what: String| Error::config(format!("{}: array '{key}': {what}", path.display()));
    let io = |e| Error::io(path, e);
    let file_len = file.metadata().map_err(io)?.len();
    if entry.flags & 1 != 0 {
        return Err(bad("encrypted zip members are not supported".into()));
    }
    let mut local = [0u8; 30];
    if entry
        .local_offset
        .checked_add(30)
        .is_none_or(|e| e > file_len)
    {
        return Err(bad(
            "member header lies outside the file (truncated?)".into()
        ));
    }
    file.seek(SeekFrom::Start(entry.local_offset)).map_err(io)?;
    file.read_exact(&mut local).map_err(io)?;
    if !local.starts_with(b"PK\x03\x04") {
        return Err(bad("corrupt zip member header".into()));
    }
    let data_at =
        entry.local_offset + 30 + u64::from(le_u16(&local, 26)) + u64::from(le_u16(&local, 28));
    if data_at
        .checked_add(entry.compressed)
        .is_none_or(|e| e > file_len)
    {
        return Err(bad(
            "member data run past the end of the file (truncated?)".into()
        ));
    }
    file.seek(SeekFrom::Start(data_at)).map_err(io)?;
    let stored = Read::take(&mut *file, entry.compressed);
    // What to reserve for this member's data: its size on disk at an ordinary
    // deflate ratio at most (the buffer grows past it if the data is longer).
    let max_len = match entry.method {
        0 => entry.compressed,
        8 => entry
            .compressed
            .saturating_mul(PLAUSIBLE_DEFLATE_RATIO)
            .saturating_add(1024),
        m => {
            return Err(bad(format!(
                "zip compression method {m} is not supported (only stored and deflate)"
            )))
        }
    }
    .min(entry.uncompressed.max(1024));
    let inner: Box<dyn Read + '_> = if entry.method == 8 {
        Box::new(flate2::read::DeflateDecoder::new(stored))
    } else {
        Box::new(stored)
    };
    let mut reader = flate2::CrcReader::new(inner);
    let read_error = |e: std::io::Error| bad(format!("corrupt or truncated data ({e})"));

    let mut preamble = [0u8; 10];
    reader.read_exact(&mut preamble).map_err(read_error)?;
    if !preamble.starts_with(b"\x93NUMPY") {
        return Err(bad("not an .npy array (no \\x93NUMPY magic)".into()));
    }
    let header_len = match preamble[6] {
        1 => usize::from(le_u16(&preamble, 8)),
        2 | 3 => {
            let mut rest = [0u8; 2];
            reader.read_exact(&mut rest).map_err(read_error)?;
            le_u32(&[preamble[8], preamble[9], rest[0], rest[1]], 0) as usize
        }
        v => return Err(bad(format!(".npy format version {v} is not supported"))),
    };
    if header_len > 1 << 20 {
        return Err(bad(format!(
            ".npy header of {header_len} bytes is implausible"
        )));
    }
    let mut header_text = vec![0u8; header_len];
    reader.read_exact(&mut header_text).map_err(read_error)?;
    let header = parse_npy_header(&String::from_utf8_lossy(&header_text)).map_err(bad)?;

    let shown = format!("{:?}", header.shape);
    let expected = checked_product(&header.shape)
        .and_then(|n| n.checked_mul(header.descr.size))
        .ok_or_else(|| bad(format!("shape {shown} overflows")))?;
    let mut data = Vec::with_capacity(expected.min(usize::try_from(max_len).unwrap_or(usize::MAX)));
    (&mut reader)
        .take((expected as u64).saturating_add(1))
        .read_to_end(&mut data)
        .map_err(read_error)?;
    if data.len() != expected {
        return Err(bad(format!(
            "shape {shown} of '{}' needs {expected} bytes, but the member holds {}{}",
            header.descr.text,
            data.len(),
            if data.len() > expected {
                " or more"
            } else {
                " (truncated?)"
            }
        )));
    }
    if reader.crc().sum() != entry.crc {
        return Err(bad("CRC-32 mismatch: the archive is corrupt".into()));
    }
    Ok((header, data))
}

/// Parses the Python dict literal of an .npy header, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 28, 28), }`.
fn parse_npy_header(text: &str) -> std::result::Result<NpyHeader, String> {
    let value_of = |key: &str| -> std::result::Result<&str, String> {
        let at = text
            .find(&format!("'{key}'"))
            .or_else(|| text.find(&format!("\"{key}\"")))
            .ok_or_else(|| format!(".npy header has no '{key}': {}", text.trim()))?;
        let rest = text[at + key.len() + 2..].trim_start();
        Ok(rest.strip_prefix(':').unwrap_or(rest).trim_start())
    };
    let descr_value = value_of("descr")?;
    let quote = descr_value
        .chars()
        .next()
        .filter(|&c| c == '\'' || c == '"')
        .ok_or_else(|| {
            format!(
                "structured dtype {} is not supported",
                descr_value.split('}').next().unwrap_or("")
            )
        })?;
    let descr_text = descr_value[1..]
        .split(quote)
        .next()
        .unwrap_or_default()
        .to_string();
    let descr = parse_dtype(&descr_text)?;
    let fortran_order = value_of("fortran_order")?.starts_with("True");
    let shape_value = value_of("shape")?;
    let inside = shape_value
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("unreadable shape in .npy header: {}", text.trim()))?;
    let shape = inside
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("unreadable shape ({inside}) in .npy header"))
        })
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
    })
}

fn parse_dtype(text: &str) -> std::result::Result<Dtype, String> {
    let bytes = text.as_bytes();
    let unsupported = || format!("dtype '{text}' is not supported");
    let (order, kind, size) = match bytes {
        [order @ (b'<' | b'>' | b'|' | b'='), kind, size @ ..] => (*order, *kind, size),
        _ => return Err(unsupported()),
    };
    let size = std::str::from_utf8(size)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&s| matches!(s, 1 | 2 | 4 | 8))
        .ok_or_else(unsupported)?;
    // '=' is the writer's native order; numpy writes '<' or '>' in files anyway.
    Ok(Dtype {
        text: text.to_string(),
        big_endian: order == b'>',
        kind,
        size,
    })
}

/// Integer array values as i64 (labels), from any numpy integer dtype.
fn npy_integers(header: &NpyHeader, bytes: &[u8]) -> std::result::Result<Vec<i64>, String> {
    let Dtype {
        kind,
        size,
        big_endian,
        ..
    } = header.descr;
    if !matches!(kind, b'i' | b'u') {
        return Err(format!(
            "dtype '{}' is not an integer type; labels must be integers",
            header.descr.text
        ));
    }
    bytes
        .chunks_exact(size)
        .map(|chunk| {
            let mut le = [0u8; 8];
            for (k, &b) in chunk.iter().enumerate() {
                le[if big_endian { size - 1 - k } else { k }] = b;
            }
            let signed = kind == b'i' && le[size - 1] & 0x80 != 0;
            if signed {
                le[size..].fill(0xff);
            }
            let value = u64::from_le_bytes(le);
            if kind == b'u' && value > i64::MAX as u64 {
                Err(format!("label {value} is too large"))
            } else {
                Ok(value as i64)
            }
        })
        .collect()
}

fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_parses_numpy_and_ndarray_npy_spellings() {
        let h =
            parse_npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 28, 28), }")
                .unwrap();
        assert_eq!(
            (h.descr.kind, h.descr.size, h.fortran_order),
            (b'f', 4, false)
        );
        assert_eq!(h.shape, vec![2, 28, 28]);
        let h =
            parse_npy_header("{'descr': '|u1', 'fortran_order': True, 'shape': (5,), }").unwrap();
        assert_eq!(
            (h.descr.kind, h.shape.clone(), h.fortran_order),
            (b'u', vec![5], true)
        );
        let h = parse_npy_header("{\"descr\":\">i8\",\"fortran_order\":false,\"shape\":(3L,)}")
            .unwrap();
        assert!(h.descr.big_endian);
        assert_eq!(h.shape, vec![3]);
    }

    #[test]
    fn structured_and_exotic_dtypes_are_refused() {
        assert!(parse_npy_header(
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }"
        )
        .is_err());
        assert!(parse_dtype("<U10").is_err());
        assert!(parse_dtype("f4").is_err());
    }

    #[test]
    fn integer_labels_decode_every_width_and_order() {
        let header = |text: &str| NpyHeader {
            descr: parse_dtype(text).unwrap(),
            fortran_order: false,
            shape: vec![2],
        };
        assert_eq!(
            npy_integers(&header("<i2"), &[0xff, 0xff, 7, 0]).unwrap(),
            vec![-1, 7]
        );
        assert_eq!(
            npy_integers(&header(">u2"), &[1, 0, 0, 9]).unwrap(),
            vec![256, 9]
        );
        assert_eq!(
            npy_integers(&header("|i1"), &[0x80, 3]).unwrap(),
            vec![-128, 3]
        );
        assert!(npy_integers(&header("<f4"), &[0; 8]).is_err());
    }

    #[test]
    fn npz_shapes_become_channels_first() {
        assert_eq!(npz_example_shape(&[28, 28]), (vec![1, 28, 28], false));
        assert_eq!(npz_example_shape(&[3, 32, 32]), (vec![3, 32, 32], false));
        assert_eq!(npz_example_shape(&[32, 32, 3]), (vec![3, 32, 32], true));
        assert_eq!(npz_example_shape(&[64]), (vec![64], false));
    }

    #[test]
    fn hwc_transpose_moves_each_channel_to_its_plane() {
        // One 1x2 image with 3 channels: pixel 0 = (1, 2, 3), pixel 1 = (4, 5, 6).
        let out = hwc_to_chw(Pixels::U8(vec![1, 2, 3, 4, 5, 6]), &[3, 1, 2]);
        assert_eq!(out, Pixels::U8(vec![1, 4, 2, 5, 3, 6]));
    }

    #[test]
    fn cifar_names_fix_the_record_kind() {
        let kind = |n: &str| cifar_kind_from_name(Path::new(n));
        assert_eq!(kind("x/data_batch_3.bin"), Some(CifarKind::Ten));
        assert_eq!(kind("test_batch.bin"), Some(CifarKind::Ten));
        assert_eq!(kind("train.bin"), Some(CifarKind::Hundred));
        assert_eq!(kind("data_batch_.bin"), None);
        assert_eq!(kind("other.bin"), None);
    }

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
        assert_eq!(data.example(1), vec![0.2, 0.4]);
        let rgb = data.broadcast_channels(3).unwrap();
        assert_eq!(rgb.shape, vec![3, 1, 2]);
        assert_eq!(rgb.example(0), vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
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
        assert_eq!(sub.example(0), vec![2.5]);
        assert_eq!(sub.classes, 3);
        assert!(data
            .subset(&[3], "sub")
            .unwrap_err()
            .to_string()
            .contains("example 3"));
    }
}
