//! Class names: a file of one name per line, the `categories` of an
//! iNaturalist-style JSON annotation file (`{"id": 3, "name": "..."}` entries),
//! and the standard names of Fashion-MNIST and CIFAR-10 (or the CIFAR
//! archives' own `batches.meta.txt` / `fine_label_names.txt`).

use crate::error::{Error, Result};
use std::path::Path;

pub const FASHION_MNIST_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

pub const CIFAR10_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Reads class names from `path`: JSON (by extension) with `categories`, else
/// one name per line (surrounding blanks trimmed, trailing empty lines ignored).
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let json = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json {
        return json_categories(path, &bytes);
    }
    let mut names = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::config(format!("{}:{}: not UTF-8 text", path.display(), i + 1)))?;
        names.push(text.trim().to_string());
    }
    while names.last().is_some_and(String::is_empty) {
        names.pop();
    }
    if let Some(i) = names.iter().position(String::is_empty) {
        return Err(Error::config(format!(
            "{}:{}: empty class name",
            path.display(),
            i + 1
        )));
    }
    if names.is_empty() {
        return Err(Error::config(format!("{}: no class names", path.display())));
    }
    Ok(names)
}

/// `categories: [{id, name}, ...]` with ids `0..n` in any order.
fn json_categories(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let bad = |why: String| Error::config(format!("{}: {why}", path.display()));
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
    let categories = value
        .get("categories")
        .and_then(|c| c.as_array())
        .ok_or_else(|| {
            bad("no 'categories' array (expected iNaturalist's annotation format)".into())
        })?;
    let mut names = vec![None; categories.len()];
    for (i, category) in categories.iter().enumerate() {
        let id = category.get("id").and_then(|v| v.as_u64());
        let name = category.get("name").and_then(|v| v.as_str());
        let (Some(id), Some(name)) = (id, name) else {
            return Err(bad(format!(
                "categories[{i}] lacks an integer 'id' or a string 'name'"
            )));
        };
        let slot = usize::try_from(id)
            .ok()
            .and_then(|id| names.get_mut(id))
            .ok_or_else(|| {
                bad(format!(
                    "categories[{i}] has id {id}, outside 0..{}",
                    categories.len()
                ))
            })?;
        if slot.is_some() {
            return Err(bad(format!("categories[{i}] repeats id {id}")));
        }
        *slot = Some(name.to_string());
    }
    Ok(names.into_iter().flatten().collect())
}

/// The standard names of a dataset read from `path` whose description is
/// `source`, where the format tells them: CIFAR's own names file beside the
/// batches, CIFAR-10's names, Fashion-MNIST's for IDX files under a path that
/// says "fashion".
pub(super) fn default_names(path: &Path, source: &str, classes: usize) -> Option<Vec<String>> {
    let dir = if path.is_dir() { path } else { path.parent()? };
    let beside = |name: &str| -> Option<Vec<String>> {
        [
            dir.join(name),
            dir.join("cifar-10-batches-bin").join(name),
            dir.join("cifar-100-binary").join(name),
        ]
        .iter()
        .find(|p| p.is_file())
        .and_then(|p| read_class_names(p).ok())
    };
    let names = if source.starts_with("CIFAR-100") {
        beside("fine_label_names.txt")?
    } else if source.starts_with("CIFAR-10") {
        beside("batches.meta.txt").unwrap_or_else(|| CIFAR10_NAMES.map(String::from).to_vec())
    } else if source.starts_with("IDX") && path.to_string_lossy().to_lowercase().contains("fashion")
    {
        FASHION_MNIST_NAMES.map(String::from).to_vec()
    } else {
        return None;
    };
    (names.len() >= classes).then_some(names)
}
