//! The dataset readers (IDX, CIFAR-10/100 binary, NPZ) and long-tailed subsets,
//! on small files written here in the standard formats (LDAM-DRW.md §4, §6), plus
//! the real Fashion-MNIST files from the Debian package, and NPZ label files for
//! `--labels-file`, read by the same NPZ reader.

use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::Compression;
use ldam_onnx::contract::PatchRecord;
use ldam_onnx::counts::{resolve, CountsSource};
use ldam_onnx::train::data::{load, Dataset, Pixels, Split};
use ldam_onnx::train::longtail::{class_counts, long_tail_counts, subsample, Profile};
use ndarray::{Array1, Array2, Array3, Array4};
use ndarray_npy::NpzWriter;
use std::io::Write;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// Writers for the formats

/// An unsigned-byte IDX file: magic 0x000008 + ndim, big-endian dims, data.
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// `n` 3x4 grey images whose pixel p of image i is `(7 * i + p) % 256`, labels `i % 3`.
fn idx_images(n: usize) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * 12)
        .map(|k| ((7 * (k / 12) + k % 12) % 256) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    (
        idx_bytes(&[n as u32, 3, 4], &pixels),
        idx_bytes(&[n as u32], &labels),
    )
}

fn write_idx_pair(dir: &Path, prefix: &str, n: usize, gz: bool) {
    let (images, labels) = idx_images(n);
    let (images, labels, ext) = if gz {
        (gzip(&images), gzip(&labels), ".gz")
    } else {
        (images, labels, "")
    };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labels).unwrap();
}

/// CIFAR records: label byte(s), then 3072 pixels whose first four bytes hold the
/// record's global number (little-endian) so a subset can be traced back.
fn cifar_records(labels: &[(u8, u8)], first_id: u32, hundred: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, &(coarse, fine)) in labels.iter().enumerate() {
        if hundred {
            out.extend([coarse, fine]);
        } else {
            out.push(fine);
        }
        let mut pixels = vec![(k % 251) as u8; 3072];
        pixels[..4].copy_from_slice(&(first_id + k as u32).to_le_bytes());
        pixels[1024] = 100; // first green pixel
        pixels[3071] = 200; // last blue pixel
        out.extend(pixels);
    }
    out
}

/// A CIFAR-10 folder: `per_batch(b)` labels for each of the five training batches,
/// and `test` labels for `test_batch.bin`.
fn write_cifar10(dir: &Path, per_batch: impl Fn(usize) -> Vec<u8>, test: &[u8]) {
    let mut id = 0u32;
    for b in 1..=5 {
        let labels: Vec<(u8, u8)> = per_batch(b).into_iter().map(|l| (0, l)).collect();
        let bytes = cifar_records(&labels, id, false);
        id += labels.len() as u32;
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    let labels: Vec<(u8, u8)> = test.iter().map(|&l| (0, l)).collect();
    std::fs::write(
        dir.join("test_batch.bin"),
        cifar_records(&labels, 1 << 20, false),
    )
    .unwrap();
}

/// An .npy file in memory, as numpy writes version 1.0 (header padded to 64 bytes).
fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A zip archive written by hand as `numpy.savez[_compressed]` does with Python's
/// zipfile (`force_zip64=True`): local headers with 0xffffffff sizes and a zip64
/// extra field, plain central directory records.
fn numpy_style_zip(members: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let stored = if deflate {
            let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            data.clone()
        };
        let method: u16 = if deflate { 8 } else { 0 };
        let offset = out.len() as u32;
        out.extend(b"PK\x03\x04");
        out.extend(45u16.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(method.to_le_bytes());
        out.extend([0u8; 4]); // time, date
        out.extend(crc.sum().to_le_bytes());
        out.extend(0xffff_ffffu32.to_le_bytes());
        out.extend(0xffff_ffffu32.to_le_bytes());
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(20u16.to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(1u16.to_le_bytes());
        out.extend(16u16.to_le_bytes());
        out.extend((data.len() as u64).to_le_bytes());
        out.extend((stored.len() as u64).to_le_bytes());
        out.extend(&stored);

        central.extend(b"PK\x01\x02");
        central.extend(45u16.to_le_bytes());
        central.extend(45u16.to_le_bytes());
        central.extend(0u16.to_le_bytes());
        central.extend(method.to_le_bytes());
        central.extend([0u8; 4]);
        central.extend(crc.sum().to_le_bytes());
        central.extend((stored.len() as u32).to_le_bytes());
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((name.len() as u16).to_le_bytes());
        central.extend([0u8; 4]); // extra, comment lengths
        central.extend([0u8; 8]); // disk, internal and external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fn message(result: ldam_onnx::Result<Dataset>) -> String {
    let err = result.expect_err("reading should fail").to_string();
    assert!(!err.contains('\n'), "error should be one line: {err}");
    err
}

fn u8_pixels(data: &Dataset) -> &[u8] {
    match &data.images {
        Pixels::U8(v) => v,
        other => panic!("expected u8 pixels, got {other:?}: {data:?}"),
    }
}

// ---------------------------------------------------------------------------
// IDX

#[test]
fn idx_folder_reads_both_splits_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 5, false);
    write_idx_pair(dir.path(), "t10k", 2, false);
    let train = load(dir.path(), Split::Train).unwrap();
    let (images, labels) = idx_images(5);
    assert_eq!(train.len(), 5);
    assert_eq!(train.shape, vec![1, 3, 4]);
    assert_eq!(train.classes, 3);
    assert_eq!(u8_pixels(&train), &images[16..]);
    assert_eq!(
        train.labels,
        labels[8..]
            .iter()
            .map(|&l| i64::from(l))
            .collect::<Vec<_>>()
    );
    // Example 1's pixels are 7..19, scaled to [0, 1].
    let expected: Vec<f32> = (7..19).map(|p| p as f32 / 255.0).collect();
    assert_eq!(train.example(1).unwrap(), expected);
    assert!(
        train.source.contains("train-images-idx3-ubyte"),
        "{}",
        train.source
    );

    let test = load(dir.path(), Split::Test).unwrap();
    assert_eq!(test.len(), 2);
    assert!(
        test.source.contains("t10k-images-idx3-ubyte"),
        "{}",
        test.source
    );
}

#[test]
fn idx_gzipped_reads_the_same_as_raw() {
    let raw = tempfile::tempdir().unwrap();
    let gz = tempfile::tempdir().unwrap();
    write_idx_pair(raw.path(), "train", 7, false);
    write_idx_pair(gz.path(), "train", 7, true);
    let from_raw = load(raw.path(), Split::Train).unwrap();
    let from_gz = load(gz.path(), Split::Train).unwrap();
    assert_eq!(from_raw.images, from_gz.images);
    assert_eq!(from_raw.labels, from_gz.labels);
    // A file path finds its labels next to it; gzip is told by content, not name.
    let images = gz.path().join("train-images-idx3-ubyte.gz");
    assert_eq!(load(&images, Split::Test).unwrap().labels, from_raw.labels);
    let renamed = gz.path().join("train-images-idx3-ubyte");
    std::fs::rename(&images, &renamed).unwrap();
    assert_eq!(
        load(&renamed, Split::Train).unwrap().images,
        from_raw.images
    );
}

#[test]
fn idx_header_claiming_more_images_than_bytes_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 4, false);
    // The header says a billion images; the file holds four.
    let images = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&images).unwrap();
    bytes[4..8].copy_from_slice(&1_000_000_000u32.to_be_bytes());
    std::fs::write(&images, bytes).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
    assert!(err.contains("only 48 bytes follow"), "{err}");
}

#[test]
fn idx_with_bytes_beyond_its_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 4, false);
    let labels = dir.path().join("train-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes.push(1);
    std::fs::write(&labels, bytes).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(
        err.contains("train-labels-idx1-ubyte") && err.contains("more bytes"),
        "{err}"
    );
}

#[test]
fn idx_wrong_magic_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 4, false);
    let images = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&images).unwrap();
    bytes[2] = 0x0d; // float32 elements
    std::fs::write(&images, &bytes).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    assert!(
        err.contains("element type 0x0d") && err.contains("0x00000803"),
        "{err}"
    );
    bytes[..4].copy_from_slice(b"JUNK");
    std::fs::write(&images, &bytes).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("not an IDX file"),
        "{err}"
    );
}

#[test]
fn idx_label_count_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 4, false);
    let (_, labels) = idx_images(3);
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), labels).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(err.contains("train-labels-idx1-ubyte: 3 labels"), "{err}");
    assert!(
        err.contains("train-images-idx3-ubyte holds 4 images"),
        "{err}"
    );
}

#[test]
fn idx_truncated_gzip_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 50, true);
    let images = dir.path().join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn idx_gzip_with_a_bad_checksum_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 50, true);
    let labels = dir.path().join("train-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&labels).unwrap();
    let crc_at = bytes.len() - 8;
    bytes[crc_at] ^= 0xff;
    std::fs::write(&labels, bytes).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(
        err.contains("train-labels-idx1-ubyte.gz") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn idx_half_pairs_and_labels_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 4, false);
    let labels = dir.path().join("train-labels-idx1-ubyte");
    let err = message(load(&labels, Split::Train));
    assert!(
        err.contains("train-labels-idx1-ubyte: an IDX labels file"),
        "{err}"
    );
    std::fs::remove_file(&labels).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(
        err.contains("train-images-idx3-ubyte: found, but not its IDX partner"),
        "{err}"
    );
}

#[test]
fn grey_idx_broadcasts_to_three_channels_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 3, false);
    let grey = load(dir.path(), Split::Train).unwrap();
    let rgb = grey.broadcast_channels(3).unwrap();
    assert_eq!(grey.shape, vec![1, 3, 4]);
    assert_eq!(rgb.shape, vec![3, 3, 4]);
    assert_eq!(rgb.labels, grey.labels);
    assert_eq!(rgb.example(2).unwrap(), grey.example(2).unwrap().repeat(3));
    let err = rgb.broadcast_channels(2).unwrap_err().to_string();
    assert!(err.contains("cannot turn 3 channels into 2"), "{err}");
}

// ---------------------------------------------------------------------------
// CIFAR

#[test]
fn cifar10_folder_concatenates_five_batches_and_reads_its_test_batch() {
    let dir = tempfile::tempdir().unwrap();
    // Batch b holds b records, labels 0..b-1 (plus 9 in the last batch).
    write_cifar10(
        dir.path(),
        |b| {
            (0..b as u8)
                .map(|l| if b == 5 && l == 4 { 9 } else { l })
                .collect()
        },
        &[3, 1],
    );
    let train = load(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 1 + 2 + 3 + 4 + 5);
    assert_eq!(train.shape, vec![3, 32, 32]);
    assert_eq!(train.classes, 10);
    assert_eq!(train.labels[..3], [0, 0, 1]);
    assert_eq!(train.labels[14], 9);
    let pixels = u8_pixels(&train);
    // Record 6 is the first of data_batch_4: its id and planes come through unchanged.
    let record6 = &pixels[6 * 3072..7 * 3072];
    assert_eq!(record6[..4], 6u32.to_le_bytes());
    assert_eq!((record6[1024], record6[3071]), (100, 200));
    let example = train.example(6).unwrap();
    assert_eq!(example[1024], 100.0 / 255.0);
    assert!(train.source.starts_with("CIFAR-10"), "{}", train.source);

    let test = load(dir.path(), Split::Test).unwrap();
    assert_eq!(test.labels, vec![3, 1]);
    assert_eq!(u8_pixels(&test)[..4], (1u32 << 20).to_le_bytes());
}

#[test]
fn cifar_archive_subfolders_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&sub).unwrap();
    write_cifar10(&sub, |_| vec![1, 2], &[0]);
    assert_eq!(load(dir.path(), Split::Train).unwrap().len(), 10);
    assert_eq!(load(dir.path(), Split::Test).unwrap().len(), 1);
}

#[test]
fn cifar100_reads_fine_labels_from_train_and_test_bin() {
    let dir = tempfile::tempdir().unwrap();
    let train = cifar_records(&[(19, 99), (0, 42), (7, 3)], 0, true);
    let test = cifar_records(&[(4, 56)], 9, true);
    std::fs::write(dir.path().join("train.bin"), train).unwrap();
    std::fs::write(dir.path().join("test.bin"), test).unwrap();
    let data = load(dir.path(), Split::Train).unwrap();
    assert_eq!(data.labels, vec![99, 42, 3]);
    assert_eq!(data.classes, 100);
    assert_eq!(u8_pixels(&data)[3072..3076], 1u32.to_le_bytes());
    assert!(data.source.starts_with("CIFAR-100"), "{}", data.source);
    let test = load(dir.path(), Split::Test).unwrap();
    assert_eq!(
        (test.labels.clone(), test.shape.clone()),
        (vec![56], vec![3, 32, 32])
    );
}

#[test]
fn cifar_file_with_another_name_is_recognised_by_record_size() {
    let dir = tempfile::tempdir().unwrap();
    let ten = dir.path().join("mine10");
    let hundred = dir.path().join("mine100");
    std::fs::write(&ten, cifar_records(&[(0, 5), (0, 6)], 0, false)).unwrap();
    std::fs::write(&hundred, cifar_records(&[(3, 50)], 0, true)).unwrap();
    assert_eq!(load(&ten, Split::Train).unwrap().classes, 10);
    assert_eq!(load(&hundred, Split::Train).unwrap().labels, vec![50]);
}

#[test]
fn cifar_size_not_a_multiple_of_the_record_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), |_| vec![1, 2], &[0, 1]);
    let batch = dir.path().join("data_batch_3.bin");
    let bytes = std::fs::read(&batch).unwrap();
    std::fs::write(&batch, &bytes[..bytes.len() - 100]).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(err.contains("data_batch_3.bin: 6046 bytes"), "{err}");
    assert!(err.contains("CIFAR-10 3073-byte records"), "{err}");
}

#[test]
fn cifar_label_out_of_range_names_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), |_| vec![1], &[0, 12]);
    let err = message(load(dir.path(), Split::Test));
    assert!(err.contains("test_batch.bin: record 1: label 12"), "{err}");
}

#[test]
fn cifar10_folder_missing_a_batch_names_it() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), |_| vec![1], &[0]);
    std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(
        err.contains("data_batch_4.bin: CIFAR-10 train batch missing"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// NPZ

#[test]
fn npz_with_uint8_x_reads_back_exactly_as_grey_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.npz");
    let x = Array3::from_shape_fn((4, 2, 3), |(n, h, w)| (n * 6 + h * 3 + w) as u8);
    let y = Array1::from(vec![2i64, 0, 1, 2]);
    let mut npz = NpzWriter::new(std::fs::File::create(&path).unwrap());
    npz.add_array("x", &x).unwrap();
    npz.add_array("y", &y).unwrap();
    npz.finish().unwrap();
    let data = load(&path, Split::Train).unwrap();
    assert_eq!(data.shape, vec![1, 2, 3]);
    assert_eq!(u8_pixels(&data), x.as_slice().unwrap());
    assert_eq!(data.labels, vec![2, 0, 1, 2]);
    assert_eq!(data.classes, 3);
}

#[test]
fn npz_with_float32_x_keeps_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.npz");
    let x = Array4::from_shape_fn((3, 3, 2, 2), |(n, c, h, w)| {
        (n * 12 + c * 4 + h * 2 + w) as f32 - 0.5
    });
    let y = Array1::from(vec![1i32, 1, 0]);
    let mut npz = NpzWriter::new(std::fs::File::create(&path).unwrap());
    npz.add_array("y", &y).unwrap();
    npz.add_array("x", &x).unwrap();
    npz.finish().unwrap();
    let data = load(&path, Split::Test).unwrap();
    assert_eq!(data.shape, vec![3, 2, 2]);
    assert!(matches!(&data.images, Pixels::F32(v) if v.as_slice() == x.as_slice().unwrap()));
    assert_eq!(
        data.example(2).unwrap(),
        x.as_slice().unwrap()[24..].to_vec()
    );
    assert_eq!(data.labels, vec![1, 1, 0]);
}

/// Token ids (a text classifier's input): int64 `x` [N, L] is kept exactly;
/// an id float32 cannot hold exactly is refused, naming file, array and value.
#[test]
fn npz_with_int64_token_ids_keeps_them_exactly() {
    use ndarray::Array2;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.npz");
    let x = Array2::from_shape_fn((3, 5), |(n, t)| (n * 1000 + t * 7 + 30_000) as i64);
    let y = Array1::from(vec![2i64, 0, 1]);
    let mut npz = NpzWriter::new(std::fs::File::create(&path).unwrap());
    npz.add_array("x", &x).unwrap();
    npz.add_array("y", &y).unwrap();
    npz.finish().unwrap();
    let data = load(&path, Split::Train).unwrap();
    assert_eq!(data.shape, vec![5]);
    let expected: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    assert!(matches!(&data.images, Pixels::F32(v) if *v == expected));
    assert_eq!(data.example(1).unwrap()[0], 31_000.0);

    let big = dir.path().join("big.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&big).unwrap());
    let mut ids = x.clone();
    ids[[2, 4]] = (1 << 24) + 1;
    npz.add_array("x", &ids).unwrap();
    npz.add_array("y", &y).unwrap();
    npz.finish().unwrap();
    let err = message(load(&big, Split::Train));
    assert!(err.contains("big.npz: array 'x': value 16777217"), "{err}");
}

#[test]
fn npz_compressed_numpy_style_with_keras_names_and_channels_last() {
    // Keras' CIFAR layout: x_train (N, 32, 32, 3) uint8, y_train (N, 1).
    let (n, h, w) = (2usize, 32usize, 32usize);
    let hwc: Vec<u8> = (0..n * h * w * 3)
        .map(|k| (k % 3 * 80 + k / 3 % 5) as u8)
        .collect();
    let members = [
        ("x_train.npy", npy_bytes("|u1", &[n, h, w, 3], &hwc)),
        (
            "y_train.npy",
            npy_bytes(
                "<i8",
                &[n, 1],
                &[4, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0],
            ),
        ),
        ("x_test.npy", npy_bytes("|u1", &[1, 4, 4], &[9; 16])),
        ("y_test.npy", npy_bytes("|u1", &[1], &[1])),
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.npz"),
        numpy_style_zip(&members, true),
    )
    .unwrap();
    std::fs::copy(dir.path().join("train.npz"), dir.path().join("test.npz")).unwrap();

    let train = load(dir.path(), Split::Train).unwrap();
    assert_eq!(train.shape, vec![3, 32, 32]);
    assert_eq!(train.labels, vec![4, 7]);
    // Channel c of pixel (y, x) moved from (y * w + x) * 3 + c to (c * h + y) * w + x.
    let pixels = u8_pixels(&train);
    for (y, x, c) in [(0, 0, 0), (5, 7, 1), (31, 31, 2)] {
        assert_eq!(pixels[(c * h + y) * w + x], hwc[(y * w + x) * 3 + c]);
    }
    let test = load(dir.path(), Split::Test).unwrap();
    assert_eq!(
        (test.shape.clone(), test.labels.clone()),
        (vec![1, 4, 4], vec![1])
    );
}

#[test]
fn npz_without_y_names_the_file_and_its_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("only_x.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&path).unwrap());
    npz.add_array("x", &Array2::<u8>::zeros((2, 4))).unwrap();
    npz.finish().unwrap();
    let err = message(load(&path, Split::Train));
    assert!(
        err.contains("only_x.npz: no array 'y'") && err.contains("it has: x.npy"),
        "{err}"
    );
}

#[test]
fn npz_header_claiming_a_huge_array_is_an_error_not_an_allocation() {
    // 2^40 x 28 x 28 bytes claimed, 16 present: must fail without asking for them.
    let members = [
        ("x.npy", npy_bytes("|u1", &[1 << 40, 28, 28], &[0; 16])),
        ("y.npy", npy_bytes("|u1", &[1], &[0])),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liar.npz");
    std::fs::write(&path, numpy_style_zip(&members, false)).unwrap();
    let err = message(load(&path, Split::Train));
    assert!(
        err.contains("liar.npz: array 'x'") && err.contains("holds 16"),
        "{err}"
    );
}

#[test]
fn npz_with_flipped_data_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flipped.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&path).unwrap());
    npz.add_array("x", &Array2::<u8>::from_elem((2, 300), 7))
        .unwrap();
    npz.add_array("y", &Array1::from(vec![0u8, 1])).unwrap();
    npz.finish().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(3).position(|w| w == [7, 7, 7]).unwrap() + 100;
    bytes[at] = 8;
    std::fs::write(&path, bytes).unwrap();
    let err = message(load(&path, Split::Train));
    assert!(
        err.contains("flipped.npz: array 'x'") && err.contains("CRC-32"),
        "{err}"
    );
}

#[test]
fn truncated_npz_and_unknown_dtypes_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.npz");
    let members = [
        ("x.npy", npy_bytes("<f8", &[2, 2], &[0; 32])),
        ("y.npy", npy_bytes("<i4", &[2], &[0; 8])),
    ];
    let zip = numpy_style_zip(&members, false);
    std::fs::write(&path, &zip).unwrap();
    let err = message(load(&path, Split::Train));
    assert!(err.contains("cut.npz: array 'x' has dtype '<f8'"), "{err}");
    std::fs::write(&path, &zip[..zip.len() - 30]).unwrap();
    let err = message(load(&path, Split::Train));
    assert!(
        err.contains("cut.npz") && err.contains("truncated"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Label files for class counts: the same NPZ reader as the datasets

/// Labels 0..10 with the long-tailed histogram `LABELS_HISTOGRAM`, as `<i8` bytes.
const LABELS_HISTOGRAM: [u64; 10] = [40, 25, 16, 10, 6, 4, 3, 2, 1, 1];

fn long_tailed_labels() -> Vec<u8> {
    let mut labels = Vec::new();
    for (class, &n) in LABELS_HISTOGRAM.iter().enumerate() {
        for _ in 0..n {
            labels.extend((class as i64).to_le_bytes());
        }
    }
    labels
}

/// `numpy.savez_compressed(path, y=labels)`: a deflated `y.npy` member.
fn write_compressed_labels_npz(path: &Path) {
    let n = LABELS_HISTOGRAM.iter().sum::<u64>() as usize;
    let members = [("y.npy", npy_bytes("<i8", &[n], &long_tailed_labels()))];
    let zip = numpy_style_zip(&members, true);
    assert_eq!(&zip[8..10], &8u16.to_le_bytes(), "the member is deflated");
    std::fs::write(path, zip).unwrap();
}

#[test]
fn compressed_npz_labels_file_gives_the_class_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.npz");
    write_compressed_labels_npz(&path);
    let counts = resolve(&CountsSource::Labels(path), LABELS_HISTOGRAM.len()).unwrap();
    assert_eq!(counts, LABELS_HISTOGRAM);
}

#[test]
fn npz_labels_file_errors_name_the_file_and_the_array() {
    let dir = tempfile::tempdir().unwrap();
    let counts_error = |path: &Path| {
        let err = resolve(&CountsSource::Labels(path.to_path_buf()), 2)
            .expect_err("reading should fail")
            .to_string();
        assert!(!err.contains('\n'), "error should be one line: {err}");
        err
    };

    let path = dir.path().join("no_y.npz");
    let members = [("x.npy", npy_bytes("|u1", &[2, 2], &[0; 4]))];
    std::fs::write(&path, numpy_style_zip(&members, true)).unwrap();
    let err = counts_error(&path);
    assert!(
        err.contains("no_y.npz: no array 'y'") && err.contains("it has: x.npy"),
        "{err}"
    );

    let path = dir.path().join("float_y.npz");
    let members = [("y.npy", npy_bytes("<f4", &[2], &[0; 8]))];
    std::fs::write(&path, numpy_style_zip(&members, true)).unwrap();
    let err = counts_error(&path);
    assert!(
        err.contains("float_y.npz: array 'y': dtype '<f4' is not an integer type"),
        "{err}"
    );

    let path = dir.path().join("cut.npz");
    let members = [("y.npy", npy_bytes("<i8", &[2], &[0; 16]))];
    let zip = numpy_style_zip(&members, true);
    std::fs::write(&path, &zip[..zip.len() - 30]).unwrap();
    let err = counts_error(&path);
    assert!(
        err.contains("cut.npz") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn patch_with_a_compressed_npz_labels_file_records_its_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.npz");
    write_compressed_labels_npz(&labels);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mlp.onnx");
    let out = dir.path().join("mlp.ldam.onnx");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .arg("patch")
        .arg(&model)
        .arg("--labels-file")
        .arg(&labels)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("the binary starts");
    assert!(
        output.status.success(),
        "patch failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let patched = ldam_onnx::load(&out).unwrap().model;
    let record = PatchRecord::read(&patched)
        .unwrap()
        .expect("the patched model carries its record");
    assert_eq!(record.config.class_counts, LABELS_HISTOGRAM);
}

// ---------------------------------------------------------------------------
// Files and folders that are none of the above

#[test]
fn unrecognised_files_and_empty_folders_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.dat");
    std::fs::write(&path, "hello, not a dataset").unwrap();
    let err = message(load(&path, Split::Train));
    assert!(
        err.contains("notes.dat: not a recognised dataset file"),
        "{err}"
    );
    let err = message(load(dir.path(), Split::Test));
    assert!(
        err.contains("no test data found") && err.contains("t10k-images-idx3-ubyte"),
        "{err}"
    );
    let err = message(load(&dir.path().join("missing"), Split::Train));
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn folder_with_two_formats_is_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_pair(dir.path(), "train", 2, false);
    std::fs::write(
        dir.path().join("train.bin"),
        cifar_records(&[(0, 1)], 0, true),
    )
    .unwrap();
    let err = message(load(dir.path(), Split::Train));
    assert!(
        err.contains("more than one train dataset") && err.contains("train.bin"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Long-tailed subsets

const CIFAR10_LT100: [usize; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];

#[test]
fn exp_profile_gives_the_papers_cifar10_ratio_100_counts() {
    assert_eq!(
        long_tail_counts(5000, 10, 100.0, Profile::Exp),
        CIFAR10_LT100
    );
}

#[test]
fn step_profile_keeps_half_the_classes_at_n_max() {
    let mut expected = vec![5000; 5];
    expected.extend([500; 5]);
    assert_eq!(long_tail_counts(5000, 10, 10.0, Profile::Step), expected);
}

/// A full-size balanced CIFAR-10 folder (5000 per class, 1000 test images), the
/// labels cycling so every batch holds every class.
fn balanced_cifar10(dir: &Path) -> PathBuf {
    write_cifar10(
        dir,
        |_| (0..10_000).map(|i| (i % 10) as u8).collect(),
        &(0..1000).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
    );
    dir.to_path_buf()
}

/// The global record number written into each example's first four pixels.
fn record_ids(data: &Dataset) -> Vec<u32> {
    u8_pixels(data)
        .chunks_exact(3072)
        .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]))
        .collect()
}

#[test]
fn subsample_of_cifar10_reproduces_the_ratio_100_counts_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let folder = balanced_cifar10(dir.path());
    let train = load(&folder, Split::Train).unwrap();
    assert_eq!(train.class_counts(), vec![5000; 10]);

    let counts = long_tail_counts(5000, 10, 100.0, Profile::Exp);
    let long_tail = subsample(&train, &counts, 0).unwrap();
    let expected: Vec<u64> = CIFAR10_LT100.iter().map(|&n| n as u64).collect();
    assert_eq!(class_counts(&long_tail.labels, 10), expected);
    assert_eq!(long_tail.len(), 12406);
    assert_eq!(
        (long_tail.classes, long_tail.shape.clone()),
        (10, vec![3, 32, 32])
    );

    // Every kept example is a distinct original record of the same class.
    let ids = record_ids(&long_tail);
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    for (&id, &label) in ids.iter().zip(&long_tail.labels) {
        assert_eq!(train.labels[id as usize], label);
    }

    let again = subsample(&train, &counts, 0).unwrap();
    assert_eq!(record_ids(&again), ids, "same seed, same subset");
    let other = subsample(&train, &counts, 1).unwrap();
    assert_eq!(other.class_counts(), long_tail.class_counts());
    assert_ne!(record_ids(&other), ids, "another seed picks other examples");

    // The test split stays balanced and whole.
    let test = load(&folder, Split::Test).unwrap();
    assert_eq!(test.class_counts(), vec![100; 10]);
}

#[test]
fn subsample_asking_more_than_a_class_has_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), |_| vec![0, 1, 1], &[0]);
    let train = load(dir.path(), Split::Train).unwrap();
    let mut counts = vec![0; 10];
    counts[0] = 6;
    let err = subsample(&train, &counts, 0).unwrap_err().to_string();
    assert!(
        err.contains("class 0 has 5 examples") && err.contains("keeps 6"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// The real Fashion-MNIST (Debian package dataset-fashion-mnist, LDAM-DRW.md §6)

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn fashion_mnist_from_the_debian_package_has_its_documented_shape() {
    let folder = Path::new(FASHION_MNIST);
    assert!(
        folder.is_dir(),
        "{FASHION_MNIST} is missing: run `apt-get install dataset-fashion-mnist` \
         (these tests need the real Fashion-MNIST files)"
    );
    let train = load(folder, Split::Train).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(train.shape, vec![1, 28, 28]);
    assert_eq!(train.classes, 10);
    assert_eq!(train.class_counts(), vec![6000; 10]);
    // The first labels of the published files: ankle boot, T-shirt, T-shirt, dress.
    assert_eq!(train.labels[..4], [9, 0, 0, 3]);
    let pixels = u8_pixels(&train);
    assert_eq!(
        (pixels.iter().min(), pixels.iter().max()),
        (Some(&0), Some(&255))
    );

    let test = load(folder, Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!((test.shape.clone(), test.classes), (vec![1, 28, 28], 10));
    assert_eq!(test.class_counts(), vec![1000; 10]);
    assert_eq!(test.labels[..4], [9, 2, 1, 1]);

    // The long-tailed Fashion-MNIST the experiments train on.
    let counts = long_tail_counts(6000, 10, 100.0, Profile::Exp);
    let long_tail = subsample(&train, &counts, 0).unwrap();
    let expected: Vec<u64> = counts.iter().map(|&n| n as u64).collect();
    assert_eq!(long_tail.class_counts(), expected);
    assert_eq!(counts[9], 60);
}
