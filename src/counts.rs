//! Class counts from one of three settings: a list, a file of counts, or the
//! training labels themselves.

use crate::error::{Error, Result};
use crate::npz::{npy_integers, Npz};
use std::path::{Path, PathBuf};

/// Where the class counts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountsSource {
    /// `class_counts`: `5000,2997,...`
    List(String),
    /// `class_counts_file`: a file of one integer per line, or a JSON array.
    File(PathBuf),
    /// `labels_file`: a file of training labels, one integer per line, or an NPZ with key `y`.
    Labels(PathBuf),
}

impl CountsSource {
    /// The setting that gives the counts this way.
    fn setting(&self) -> &'static str {
        match self {
            CountsSource::List(_) => "class_counts",
            CountsSource::File(_) => "class_counts_file",
            CountsSource::Labels(_) => "labels_file",
        }
    }
}

/// Reads the counts for a model with `classes` classes.
pub fn resolve(source: &CountsSource, classes: usize) -> Result<Vec<u64>> {
    let counts = match source {
        CountsSource::List(text) => {
            parse_list(text).map_err(|e| Error::in_setting(source.setting(), e))?
        }
        CountsSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            if text.trim_start().starts_with('[') {
                let values: Vec<i64> = serde_json::from_str(&text).map_err(|e| {
                    Error::config(format!(
                        "{}: not a JSON array of integers: {e}",
                        path.display()
                    ))
                })?;
                non_negative(&values).map_err(|e| in_file(path, e))?
            } else {
                let values = integer_lines(&text, path)?;
                non_negative(&values).map_err(|e| in_file(path, e))?
            }
        }
        CountsSource::Labels(path) => count_labels(&read_labels(path)?, classes, path)?,
    };
    if counts.len() != classes {
        return Err(Error::setting(
            source.setting(),
            format!(
                "gives {} class counts, but the model's logits have {classes} classes",
                counts.len()
            ),
        ));
    }
    crate::ldam::check_counts(&counts).map_err(|e| Error::in_setting(source.setting(), e))?;
    Ok(counts)
}

/// `cause` prefixed with the file it was found in.
fn in_file(path: &Path, cause: Error) -> Error {
    Error::config(format!("{}: {cause}", path.display()))
}

fn parse_list(text: &str) -> Result<Vec<u64>> {
    let values = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| Error::config(format!("'{s}' is not an integer")))
        })
        .collect::<Result<Vec<i64>>>()?;
    non_negative(&values)
}

fn non_negative(values: &[i64]) -> Result<Vec<u64>> {
    values
        .iter()
        .enumerate()
        .map(|(class, &n)| {
            u64::try_from(n)
                .map_err(|_| Error::config(format!("class {class} has a negative count ({n})")))
        })
        .collect()
}

fn integer_lines(text: &str, path: &Path) -> Result<Vec<i64>> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| {
            line.parse::<i64>().map_err(|_| {
                Error::config(format!(
                    "{}:{number}: '{line}' is not an integer",
                    path.display()
                ))
            })
        })
        .collect()
}

/// Training labels from a text file (one per line) or an NPZ archive with key `y`.
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(b"PK") {
        return read_npz_labels(path);
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::config(format!(
            "{}: neither an NPZ archive nor a text file of labels",
            path.display()
        ))
    })?;
    integer_lines(&text, path)
}

/// Array `y` of an NPZ archive (`numpy.savez` or `savez_compressed`), through
/// the one NPZ reader, which the datasets use too.
fn read_npz_labels(path: &Path) -> Result<Vec<i64>> {
    let (header, bytes) = Npz::open(path)?.read("y")?;
    npy_integers(&header, &bytes)
        .map_err(|why| Error::config(format!("{}: array 'y': {why}", path.display())))
}

fn count_labels(labels: &[i64], classes: usize, path: &Path) -> Result<Vec<u64>> {
    // Every class needs an example (a zero count has no margin), so the labels
    // must outnumber the classes; checked before one counter per class is
    // allocated, since the class count comes from the model's declared logits.
    if classes > labels.len() {
        return Err(Error::config(format!(
            "{}: {} labels cannot give each of the model's {classes} classes (the logits' \
             declared size) an example",
            path.display(),
            labels.len()
        )));
    }
    let mut counts = vec![0u64; classes];
    for (i, &label) in labels.iter().enumerate() {
        let slot = usize::try_from(label)
            .ok()
            .and_then(|l| counts.get_mut(l))
            .ok_or_else(|| {
                Error::config(format!(
                    "{}: label {label} at position {i} is outside the model's {classes} classes",
                    path.display()
                ))
            })?;
        *slot += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parses_and_checks_length() {
        let source = CountsSource::List("5, 3,2".into());
        assert_eq!(resolve(&source, 3).unwrap(), vec![5, 3, 2]);
        let err = resolve(&source, 4).unwrap_err().to_string();
        assert!(
            err.contains("gives 3 class counts") && err.contains("4 classes"),
            "{err}"
        );
    }

    #[test]
    fn zero_and_negative_counts_are_rejected() {
        let zero = resolve(&CountsSource::List("5,0".into()), 2)
            .unwrap_err()
            .to_string();
        assert!(zero.contains("class 1 has a count of 0"), "{zero}");
        let negative = resolve(&CountsSource::List("5,-1".into()), 2)
            .unwrap_err()
            .to_string();
        assert!(negative.contains("negative"), "{negative}");
    }

    #[test]
    fn labels_are_counted_per_class() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.txt");
        std::fs::write(&path, "0\n2\n2\n1\n2\n").unwrap();
        assert_eq!(
            resolve(&CountsSource::Labels(path.clone()), 3).unwrap(),
            vec![1, 1, 3]
        );
        let err = resolve(&CountsSource::Labels(path), 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 2 at position 1"), "{err}");
    }

    #[test]
    fn counts_file_accepts_json_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("c.json");
        std::fs::write(&json, "[7, 4]").unwrap();
        assert_eq!(resolve(&CountsSource::File(json), 2).unwrap(), vec![7, 4]);
        let lines = dir.path().join("c.txt");
        std::fs::write(&lines, "7\n\n4\n").unwrap();
        assert_eq!(resolve(&CountsSource::File(lines), 2).unwrap(), vec![7, 4]);
    }
}
