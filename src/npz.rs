//! NPZ archives (`numpy.savez` / `numpy.savez_compressed`): a zip of .npy arrays,
//! read by name. The one reader of them: the labels behind the setting `labels_file` and
//! the NPZ datasets of `train::data` both go through [`Npz`]. It sits in this
//! layer, the lowest that reads an NPZ, so that `counts` need not import `train`.
//!
//! Read here rather than with ndarray-npy because (a) its zip support is built
//! without deflate, so savez_compressed files would not open, and (b) it
//! allocates the size an .npy header claims before reading a byte of data.
//! Every error names the file, and the array once one is being read.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A zip member's local header signature: how an NPZ file starts.
pub(crate) const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";

/// Deflate can reach 1032:1, but image and label files compress by far less: up
/// front, readers reserve at most this ratio times the compressed size.
pub(crate) const PLAUSIBLE_DEFLATE_RATIO: u64 = 8;

/// An open NPZ archive: its file and the members its central directory lists.
pub(crate) struct Npz<'p> {
    path: &'p Path,
    file: File,
    entries: Vec<ZipEntry>,
}

impl<'p> Npz<'p> {
    /// Opens `path` and reads its central directory (no array data yet).
    pub(crate) fn open(path: &'p Path) -> Result<Npz<'p>> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let entries = zip_entries(&mut file, path)?;
        Ok(Npz {
            path,
            file,
            entries,
        })
    }

    /// Whether the archive holds array `key`.
    pub(crate) fn contains(&self, key: &str) -> bool {
        member(&self.entries, key).is_some()
    }

    /// "no array 'key'", with the members the archive does hold and `hint`
    /// (what the caller needs, or empty) after them.
    pub(crate) fn missing(&self, key: &str, hint: &str) -> Error {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        Error::config(format!(
            "{}: no array '{key}' in the archive (it has: {}){hint}",
            self.path.display(),
            names.join(", ")
        ))
    }

    /// Array `key`: its header and exactly the data bytes the header declares.
    pub(crate) fn read(&mut self, key: &str) -> Result<(NpyHeader, Vec<u8>)> {
        let Some(entry) = member(&self.entries, key) else {
            return Err(self.missing(key, ""));
        };
        read_npy_member(&mut self.file, self.path, entry, key)
    }
}

/// The member holding array `key`: `key.npy` as numpy names it, or `key` itself.
fn member<'e>(entries: &'e [ZipEntry], key: &str) -> Option<&'e ZipEntry> {
    entries
        .iter()
        .find(|e| e.name == format!("{key}.npy") || e.name == key)
}

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
pub(crate) struct NpyHeader {
    pub(crate) descr: Dtype,
    pub(crate) fortran_order: bool,
    pub(crate) shape: Vec<usize>,
}

/// A simple numpy dtype such as `<f4`, `|u1`, `>i8`.
pub(crate) struct Dtype {
    pub(crate) text: String,
    pub(crate) big_endian: bool,
    /// `b'u'`, `b'i'`, `b'f'`, ...
    pub(crate) kind: u8,
    pub(crate) size: usize,
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
    if !local.starts_with(&ZIP_MAGIC) {
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
pub(crate) fn npy_integers(
    header: &NpyHeader,
    bytes: &[u8],
) -> std::result::Result<Vec<i64>, String> {
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
}
