//! Image folders and list files: Fashion-MNIST written as PNG files (a list in
//! the IDX files' order trains exactly as the IDX files do; the folder layout
//! to a comparable accuracy), a folder of JPEG/PNG/BMP images of mixed sizes and
//! colour modes, and the bad-input paths (corrupt images, empty class folders,
//! labels out of range, missing files, non-UTF-8 names).

mod common;

use image::{GrayImage, ImageBuffer, Luma, Rgb, Rgba};
use ldam_onnx::ldam::{LossConfig, Reweight};
use ldam_onnx::onnx::io::{save, SaveOptions};
use ldam_onnx::train::data::{self, Dataset, Pixels, ReadOptions, Split};
use ldam_onnx::train::run::{self, Outcome, RunOptions};
use ldam_onnx::train::settings::TrainSettings;
use std::path::{Path, PathBuf};

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

fn fashion_mnist() -> PathBuf {
    let dir = PathBuf::from(FASHION_MNIST);
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing from {FASHION_MNIST}: run `bash .ci/deps.sh` (installs dataset-fashion-mnist)"
    );
    dir
}

fn u8_pixels(data: &Dataset) -> &[u8] {
    match &data.images {
        Pixels::U8(v) => v,
        other => panic!("expected u8 pixels, got {other:?}"),
    }
}

/// The first `n` examples of a Fashion-MNIST split.
fn first(split: Split, n: usize) -> Dataset {
    let all = data::load(&fashion_mnist(), split).unwrap();
    let indices: Vec<usize> = (0..n).collect();
    all.subset(&indices, "first").unwrap()
}

/// Writes `data` as an uncompressed IDX pair `{prefix}-images-idx3-ubyte` +
/// `{prefix}-labels-idx1-ubyte` in `dir`.
fn write_idx(dir: &Path, prefix: &str, data: &Dataset) {
    let n = data.len() as u32;
    let mut images = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    images.extend_from_slice(u8_pixels(data));
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&n.to_be_bytes());
    labels.extend(data.labels.iter().map(|&l| l as u8));
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

/// Writes every example of `data` as `root/split/<label>/<i>.png` and a list
/// file `root/split.txt` of them in the dataset's order.
fn write_pngs(root: &Path, split: &str, data: &Dataset) -> PathBuf {
    let pixels = u8_pixels(data);
    let mut list = String::new();
    for (i, (image, &label)) in pixels.chunks_exact(784).zip(&data.labels).enumerate() {
        let relative = format!("{split}/{label}/{i:05}.png");
        let path = root.join(&relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        GrayImage::from_raw(28, 28, image.to_vec())
            .unwrap()
            .save(&path)
            .unwrap();
        list.push_str(&format!("{relative} {label}\n"));
    }
    let list_path = root.join(format!("{split}.txt"));
    std::fs::write(&list_path, list).unwrap();
    list_path
}

fn patched_mlp(counts: Vec<u64>, dir: &Path) -> PathBuf {
    let mut config = LossConfig::reference(counts);
    config.reweight = Reweight::None;
    let model = common::patch_with(&common::bundled("mlp"), config);
    let out = dir.join("mlp.ldam.onnx");
    save(&model, None, &out, SaveOptions::default()).unwrap();
    out
}

fn finished(outcome: Outcome) -> Box<run::Finished> {
    match outcome {
        Outcome::Finished(f) => f,
        other => panic!("the run did not finish: {other:?}"),
    }
}

fn train_two_epochs(model: &Path, train: &Path, test: &Path, out: &Path) -> Box<run::Finished> {
    let mut settings = TrainSettings::new(model.into(), train.into(), test.into());
    settings.recipe.epochs = 2;
    settings.recipe.batch_size = 32;
    settings.recipe.seed = 5;
    settings.recipe.warmup_epochs = Some(0);
    settings.recipe.lr = 0.003;
    finished(run::start(settings, out, &RunOptions::default()).unwrap())
}

#[test]
fn a_png_list_in_idx_order_trains_exactly_as_the_idx_files_and_the_folder_comparably() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (first(Split::Train, 3000), first(Split::Test, 1000));
    let idx = tmp.path().join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    write_idx(&idx, "train", &train);
    write_idx(&idx, "t10k", &test);
    let png = tmp.path().join("png");
    let train_list = write_pngs(&png, "train", &train);
    let test_list = write_pngs(&png, "test", &test);
    let model = patched_mlp(train.class_counts(), tmp.path());

    // The images decode to the IDX bytes, scaled as the IDX reader scales them.
    let listed = data::load(&train_list, Split::Train).unwrap();
    assert_eq!(listed.labels, train.labels);
    let listed = listed.with_image_shape([1, 28, 28]).unwrap();
    for i in [0, 1234, 2999] {
        assert_eq!(listed.example(i).unwrap(), train.example(i).unwrap());
    }

    let from_idx = train_two_epochs(&model, &idx, &idx, &tmp.path().join("run-idx"));
    let from_list = train_two_epochs(
        &model,
        &train_list,
        &test_list,
        &tmp.path().join("run-list"),
    );
    assert_eq!(from_list.report.top1, from_idx.report.top1);
    assert_eq!(from_list.report.confusion, from_idx.report.confusion);
    assert_eq!(
        from_list.report.per_class_accuracy,
        from_idx.report.per_class_accuracy
    );
    for (a, b) in from_list.records.iter().zip(&from_idx.records) {
        assert_eq!(
            (a.train_loss, a.train_acc, a.test_acc),
            (b.train_loss, b.train_acc, b.test_acc)
        );
    }
    // Two epochs of an MLP on 3000 images: well above chance (10%).

    // ROOT/train/<class>/ and ROOT/test/<class>/: the same examples in another
    // order (sorted paths within each class), so a comparable accuracy.
    let from_folder = train_two_epochs(&model, &png, &png, &tmp.path().join("run-folder"));
    // Two epochs of an MLP on 3000 images (about 64%; chance is 10%).
    assert!(
        from_idx.report.top1 > 50.0,
        "top-1 {}",
        from_idx.report.top1
    );
    let gap = (from_folder.report.top1 - from_idx.report.top1).abs();
    assert!(
        gap < 8.0,
        "folder {}% vs IDX {}%",
        from_folder.report.top1,
        from_idx.report.top1
    );
}

/// A folder of images in every mode the readers convert, of several sizes.
fn mixed_folder(root: &Path) {
    let a = root.join("a");
    let b = root.join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(b.join("nested")).unwrap();
    // Grey JPEG, 40 x 30.
    ImageBuffer::from_fn(40, 30, |x, y| Luma([(x * 6 + y) as u8]))
        .save(a.join("grey.JPG"))
        .unwrap();
    // A solid RGB JPEG, 20 x 50 (solid, so JPEG's loss and resampling keep it).
    ImageBuffer::from_pixel(20, 50, Rgb([200u8, 100, 50]))
        .save(a.join("rgb.jpeg"))
        .unwrap();
    // RGBA PNG of the model's size: used as decoded, alpha dropped.
    ImageBuffer::from_fn(32, 32, |x, y| Rgba([x as u8 * 8, y as u8 * 8, 7, 99]))
        .save(b.join("rgba.png"))
        .unwrap();
    // BMP in a subfolder, 16 x 16.
    ImageBuffer::from_pixel(16, 16, Rgb([10u8, 20, 30]))
        .save(b.join("nested").join("small.bmp"))
        .unwrap();
    // CMYK JPEG, 33 x 33.
    let cmyk: Vec<u8> = (0..33 * 33).flat_map(|_| [0u8, 128, 255, 0]).collect();
    jpeg_encoder::Encoder::new_file(b.join("cmyk.jpg"), 95)
        .unwrap()
        .encode(&cmyk, 33, 33, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    // Not images: ignored by extension.
    std::fs::write(b.join("notes.txt"), "not an image").unwrap();
}

#[test]
fn a_mixed_folder_decodes_every_mode_to_the_model_channels_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    mixed_folder(tmp.path());
    let data = data::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(data.len(), 5);
    assert_eq!(data.labels, vec![0, 0, 1, 1, 1]);
    assert_eq!(data.class_names, Some(vec!["a".into(), "b".into()]));
    assert!(data.is_image_files());

    let rgb = data.clone().with_image_shape([3, 32, 32]).unwrap();
    let plane = 32 * 32;
    // Sorted paths: a/grey.JPG, a/rgb.jpeg, b/cmyk.jpg, b/nested/small.bmp, b/rgba.png.
    let grey = rgb.example(0).unwrap();
    assert_eq!(
        grey[..plane],
        grey[plane..2 * plane],
        "grey repeats into R and G"
    );
    assert_eq!(grey[..plane], grey[2 * plane..], "grey repeats into B");
    let solid = rgb.example(1).unwrap();
    for (c, value) in [200.0f32, 100.0, 50.0].iter().enumerate() {
        let channel = &solid[c * plane..(c + 1) * plane];
        assert!(
            channel.iter().all(|v| (v * 255.0 - value).abs() < 2.5),
            "channel {c} of the solid JPEG: {:?}",
            &channel[..4]
        );
    }
    let cmyk = rgb.example(2).unwrap();
    assert!(cmyk.iter().all(|v| (0.0..=1.0).contains(v)));
    let bmp = rgb.example(3).unwrap();
    assert!(bmp[..plane].iter().all(|v| (v * 255.0 - 10.0).abs() < 1e-3));
    // The 32 x 32 PNG is not resampled: exact bytes / 255, alpha dropped.
    let rgba = rgb.example(4).unwrap();
    assert_eq!(rgba[5 * 32 + 3], (3 * 8) as f32 / 255.0);
    assert_eq!(rgba[plane + 5 * 32 + 3], (5 * 8) as f32 / 255.0);
    assert_eq!(rgba[2 * plane], 7.0 / 255.0);

    // One channel: PIL's luma of (200, 100, 50) is 124.
    let grey_model = data.with_image_shape([1, 24, 24]).unwrap();
    let luma = grey_model.example(1).unwrap();
    assert_eq!(luma.len(), 24 * 24);
    assert!(
        luma.iter().all(|v| (v * 255.0 - 124.0).abs() < 2.5),
        "{:?}",
        &luma[..4]
    );
}

fn message<T: std::fmt::Debug>(result: ldam_onnx::Result<T>) -> String {
    let text = result.unwrap_err().to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    text
}

#[test]
fn corrupt_images_are_errors_naming_the_file_or_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    mixed_folder(tmp.path());
    std::fs::write(tmp.path().join("b").join("bad.jpg"), b"not a jpeg at all").unwrap();
    let text = message(data::load(tmp.path(), Split::Train));
    assert!(
        text.contains("bad.jpg") && text.contains("not a JPEG, PNG or BMP"),
        "{text}"
    );

    // A PNG whose header is fine but whose data stops: found when decoded.
    let mut png = Vec::new();
    ImageBuffer::from_fn(32, 32, |x, y| Luma([(x ^ y) as u8 * 8]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(tmp.path().join("a").join("cut.png"), &png[..png.len() - 30]).unwrap();
    let skip = ReadOptions {
        skip_bad_images: true,
        ..ReadOptions::default()
    };
    let data = data::load_with(tmp.path(), Split::Train, &skip).unwrap();
    assert_eq!((data.len(), data.skipped_images), (5, 2));

    // Without skipping, the truncated PNG passes the header check and fails
    // when a batch decodes it, naming it.
    std::fs::remove_file(tmp.path().join("b").join("bad.jpg")).unwrap();
    let data = data::load(tmp.path(), Split::Train).unwrap();
    let data = data.with_image_shape([3, 32, 32]).unwrap();
    let cut = (0..data.len())
        .find(|&i| data.example(i).is_err())
        .expect("the cut PNG fails to decode");
    let text = message(data.example(cut));
    assert!(
        text.contains("cut.png") && text.contains("corrupt"),
        "{text}"
    );
}

#[test]
fn bad_lists_and_folders_are_one_line_errors_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ImageBuffer::from_pixel(8, 8, Luma([1u8]))
        .save(dir.join("x.png"))
        .unwrap();
    let list = dir.join("list.txt");
    let read = |text: &[u8], options: &ReadOptions| {
        std::fs::write(&list, text).unwrap();
        message(data::load_with(&list, Split::Train, options))
    };
    let model_classes = ReadOptions {
        classes: Some(2),
        ..ReadOptions::default()
    };
    let text = read(b"x.png 0\n\nx.png 5\n", &model_classes);
    assert!(
        text.contains("list.txt:3") && text.contains("label 5 is outside 0..2"),
        "{text}"
    );
    let text = read(b"x.png 0\nmissing.png 1\n", &ReadOptions::default());
    assert!(
        text.contains("list.txt:2")
            && text.contains("missing.png")
            && text.contains("no such file"),
        "{text}"
    );
    let text = read(b"x.png 0\nx\xff.png 1\n", &ReadOptions::default());
    assert!(text.contains("list.txt:2: not UTF-8"), "{text}");
    let text = read(b"x.png one\n", &ReadOptions::default());
    assert!(
        text.contains("list.txt:1") && text.contains("'one'"),
        "{text}"
    );
    let text = read(b"x.png\n", &ReadOptions::default());
    assert!(
        text.contains("list.txt:1") && text.contains("expected"),
        "{text}"
    );

    // Class names bound the labels too, and name the list's classes.
    let names = dir.join("names.txt");
    std::fs::write(&names, "zero\none\n").unwrap();
    let named = ReadOptions {
        class_names: Some(names.clone()),
        ..ReadOptions::default()
    };
    let text = read(b"x.png 2\n", &named);
    assert!(
        text.contains("list.txt:1") && text.contains("names.txt"),
        "{text}"
    );
    std::fs::write(&list, "x.png 1\n").unwrap();
    let data = data::load_with(&list, Split::Train, &named).unwrap();
    assert_eq!(data.class_name(1), "one");
    assert_eq!(data.classes, 2);
    // --image-root resolves the paths instead of the list's folder.
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("list.txt"), "x.png 0\n").unwrap();
    let rooted = ReadOptions {
        image_root: Some(dir.to_path_buf()),
        ..ReadOptions::default()
    };
    assert_eq!(
        data::load_with(&elsewhere.join("list.txt"), Split::Train, &rooted)
            .unwrap()
            .len(),
        1
    );

    // iNaturalist categories, ids in any order.
    let json = dir.join("categories.json");
    std::fs::write(
        &json,
        r#"{"categories": [{"id": 1, "name": "Aves"}, {"id": 0, "name": "Plantae"}]}"#,
    )
    .unwrap();
    assert_eq!(
        data::read_class_names(&json).unwrap(),
        vec!["Plantae".to_string(), "Aves".to_string()]
    );

    // An empty class folder.
    let folder = dir.join("folder");
    std::fs::create_dir_all(folder.join("a")).unwrap();
    std::fs::create_dir_all(folder.join("b")).unwrap();
    std::fs::copy(dir.join("x.png"), folder.join("a").join("x.png")).unwrap();
    let text = message(data::load(&folder, Split::Train));
    assert!(
        text.contains("folder/b") && text.contains("empty class folder"),
        "{text}"
    );

    // A file name that is not UTF-8.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = folder
            .join("b")
            .join(std::ffi::OsStr::from_bytes(b"\xffx.png"));
        std::fs::copy(dir.join("x.png"), odd).unwrap();
        let text = message(data::load(&folder, Split::Train));
        assert!(text.contains("not UTF-8"), "{text}");
    }
}

#[test]
fn a_bad_image_stops_train_before_the_run_folder_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut list = String::new();
    for i in 0..20u8 {
        ImageBuffer::from_pixel(28, 28, Luma([i * 10]))
            .save(images.join(format!("{i}.png")))
            .unwrap();
        list.push_str(&format!("images/{i}.png {}\n", i % 10));
    }
    std::fs::write(images.join("7.png"), b"\x89PNG broken").unwrap();
    let list_path = tmp.path().join("train.txt");
    std::fs::write(&list_path, &list).unwrap();
    let model = patched_mlp(vec![2; 10], tmp.path());
    let out = tmp.path().join("run");
    let settings = TrainSettings::new(model.clone(), list_path.clone(), list_path.clone());
    let err = run::start(settings, &out, &RunOptions::default()).unwrap_err();
    let text = err.naming_settings(ldam_onnx::SettingNames::Flags);
    assert!(text.contains("7.png") && text.contains("line 8"), "{text}");
    assert!(!out.exists(), "the run folder was made");

    // Skipped and counted: the run trains on the 19 others (counts differ
    // from the patched ones, so allow it).
    // Class names from a file name the report's classes and the confusion
    // matrix's rows and columns.
    let names_path = tmp.path().join("names.txt");
    let names: Vec<String> = (0..10).map(|c| format!("class {c}")).collect();
    std::fs::write(&names_path, names.join("\n")).unwrap();
    let mut settings = TrainSettings::new(model, list_path.clone(), list_path);
    settings.skip_bad_images = true;
    settings.recipe.allow_count_mismatch = true;
    settings.class_names = Some(names_path);
    settings.recipe.epochs = 1;
    let done = finished(run::start(settings, &out, &RunOptions::default()).unwrap());
    assert_eq!(done.report.class_counts.train.iter().sum::<u64>(), 19);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    // One bad file, read in both the training and the test set.
    assert_eq!(json["skipped_images"], 2);
    assert_eq!(json["per_class"][7]["name"], "class 7");
    assert_eq!(json["per_class"][7]["train"], 1);
    assert_eq!(json["per_class"][3]["train"], 2);
    let csv = std::fs::read_to_string(out.join("confusion.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.ends_with("class 8,class 9"), "{header}");
    assert!(
        csv.lines().nth(10).unwrap().starts_with("class 9,"),
        "{csv}"
    );
}
