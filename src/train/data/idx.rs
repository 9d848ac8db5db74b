//! IDX (<http://yann.lecun.com/exdb/mnist/>): magic 0x0000 08 0D, then D big-endian
//! u32 dimensions, then the bytes in row-major order. MNIST and Fashion-MNIST
//! ship as a pair: an images file (D = 3) and a labels file (D = 1).

use crate::error::{Error, Result};
use crate::train::data::content::Content;
use crate::train::data::dataset::{checked_product, Dataset, Pixels};
use std::path::{Path, PathBuf};

/// IDX magic: two zero bytes, element type 0x08 (unsigned byte), dimensions.
pub(super) const IDX_IMAGES_MAGIC: [u8; 4] = [0, 0, 0x08, 3];
pub(super) const IDX_LABELS_MAGIC: [u8; 4] = [0, 0, 0x08, 1];

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

pub(super) fn read_idx_pair(images: &Path, labels: &Path) -> Result<Dataset> {
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

/// `train-images-idx3-ubyte.gz` -> `train-labels-idx1-ubyte[.gz]` in the same folder.
pub(super) fn idx_labels_next_to(images: &Path) -> Result<PathBuf> {
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
