//! List files as ImageNet-LT, Places-LT and iNaturalist 2018 publish them: one
//! `relative/path.jpg label` per line (the label after the last run of
//! whitespace, so paths may hold spaces), blank lines ignored. Examples keep the
//! list's order; paths are resolved against an image root, or else the list's
//! folder.

use super::{check_files, ImageFiles};
use crate::error::{Error, Result};
use crate::train::data::dataset::{Dataset, Pixels};
use std::path::Path;

/// Whether `path` names a list file (a `.txt` extension, any case).
pub(in crate::train::data) fn is_list(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

/// The largest number of classes a list's labels may reach, and where it comes
/// from (for the message of a label beyond it).
pub(in crate::train::data) struct ClassLimit {
    pub classes: usize,
    pub from: String,
}

/// Reads the list at `list`; `root` resolves its paths (default: its folder).
pub(in crate::train::data) fn read_list(
    list: &Path,
    root: Option<&Path>,
    limit: Option<&ClassLimit>,
    skip_bad: bool,
) -> Result<Dataset> {
    let bytes = std::fs::read(list).map_err(|e| Error::io(list, e))?;
    let root = root.unwrap_or_else(|| list.parent().unwrap_or(Path::new(".")));
    let at =
        |line: usize, what: String| Error::config(format!("{}:{line}: {what}", list.display()));
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        let text = std::str::from_utf8(raw)
            .map_err(|_| at(number, "not UTF-8 text".into()))?
            .trim();
        if text.is_empty() {
            continue;
        }
        let (relative, label) = text
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| at(number, format!("'{text}': expected 'relative/path label'")))?;
        let relative = relative.trim_end();
        let label: i64 = label
            .parse()
            .ok()
            .filter(|&l: &i64| l >= 0)
            .ok_or_else(|| {
                at(
                    number,
                    format!("label '{label}' is not a non-negative integer"),
                )
            })?;
        if let Some(limit) = limit {
            if label as u64 >= limit.classes as u64 {
                return Err(at(
                    number,
                    format!(
                        "label {label} is outside 0..{} ({} classes {})",
                        limit.classes, limit.classes, limit.from
                    ),
                ));
            }
        }
        let path = root.join(relative);
        if !path.is_file() {
            return Err(at(number, format!("{}: no such file", path.display())));
        }
        paths.push(path);
        labels.push(label);
        lines.push(number);
    }
    let source = format!("image list {}", list.display());
    if paths.is_empty() {
        return Err(Error::config(format!("{source}: lists no image")));
    }
    let classes = match limit {
        Some(limit) => limit.classes,
        None => labels.iter().copied().max().map_or(0, |m| m as usize + 1),
    };
    let describe = |i: usize| format!(" (line {} of {})", lines[i], list.display());
    let checked = check_files(paths, labels, skip_bad, describe, &source)?;
    let (height, width) = checked.first;
    let files = ImageFiles::new(checked.paths, [3, height, width]);
    let mut dataset = Dataset::new(
        Pixels::Files(files),
        vec![3, height, width],
        checked.labels,
        classes,
        source,
    )?;
    dataset.skipped_images = checked.skipped;
    Ok(dataset)
}
