//! CIFAR binary (<https://www.cs.toronto.edu/~kriz/cifar.html>): records of label
//! byte(s) then 3072 pixels, 1024 red, 1024 green, 1024 blue, each row-major 32x32:
//! already channel-height-width.

use crate::error::{Error, Result};
use crate::npz::ZIP_MAGIC;
use crate::train::data::content::Content;
use crate::train::data::dataset::{Dataset, Pixels};
use std::path::{Path, PathBuf};

const CIFAR_PIXELS: usize = 3 * 32 * 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CifarKind {
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
pub(super) fn cifar_kind_from_name(path: &Path) -> Option<CifarKind> {
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
pub(super) fn read_cifar_files(files: &[PathBuf], kind: Option<CifarKind>) -> Result<Dataset> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar_names_fix_the_record_kind() {
        let kind = |n: &str| cifar_kind_from_name(Path::new(n));
        assert_eq!(kind("x/data_batch_3.bin"), Some(CifarKind::Ten));
        assert_eq!(kind("test_batch.bin"), Some(CifarKind::Ten));
        assert_eq!(kind("train.bin"), Some(CifarKind::Hundred));
        assert_eq!(kind("data_batch_.bin"), None);
        assert_eq!(kind("other.bin"), None);
    }
}
