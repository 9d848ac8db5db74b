//! The training run's schedule, sampling, evaluation and report files, against
//! the reference recipe (docs/LDAM-DRW.md sections 3-5) and hand-computed numbers.

use flate2::read::ZlibDecoder;
use ldam_onnx::ldam::{effective_number_weights, LossConfig};
use ldam_onnx::train::metrics::Evaluation;
use ldam_onnx::train::report::{write_metrics_csv, write_run, EpochRecord, Report, METRICS_HEADER};
use ldam_onnx::train::schedule::{LrSchedule, Sampler, RESAMPLE_BETA};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io::Read;
use std::path::Path;

const CIFAR10_LT100: [u64; 10] = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50];

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

// ---------------------------------------------------------------------------
// Schedule and DRW

#[test]
fn lr_schedule_matches_the_reference_at_every_boundary_epoch() {
    let schedule = LrSchedule::reference(0.1);
    schedule.validate().unwrap();
    // 0-based epoch -> the reference's adjust_learning_rate with e = epoch + 1.
    let expected = [
        (0, 0.02),
        (4, 0.1),
        (5, 0.1),
        (159, 0.1),
        (160, 0.001),
        (179, 0.001),
        (180, 1e-5),
        (199, 1e-5),
    ];
    for (epoch, lr) in expected {
        assert_eq!(schedule.lr_at(epoch), lr, "epoch {epoch}");
    }
}

#[test]
fn drw_weights_are_ones_at_epoch_159_and_effective_number_weights_at_160() {
    let config = LossConfig::reference(CIFAR10_LT100.to_vec());
    assert_eq!(config.class_weights_at(159), Some(vec![1.0; 10]));

    // w_j = (1 - beta) / (1 - beta^n_j), scaled so that sum_j w_j = C.
    let beta: f64 = 0.9999;
    let raw: Vec<f64> = CIFAR10_LT100
        .iter()
        .map(|&n| (1.0 - beta) / (1.0 - beta.powf(n as f64)))
        .collect();
    let sum: f64 = raw.iter().sum();
    let expected: Vec<f64> = raw.iter().map(|w| w / sum * 10.0).collect();
    let weights = config.class_weights_at(160).expect("DRW weights at 160");
    for (class, (w, e)) in weights.iter().zip(&expected).enumerate() {
        assert!(close(*w, *e, 1e-12), "class {class}: {w} vs {e}");
    }
    // The rarest class gets the largest weight.
    assert!(weights[9] > weights[0] * 2.0, "{weights:?}");
}

// ---------------------------------------------------------------------------
// Samplers

/// Three classes whose effective numbers differ enough that count * weight is
/// visibly not uniform: frequencies ~[0.387, 0.312, 0.305], not 1/3 each.
fn long_tail_labels() -> (Vec<i64>, [u64; 3]) {
    let counts = [5000u64, 500, 50];
    let mut labels = Vec::new();
    for (class, &n) in counts.iter().enumerate() {
        labels.extend(std::iter::repeat_n(class as i64, n as usize));
    }
    (labels, counts)
}

#[test]
fn class_balanced_sampling_draws_classes_in_proportion_to_count_times_weight() {
    let (labels, counts) = long_tail_labels();
    let weights = effective_number_weights(&counts, RESAMPLE_BETA);
    let mass: Vec<f64> = counts
        .iter()
        .zip(&weights)
        .map(|(&n, w)| n as f64 * w)
        .collect();
    let total_mass: f64 = mass.iter().sum();
    let expected: Vec<f64> = mass.iter().map(|m| m / total_mass).collect();

    let mut rng = ChaCha8Rng::seed_from_u64(2019);
    let mut drawn = [0u64; 3];
    let epochs = 30;
    for epoch in 0..epochs {
        let order = Sampler::ClassBalanced.epoch_order(&labels, 3, epoch, true, &mut rng);
        assert_eq!(order.len(), labels.len(), "one epoch draws N examples");
        for i in order {
            drawn[labels[i] as usize] += 1;
        }
    }
    let draws = (epochs * labels.len()) as f64;
    // ~166,500 draws: a frequency's standard deviation is about 0.0012, so 0.006
    // is 5 sigma, yet tight enough to tell count*weight from uniform 1/3.
    let tolerance = 0.006;
    assert!(
        (expected[0] - 1.0 / 3.0).abs() > 5.0 * tolerance,
        "{expected:?}"
    );
    for class in 0..3 {
        let frequency = drawn[class] as f64 / draws;
        assert!(
            close(frequency, expected[class], tolerance),
            "class {class}: drawn {frequency:.4}, expected {:.4}",
            expected[class]
        );
    }
}

#[test]
fn samplers_are_deterministic_for_a_seed() {
    let (labels, _) = long_tail_labels();
    let order = |sampler: Sampler, seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        sampler.epoch_order(&labels, 3, 5, true, &mut rng)
    };
    for sampler in [
        Sampler::Instance,
        Sampler::ClassBalanced,
        Sampler::Deferred { from_epoch: 5 },
    ] {
        assert_eq!(order(sampler, 11), order(sampler, 11), "{sampler:?}");
        assert_ne!(order(sampler, 11), order(sampler, 12), "{sampler:?}");
    }
}

// ---------------------------------------------------------------------------
// Metrics on a hand-made confusion matrix

/// Training counts: class 0 many-shot (>100), 1 and 2 medium (20..=100),
/// 3 and 4 few (<20). Class 4 has no test examples.
const TRAIN_COUNTS: [u64; 5] = [500, 60, 30, 10, 5];

fn hand_confusion() -> Vec<Vec<u64>> {
    vec![
        vec![8, 1, 1, 0, 0], // 10 examples, 8 right: 80%
        vec![2, 6, 2, 0, 0], // 10 examples, 6 right: 60%
        vec![1, 0, 4, 0, 0], //  5 examples, 4 right: 80%
        vec![1, 0, 0, 2, 1], //  4 examples, 2 right: 50%
        vec![0, 0, 0, 0, 0], //  no test examples
    ]
}

/// The (label, prediction) pairs that produce [`hand_confusion`].
fn hand_pairs() -> (Vec<i64>, Vec<i64>) {
    let mut labels = Vec::new();
    let mut predicted = Vec::new();
    for (truth, row) in hand_confusion().iter().enumerate() {
        for (pred, &n) in row.iter().enumerate() {
            for _ in 0..n {
                labels.push(truth as i64);
                predicted.push(pred as i64);
            }
        }
    }
    (labels, predicted)
}

#[test]
fn metrics_of_a_hand_made_confusion_matrix() {
    let e = Evaluation::from_confusion(hand_confusion()).unwrap();
    assert_eq!(e.total(), 29);
    // 20 of 29 right.
    assert!(close(e.top1(), 2000.0 / 29.0, 1e-12), "{}", e.top1());
    assert!(close(e.top1_error(), 100.0 - 2000.0 / 29.0, 1e-12));
    assert_eq!(
        e.per_class_accuracy(),
        vec![Some(80.0), Some(60.0), Some(80.0), Some(50.0), None]
    );
    let groups = e.group_accuracy(&TRAIN_COUNTS).unwrap();
    assert_eq!(groups.many, Some(80.0));
    // Mean of the classes' accuracies (60 + 80) / 2, not pooled 10/15 = 66.7%.
    assert_eq!(groups.medium, Some(70.0));
    // Class 4 (no test examples) is left out instead of counting as 0%.
    assert_eq!(groups.few, Some(50.0));
}

#[test]
fn predictions_and_logits_give_the_same_matrix_as_the_hand_made_one() {
    let (labels, predicted) = hand_pairs();
    let from_pairs = Evaluation::from_predictions(&labels, &predicted, 5).unwrap();
    assert_eq!(from_pairs.confusion(), hand_confusion().as_slice());
    let logits: Vec<f32> = predicted
        .iter()
        .flat_map(|&p| (0..5).map(move |c| if c == p { 2.0 } else { -1.0 }))
        .collect();
    let from_logits = Evaluation::from_logits(&logits, &labels, 5).unwrap();
    assert_eq!(from_logits, from_pairs);
}

#[test]
fn group_accuracy_needs_one_training_count_per_class() {
    let e = Evaluation::from_confusion(hand_confusion()).unwrap();
    let err = e.group_accuracy(&[1, 2, 3]).unwrap_err().to_string();
    assert!(err.contains("3 training class counts for 5"), "{err}");
}

// ---------------------------------------------------------------------------
// Report files

fn epoch_records(epochs: usize) -> Vec<EpochRecord> {
    let schedule = LrSchedule::reference(0.1);
    (0..epochs)
        .map(|epoch| {
            let t = epoch as f64 / epochs as f64;
            EpochRecord {
                epoch,
                lr: schedule.lr_at(epoch),
                train_loss: 2.3 * (-3.0 * t).exp() + 0.1,
                train_acc: 95.0 - 85.0 * (-4.0 * t).exp(),
                test_acc: Some(75.0 - 65.0 * (-3.5 * t).exp()),
                many: Some(90.0 - 60.0 * (-4.0 * t).exp()),
                medium: Some(70.0 - 65.0 * (-3.0 * t).exp()),
                few: (epoch > 0).then(|| 45.0 * (1.0 - (-2.0 * t).exp())),
                images_per_s: 5000.0 + epoch as f64,
                seconds: 10.0,
            }
        })
        .collect()
}

fn hand_report() -> Report {
    let e = Evaluation::from_confusion(hand_confusion()).unwrap();
    let settings = serde_json::json!({"loss": "ldam", "reweight": "drw", "epochs": 40});
    Report::new(&e, &TRAIN_COUNTS, settings, "1.31.1").unwrap()
}

#[test]
fn run_folder_gets_two_csvs_json_and_two_pngs_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let records = epoch_records(40);
    let files = write_run(&run, &records, &hand_report()).unwrap();

    // metrics.csv: the header and one row per epoch.
    let csv = std::fs::read_to_string(&files.metrics_csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,lr,train_loss,train_acc,test_acc,many,medium,few,images_per_s,seconds"
    );
    assert_eq!(lines[0], METRICS_HEADER);
    assert_eq!(lines.len(), 41);
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0], "0");
    assert_eq!(first[1].parse::<f64>().unwrap(), 0.02);
    assert_eq!(first[7], "", "epoch 0 has no few-shot accuracy");
    let last: Vec<&str> = lines[40].split(',').collect();
    assert_eq!(last[0], "39");
    assert_eq!(
        last[4].parse::<f64>().unwrap(),
        records[39].test_acc.unwrap()
    );

    // report.json
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.report_json).unwrap()).unwrap();
    assert!(close(json["top1"].as_f64().unwrap(), 2000.0 / 29.0, 1e-9));
    assert!(close(
        json["top1_error"].as_f64().unwrap(),
        100.0 - 2000.0 / 29.0,
        1e-9
    ));
    assert_eq!(json["per_class_accuracy"][0].as_f64(), Some(80.0));
    assert!(json["per_class_accuracy"][4].is_null());
    assert_eq!(json["groups"]["many"].as_f64(), Some(80.0));
    assert_eq!(json["groups"]["medium"].as_f64(), Some(70.0));
    assert_eq!(json["groups"]["few"].as_f64(), Some(50.0));
    assert_eq!(json["confusion"], serde_json::json!(hand_confusion()));
    assert_eq!(
        json["class_counts"]["train"],
        serde_json::json!(TRAIN_COUNTS)
    );
    assert_eq!(
        json["class_counts"]["test"],
        serde_json::json!([10, 10, 5, 4, 0])
    );
    assert_eq!(json["settings"]["reweight"], "drw");
    assert_eq!(json["versions"]["ldam_onnx"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["versions"]["onnxruntime"], "1.31.1");
    let parsed: Report = serde_json::from_value(json).expect("report.json reads back");
    assert_eq!(parsed.confusion, hand_confusion());

    // The plots.
    assert_png(&files.curves_png, (1100, 900));
    assert_png(&files.per_class_png, (1000, 650));

    // Atomic writes leave no temporary files behind.
    let mut names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "confusion.csv",
            "curves.png",
            "metrics.csv",
            "per_class.png",
            "report.json"
        ]
    );
}

#[test]
fn plots_survive_one_epoch_and_a_diverged_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = epoch_records(1);
    records[0].train_loss = f64::NAN;
    let files = write_run(dir.path(), &records, &hand_report()).unwrap();
    assert_png(&files.curves_png, (1100, 900));
}

#[test]
fn rewriting_metrics_replaces_the_file_and_errors_name_it() {
    let dir = tempfile::tempdir().unwrap();
    write_metrics_csv(dir.path(), &epoch_records(3)).unwrap();
    let path = write_metrics_csv(dir.path(), &epoch_records(2)).unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap().lines().count(), 3);

    let missing = dir.path().join("no-such-folder");
    let err = write_metrics_csv(&missing, &epoch_records(1)).unwrap_err();
    assert!(
        err.to_string().contains("no-such-folder/metrics.csv"),
        "{err}"
    );
}

#[test]
fn an_empty_test_set_has_no_report() {
    let err = Report::new(&Evaluation::new(3), &[5, 5, 5], serde_json::json!({}), "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("test set is empty"), "{err}");
}

// ---------------------------------------------------------------------------
// A minimal PNG reader (the crate has no PNG decoder among its dependencies):
// chunks, IHDR, zlib via flate2, and the five scanline filters of the PNG spec.

fn assert_png(path: &Path, (width, height): (u32, u32)) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} signature",
        path.display()
    );
    assert!(
        bytes.len() > 10_000,
        "{}: only {} bytes",
        path.display(),
        bytes.len()
    );
    let image = decode_png(&bytes);
    assert_eq!(
        (image.width, image.height),
        (width, height),
        "{}",
        path.display()
    );

    // Not a blank canvas: many distinct colours, a white background, and ink
    // (non-white pixels) covering a plausible share of the picture.
    let pixels: Vec<&[u8]> = image.rgb.chunks_exact(3).collect();
    let distinct: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(
        distinct.len() > 20,
        "{}: {} colours",
        path.display(),
        distinct.len()
    );
    let ink = pixels.iter().filter(|p| **p != [255, 255, 255]).count() as f64 / pixels.len() as f64;
    assert!(
        (0.02..0.8).contains(&ink),
        "{}: {:.1}% non-white",
        path.display(),
        100.0 * ink
    );
}

struct DecodedPng {
    width: u32,
    height: u32,
    /// 8-bit RGB, row-major.
    rgb: Vec<u8>,
}

fn decode_png(bytes: &[u8]) -> DecodedPng {
    let mut at = 8;
    let (mut width, mut height, mut channels) = (0u32, 0u32, 0usize);
    let mut compressed = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!(data[8], 8, "bit depth");
                channels = match data[9] {
                    0 => 1,
                    2 => 3,
                    4 => 2,
                    6 => 4,
                    other => panic!("colour type {other}"),
                };
                assert_eq!(data[12], 0, "not interlaced");
            }
            b"IDAT" => compressed.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    assert!(width > 0, "IHDR first");
    let mut raw = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let stride = width as usize * channels;
    assert_eq!(raw.len(), height as usize * (stride + 1));
    let mut pixels = vec![0u8; height as usize * stride];
    for y in 0..height as usize {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= channels {
                pixels[y * stride + x - channels]
            } else {
                0
            };
            let b = if y > 0 {
                pixels[(y - 1) * stride + x]
            } else {
                0
            };
            let c = if x >= channels && y > 0 {
                pixels[(y - 1) * stride + x - channels]
            } else {
                0
            };
            let predictor = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => paeth(a, b, c),
                other => panic!("filter {other}"),
            };
            pixels[y * stride + x] = line[x].wrapping_add(predictor);
        }
    }
    let rgb = pixels
        .chunks_exact(channels)
        .flat_map(|p| match channels {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    DecodedPng { width, height, rgb }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = (
        (p - a as i16).abs(),
        (p - b as i16).abs(),
        (p - c as i16).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
