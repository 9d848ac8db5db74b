//! Dataset files for the readers: IDX pairs (raw or gzipped), CIFAR-10/100
//! binary batches, NPZ archives (written here, stored or deflated, zip64 or not)
//! and text label files, each built valid and then damaged in its own structure
//! (headers, dimensions, record sizes, label ranges, .npy header text, zip
//! directory fields, gzip streams) and sometimes byte by byte.

use super::bytewise::{self, Hot};
use super::rng::Rng;
use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::Compression;
use ldam_onnx::train::data::Split;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    Idx,
    Cifar10,
    Cifar100,
    Npz,
    Labels,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Idx,
        Format::Cifar10,
        Format::Cifar100,
        Format::Npz,
        Format::Labels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Idx => "idx",
            Format::Cifar10 => "cifar10",
            Format::Cifar100 => "cifar100",
            Format::Npz => "npz",
            Format::Labels => "labels",
        }
    }
}

/// What a data case reads: `dataset` through `train::data::load`, `labels`
/// through `counts::resolve(Labels(..))` for a model with `classes` classes.
#[derive(Debug, Clone)]
pub struct DataFiles {
    pub dataset: Option<(PathBuf, Split)>,
    pub labels: Option<PathBuf>,
    pub classes: usize,
}

/// Writes the files of one data case into `dir`.
pub fn make(format: Format, dir: &Path, rng: &mut Rng, log: &mut Vec<String>) -> DataFiles {
    let split = if rng.chance(0.7) {
        Split::Train
    } else {
        Split::Test
    };
    let classes = rng.range(1, 12);
    match format {
        Format::Idx => {
            let path = idx(dir, split, rng, log);
            DataFiles {
                dataset: Some((path, split)),
                labels: None,
                classes,
            }
        }
        Format::Cifar10 | Format::Cifar100 => {
            let path = cifar(dir, split, format == Format::Cifar100, rng, log);
            DataFiles {
                dataset: Some((path, split)),
                labels: None,
                classes,
            }
        }
        Format::Npz => {
            let (path, label_classes) = npz(dir, split, rng, log);
            let file = if path.is_dir() {
                path.join(format!("{split}.npz"))
            } else {
                path.clone()
            };
            DataFiles {
                dataset: Some((path, split)),
                labels: rng.chance(0.5).then_some(file),
                classes: if rng.chance(0.8) {
                    label_classes
                } else {
                    classes
                },
            }
        }
        Format::Labels => DataFiles {
            dataset: None,
            labels: Some(labels_text(dir, classes, rng, log)),
            classes,
        },
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes)
        .unwrap_or_else(|e| panic!("harness: writing {}: {e}", path.display()));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("in-memory gzip");
    encoder.finish().expect("in-memory gzip")
}

/// Damages a gzip stream: truncated, a byte changed, or a second member.
fn mutate_gzip(gz: &mut Vec<u8>, rng: &mut Rng, log: &mut Vec<String>) {
    match rng.below(4) {
        0 => {
            let keep = rng.below(gz.len());
            gz.truncate(keep);
            log.push(format!("gzip stream truncated to {keep} bytes"));
        }
        1 => {
            let at = rng.range(10.min(gz.len()), gz.len()).min(gz.len() - 1);
            gz[at] ^= 0x55;
            log.push(format!("gzip byte {at} changed"));
        }
        2 => {
            let copy = gz.clone();
            gz.extend(copy);
            log.push("gzip member repeated".to_string());
        }
        _ => {
            gz.extend(rng.bytes(7));
            log.push("garbage after the gzip member".to_string());
        }
    }
}

fn maybe_bytewise(bytes: &mut Vec<u8>, rng: &mut Rng, p: f64, what: &str, log: &mut Vec<String>) {
    if rng.chance(p) {
        for m in bytewise::mutate(bytes, rng, Hot::ANYWHERE) {
            log.push(format!("{what}: {m}"));
        }
    }
}

// ---------------------------------------------------------------------------
// IDX

fn idx_bytes(ndim: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, ndim];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// One IDX file damaged in its header or body.
fn mutate_idx(bytes: &mut Vec<u8>, ndim: usize, rng: &mut Rng, what: &str, log: &mut Vec<String>) {
    match rng.below(6) {
        0 if bytes.len() >= 4 => {
            let k = rng.below(4);
            let v = *rng.pick(&[0u8, 1, 3, 0x08, 0x09, 0x0d, 0xff]);
            bytes[k] = v;
            log.push(format!("{what}: magic byte {k} = 0x{v:02x}"));
        }
        1 | 2 if bytes.len() >= 4 + 4 * ndim => {
            let d = rng.below(ndim);
            let v = rng.interesting_u32();
            bytes[4 + 4 * d..8 + 4 * d].copy_from_slice(&v.to_be_bytes());
            log.push(format!("{what}: dim {d} = {v}"));
        }
        3 => {
            let keep = rng.below(bytes.len() + 1);
            bytes.truncate(keep);
            log.push(format!("{what}: truncated to {keep} bytes"));
        }
        4 => {
            let extra = rng.range(1, 40);
            bytes.extend(rng.bytes(extra));
            log.push(format!("{what}: {extra} extra bytes"));
        }
        _ => {
            // Labels past any class count.
            let at = rng.range(4 + 4 * ndim, bytes.len().max(4 + 4 * ndim + 1) - 1);
            if at < bytes.len() {
                bytes[at] = 0xff;
            }
            log.push(format!("{what}: byte {at} = 0xff"));
        }
    }
}

fn idx(dir: &Path, split: Split, rng: &mut Rng, log: &mut Vec<String>) -> PathBuf {
    let n = rng.range(1, 6);
    let (rows, cols) = if rng.chance(0.3) {
        (28, 28)
    } else {
        (rng.range(1, 6), rng.range(1, 6))
    };
    let pixels = rng.bytes(n * rows * cols);
    let labels: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
    let mut images = idx_bytes(3, &[n as u32, rows as u32, cols as u32], &pixels);
    let mut label_file = idx_bytes(1, &[n as u32], &labels);
    log.push(format!("idx {n} x {rows} x {cols}"));
    for _ in 0..rng.range(0, 2) {
        if rng.chance(0.6) {
            mutate_idx(&mut images, 3, rng, "images", log);
        } else {
            mutate_idx(&mut label_file, 1, rng, "labels", log);
        }
    }
    maybe_bytewise(&mut images, rng, 0.15, "images", log);
    let (gz_images, gz_labels) = (rng.chance(0.4), rng.chance(0.4));
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let dotted = rng.chance(0.1);
    let name = |kind: &str, dims: &str, gz: bool| {
        let sep = if dotted { "." } else { "-" };
        format!(
            "{prefix}-{kind}{sep}{dims}-ubyte{}",
            if gz { ".gz" } else { "" }
        )
    };
    for (bytes, gz, kind, dims) in [
        (&mut images, gz_images, "images", "idx3"),
        (&mut label_file, gz_labels, "labels", "idx1"),
    ] {
        if gz {
            *bytes = gzip(bytes);
            log.push(format!("{kind} gzipped"));
            if rng.chance(0.25) {
                mutate_gzip(bytes, rng, log);
            }
        }
        if !(kind == "labels" && rng.chance(0.05)) {
            write(&dir.join(name(kind, dims, gz)), bytes);
        } else {
            log.push("labels file missing".to_string());
        }
    }
    if rng.chance(0.05) {
        // Both the raw and the gzipped images: the raw one wins.
        write(&dir.join(name("images", "idx3", !gz_images)), &images);
        log.push("images twice (raw and .gz)".to_string());
    }
    if rng.chance(0.7) {
        dir.to_path_buf()
    } else {
        dir.join(name("images", "idx3", gz_images))
    }
}

// ---------------------------------------------------------------------------
// CIFAR binary

fn cifar(dir: &Path, split: Split, hundred: bool, rng: &mut Rng, log: &mut Vec<String>) -> PathBuf {
    let label_bytes = if hundred { 2 } else { 1 };
    let record = |rng: &mut Rng| {
        let mut r = if hundred {
            vec![rng.below(20) as u8, rng.below(100) as u8]
        } else {
            vec![rng.below(10) as u8]
        };
        // Pixels mostly zero: cheap and still whole records.
        r.resize(label_bytes + 3072, 0);
        r[label_bytes] = rng.next_u64() as u8;
        r
    };
    let names: Vec<String> = match (hundred, split) {
        (false, Split::Train) => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        (false, Split::Test) => vec!["test_batch.bin".into()],
        (true, Split::Train) => vec!["train.bin".into()],
        (true, Split::Test) => vec!["test.bin".into()],
    };
    let folder = if rng.chance(0.2) {
        let sub = dir.join(if hundred {
            "cifar-100-binary"
        } else {
            "cifar-10-batches-bin"
        });
        std::fs::create_dir_all(&sub).expect("harness: temp folder");
        log.push("in the archive's subfolder".to_string());
        sub
    } else {
        dir.to_path_buf()
    };
    let odd_name = rng.chance(0.2);
    let damaged = if rng.chance(0.6) {
        rng.below(names.len())
    } else {
        usize::MAX
    };
    let mut first = None;
    for (k, name) in names.iter().enumerate() {
        if k > 0 && rng.chance(0.05) {
            log.push(format!("{name} missing"));
            continue;
        }
        let records = rng.range(1, 3);
        let mut bytes: Vec<u8> = (0..records).flat_map(|_| record(rng)).collect();
        if k == damaged {
            match rng.below(8) {
                0 => {
                    bytes[0] = *rng.pick(&[10u8, 20, 99, 100, 255]);
                    log.push(format!("{name}: first label byte {}", bytes[0]));
                }
                1 if hundred => {
                    bytes[1] = *rng.pick(&[100u8, 255]);
                    log.push(format!("{name}: fine label {}", bytes[1]));
                }
                2 => {
                    let cut = rng.range(1, 3073);
                    bytes.truncate(bytes.len() - cut);
                    log.push(format!("{name}: {cut} bytes short"));
                }
                3 => {
                    let extra = rng.range(1, 3);
                    bytes.extend(rng.bytes(extra));
                    log.push(format!("{name}: extra bytes"));
                }
                4 => {
                    bytes.clear();
                    log.push(format!("{name}: empty"));
                }
                5 => {
                    let magics: [&[u8]; 3] = [b"PK\x03\x04", &[0, 0, 8, 3], &[0x1f, 0x8b]];
                    let magic = *rng.pick(&magics);
                    bytes[..magic.len()].copy_from_slice(magic);
                    log.push(format!("{name}: starts with magic {magic:02x?}"));
                }
                6 => {
                    bytes = gzip(&bytes);
                    if rng.chance(0.5) {
                        mutate_gzip(&mut bytes, rng, log);
                    }
                    log.push(format!("{name}: gzipped"));
                }
                _ => maybe_bytewise(&mut bytes, rng, 1.0, name, log),
            }
        }
        let file_name = if odd_name && names.len() == 1 {
            "batch.bin".to_string()
        } else {
            name.clone()
        };
        let path = folder.join(&file_name);
        write(&path, &bytes);
        first.get_or_insert(path);
    }
    log.push(format!(
        "cifar-{} {split}",
        if hundred { "100" } else { "10" }
    ));
    match first {
        Some(file) if rng.chance(0.3) || odd_name => file,
        _ => dir.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------
// NPZ: .npy members in a zip archive written here

/// A field of the written archive that the mutator may overwrite.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    at: usize,
    width: usize,
}

struct Member {
    name: String,
    data: Vec<u8>,
    deflate: bool,
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend(v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend(v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend(v.to_le_bytes());
}

/// A zip archive (PKWARE APPNOTE 4.3) of `members`, with the offsets of its
/// header fields.
fn zip(members: &[Member], zip64: bool) -> (Vec<u8>, Vec<Field>) {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut central = Vec::new();
    let mut central_fields = Vec::new();
    for m in members {
        let stored = if m.deflate {
            let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
            e.write_all(&m.data).expect("in-memory deflate");
            e.finish().expect("in-memory deflate")
        } else {
            m.data.clone()
        };
        let mut crc = flate2::Crc::new();
        crc.update(&m.data);
        let crc = crc.sum();
        let method = if m.deflate { 8 } else { 0 };
        let offset = out.len();
        fields.push(Field {
            name: "local.method",
            at: offset + 8,
            width: 2,
        });
        fields.push(Field {
            name: "local.name_len",
            at: offset + 26,
            width: 2,
        });
        fields.push(Field {
            name: "local.extra_len",
            at: offset + 28,
            width: 2,
        });
        out.extend(b"PK\x03\x04");
        put16(&mut out, if zip64 { 45 } else { 20 });
        put16(&mut out, 0);
        put16(&mut out, method);
        put32(&mut out, 0);
        put32(&mut out, crc);
        put32(&mut out, stored.len() as u32);
        put32(&mut out, m.data.len() as u32);
        put16(&mut out, m.name.len() as u16);
        put16(&mut out, 0);
        out.extend(m.name.as_bytes());
        out.extend(&stored);

        let at = central.len();
        for (name, off, width) in [
            ("cd.flags", 8, 2),
            ("cd.method", 10, 2),
            ("cd.crc", 16, 4),
            ("cd.compressed", 20, 4),
            ("cd.uncompressed", 24, 4),
            ("cd.name_len", 28, 2),
            ("cd.extra_len", 30, 2),
            ("cd.comment_len", 32, 2),
            ("cd.local_offset", 42, 4),
        ] {
            central_fields.push(Field {
                name,
                at: at + off,
                width,
            });
        }
        central.extend(b"PK\x01\x02");
        put16(&mut central, 45);
        put16(&mut central, if zip64 { 45 } else { 20 });
        put16(&mut central, 0);
        put16(&mut central, method);
        put32(&mut central, 0);
        put32(&mut central, crc);
        let big = |v: usize| if zip64 { u32::MAX } else { v as u32 };
        put32(&mut central, big(stored.len()));
        put32(&mut central, big(m.data.len()));
        put16(&mut central, m.name.len() as u16);
        put16(&mut central, if zip64 { 28 } else { 0 });
        put16(&mut central, 0);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put32(&mut central, 0);
        put32(&mut central, big(offset));
        central.extend(m.name.as_bytes());
        if zip64 {
            let extra_at = central.len();
            put16(&mut central, 1);
            put16(&mut central, 24);
            put64(&mut central, m.data.len() as u64);
            put64(&mut central, stored.len() as u64);
            put64(&mut central, offset as u64);
            central_fields.push(Field {
                name: "zip64.extra_size",
                at: extra_at + 2,
                width: 2,
            });
            central_fields.push(Field {
                name: "zip64.uncompressed",
                at: extra_at + 4,
                width: 8,
            });
            central_fields.push(Field {
                name: "zip64.compressed",
                at: extra_at + 12,
                width: 8,
            });
            central_fields.push(Field {
                name: "zip64.local_offset",
                at: extra_at + 20,
                width: 8,
            });
        }
    }
    let cd_offset = out.len();
    fields.extend(central_fields.into_iter().map(|f| Field {
        at: f.at + cd_offset,
        ..f
    }));
    out.extend(&central);
    let cd_size = central.len();
    if zip64 {
        let record_at = out.len();
        fields.push(Field {
            name: "zip64.count",
            at: record_at + 32,
            width: 8,
        });
        fields.push(Field {
            name: "zip64.cd_size",
            at: record_at + 40,
            width: 8,
        });
        fields.push(Field {
            name: "zip64.cd_offset",
            at: record_at + 48,
            width: 8,
        });
        out.extend(b"PK\x06\x06");
        put64(&mut out, 44);
        put16(&mut out, 45);
        put16(&mut out, 45);
        put32(&mut out, 0);
        put32(&mut out, 0);
        put64(&mut out, members.len() as u64);
        put64(&mut out, members.len() as u64);
        put64(&mut out, cd_size as u64);
        put64(&mut out, cd_offset as u64);
        fields.push(Field {
            name: "zip64.locator_offset",
            at: out.len() + 8,
            width: 8,
        });
        out.extend(b"PK\x06\x07");
        put32(&mut out, 0);
        put64(&mut out, record_at as u64);
        put32(&mut out, 1);
    }
    let eocd = out.len();
    fields.push(Field {
        name: "eocd.count",
        at: eocd + 10,
        width: 2,
    });
    fields.push(Field {
        name: "eocd.cd_size",
        at: eocd + 12,
        width: 4,
    });
    fields.push(Field {
        name: "eocd.cd_offset",
        at: eocd + 16,
        width: 4,
    });
    fields.push(Field {
        name: "eocd.comment_len",
        at: eocd + 20,
        width: 2,
    });
    out.extend(b"PK\x05\x06");
    put16(&mut out, 0);
    put16(&mut out, 0);
    let small = |v: usize, max: u64| if zip64 { max } else { v as u64 };
    put16(&mut out, small(members.len(), 0xffff) as u16);
    put16(&mut out, small(members.len(), 0xffff) as u16);
    put32(&mut out, small(cd_size, 0xffff_ffff) as u32);
    put32(&mut out, small(cd_offset, 0xffff_ffff) as u32);
    put16(&mut out, 0);
    (out, fields)
}

/// An .npy file: magic, version, little-endian header length, the header dict
/// padded to a multiple of 64 bytes, then `data`.
fn npy(header: &str, data: &[u8], version: u8) -> Vec<u8> {
    let len_bytes = if version == 1 { 2 } else { 4 };
    let unpadded = 6 + 2 + len_bytes + header.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let text = format!("{header}{}\n", " ".repeat(pad));
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([version, 0]);
    if version == 1 {
        out.extend((text.len() as u16).to_le_bytes());
    } else {
        out.extend((text.len() as u32).to_le_bytes());
    }
    out.extend(text.as_bytes());
    out.extend_from_slice(data);
    out
}

fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn dict(descr: &str, fortran: bool, shape: &str) -> String {
    format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    )
}

/// The header dict text damaged the ways a hand-written or foreign .npy can be.
fn mutate_header(text: &mut String, rng: &mut Rng) -> String {
    let shapes = [
        "(18446744073709551615,)",
        "(4294967296, 4294967296, 4294967296)",
        "(9223372036854775807, 2)",
        "(-1,)",
        "()",
        "(3,",
        "(0, 28, 28)",
        "(2, 0)",
        "(1, 1, 1, 1, 1, 1, 1, 1)",
        "[2, 3]",
        "(2L, 3L)",
    ];
    let descrs = [
        "<U10", "<f8", "|b1", "<c8", ">i8", "<i2", "|u1", "<f2", "u1", "", "<f4'", "|O",
    ];
    match rng.below(6) {
        0 => {
            let shape = *rng.pick(&shapes);
            if let Some(at) = text.find("'shape': ") {
                let end = text[at..].find(')').map_or(text.len(), |e| at + e + 1);
                text.replace_range(at + 9..end, shape);
            }
            format!("shape {shape}")
        }
        1 => {
            let descr = *rng.pick(&descrs);
            if let Some(at) = text.find("'descr': '") {
                let start = at + 10;
                let end = text[start..].find('\'').map_or(text.len(), |e| start + e);
                text.replace_range(start..end, descr);
            }
            format!("descr '{descr}'")
        }
        2 => {
            let key = *rng.pick(&["'descr'", "'shape'", "'fortran_order'"]);
            *text = text.replacen(key, "'other'", 1);
            format!("key {key} renamed")
        }
        3 => {
            *text = text.replace("False", "True");
            "fortran_order True".to_string()
        }
        4 => {
            *text =
                "{'descr': [('a', '<f4'), ('b', '<i8')], 'fortran_order': False, 'shape': (2,), }"
                    .to_string();
            "structured dtype".to_string()
        }
        _ => {
            let cut = rng.below(text.len());
            text.truncate(cut);
            format!("header text cut at {cut}")
        }
    }
}

/// Writes `{split}.npz`; returns the path to read and the number of classes its labels cover.
fn npz(dir: &Path, split: Split, rng: &mut Rng, log: &mut Vec<String>) -> (PathBuf, usize) {
    let n = rng.range(1, 5);
    let example: Vec<usize> = match rng.below(5) {
        0 => vec![28, 28],
        1 => vec![rng.range(1, 4), rng.range(1, 4)],
        2 => vec![3, 2, 2],
        3 => vec![2, 2, 3],
        _ => vec![rng.range(1, 8)],
    };
    let (x_descr, x_size) =
        *rng.pick(&[("|u1", 1), ("<f4", 4), (">f4", 4), ("<f8", 8), ("<i4", 4)]);
    let (y_descr, y_size) = *rng.pick(&[
        ("<i8", 8),
        ("<i4", 4),
        ("|u1", 1),
        (">u2", 2),
        ("<f4", 4),
        ("|i1", 1),
    ]);
    let x_shape: Vec<usize> = std::iter::once(n).chain(example.iter().copied()).collect();
    let x_len: usize = x_shape.iter().product::<usize>() * x_size;
    let mut x_data = rng.bytes(x_len);
    if x_descr.contains('f') {
        // Finite floats keep the bytes meaningful.
        for chunk in x_data.chunks_exact_mut(x_size) {
            chunk.fill(0);
            chunk[if x_descr.starts_with('>') {
                0
            } else {
                x_size - 1
            }] = 0x3f;
        }
    }
    let label_classes = rng.range(1, n);
    let mut y_data = Vec::new();
    for i in 0..n {
        let label = (i % label_classes) as u64;
        let bytes = label.to_le_bytes();
        if y_descr.starts_with('>') {
            y_data.extend(bytes[..y_size].iter().rev());
        } else {
            y_data.extend(&bytes[..y_size]);
        }
    }
    let y_shape = if rng.chance(0.1) { vec![n, 1] } else { vec![n] };
    let mut x_header = dict(x_descr, false, &shape_text(&x_shape));
    let mut y_header = dict(y_descr, false, &shape_text(&y_shape));
    log.push(format!(
        "npz x {x_descr} {x_shape:?}, y {y_descr} {y_shape:?}"
    ));
    if rng.chance(0.35) {
        let what = if rng.chance(0.6) {
            format!("x header {}", mutate_header(&mut x_header, rng))
        } else {
            format!("y header {}", mutate_header(&mut y_header, rng))
        };
        log.push(what);
    }
    let version = *rng.pick(&[1u8, 1, 1, 2, 3]);
    let mut x_npy = npy(&x_header, &x_data, version);
    let mut y_npy = npy(&y_header, &y_data, version);
    match rng.below(10) {
        0 => {
            let cut = rng.range(1, x_npy.len() - 1);
            x_npy.truncate(cut);
            log.push(format!("x.npy cut to {cut} bytes"));
        }
        1 => {
            y_npy.extend(rng.bytes(3));
            log.push("y.npy 3 bytes long".to_string());
        }
        2 => {
            x_npy[6] = *rng.pick(&[0u8, 4, 255]);
            log.push(format!(".npy version {}", x_npy[6]));
        }
        3 => {
            let v = rng.interesting_u32();
            if version == 1 {
                x_npy[8..10].copy_from_slice(&(v as u16).to_le_bytes());
            } else {
                x_npy[8..12].copy_from_slice(&v.to_le_bytes());
            }
            log.push(format!(".npy header length {v}"));
        }
        4 => {
            x_npy[0] = b'X';
            log.push("x.npy magic broken".to_string());
        }
        _ => {}
    }
    let (x_key, y_key) = if rng.chance(0.2) {
        (format!("x_{split}"), format!("y_{split}"))
    } else {
        ("x".to_string(), "y".to_string())
    };
    let deflate = rng.chance(0.5);
    let mut members = vec![
        Member {
            name: format!("{x_key}.npy"),
            data: x_npy,
            deflate,
        },
        Member {
            name: format!("{y_key}.npy"),
            data: y_npy,
            deflate,
        },
    ];
    match rng.below(12) {
        0 => {
            members.pop();
            log.push("no y member".to_string());
        }
        1 => {
            members.swap(0, 1);
            log.push("members swapped".to_string());
        }
        2 => {
            members[0].name = "x".to_string();
            log.push("member named without .npy".to_string());
        }
        _ => {}
    }
    let zip64 = rng.chance(0.3);
    let (mut bytes, fields) = zip(&members, zip64);
    log.push(format!(
        "zip {}{}",
        if deflate { "deflate" } else { "stored" },
        if zip64 { ", zip64" } else { "" }
    ));
    if rng.chance(0.45) {
        for _ in 0..rng.range(1, 2) {
            let f = *rng.pick(&fields);
            let value: u64 = match f.width {
                2 => *rng.pick(&[0u64, 1, 8, 12, 99, 0xffff]),
                4 => u64::from(rng.interesting_u32()),
                _ => rng.interesting_i64() as u64,
            };
            bytes[f.at..f.at + f.width].copy_from_slice(&value.to_le_bytes()[..f.width]);
            log.push(format!("zip field {} = {value}", f.name));
        }
    }
    match rng.below(14) {
        0 => {
            bytes.truncate(bytes.len() - rng.range(1, 30).min(bytes.len()));
            log.push("zip truncated at the end".to_string());
        }
        1 => {
            bytes.extend(b"trailing comment");
            log.push("bytes after the end record".to_string());
        }
        _ => {}
    }
    maybe_bytewise(&mut bytes, rng, 0.1, "npz", log);
    let name = format!("{split}.npz");
    write(&dir.join(&name), &bytes);
    let path = if rng.chance(0.3) {
        dir.to_path_buf()
    } else {
        dir.join(name)
    };
    (path, label_classes)
}

// ---------------------------------------------------------------------------
// Text labels

fn labels_text(dir: &Path, classes: usize, rng: &mut Rng, log: &mut Vec<String>) -> PathBuf {
    let count = if rng.chance(0.1) {
        0
    } else {
        rng.range(classes, classes + 8)
    };
    let mut lines: Vec<String> = (0..count).map(|i| (i % classes).to_string()).collect();
    for _ in 0..rng.range(0, 2) {
        let line = rng
            .pick(&[
                "-1",
                "9223372036854775807",
                "99999999999999999999",
                "1.5",
                "# a comment",
                "",
                "  3  ",
                "0x10",
                "1e3",
            ])
            .to_string();
        log.push(format!("label line '{line}'"));
        let at = rng.below(lines.len() + 1);
        lines.insert(at, line);
    }
    let mut bytes = lines.join("\n").into_bytes();
    if rng.chance(0.1) {
        bytes.extend([0xff, 0xfe]);
        log.push("invalid UTF-8".to_string());
    }
    if rng.chance(0.1) {
        bytes.splice(0..0, b"PK".iter().copied());
        log.push("starts with PK".to_string());
    }
    let path = dir.join("labels.txt");
    write(&path, &bytes);
    path
}
