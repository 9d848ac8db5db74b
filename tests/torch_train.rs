//! A short training run on the libtorch backend, through the same loop as ONNX
//! Runtime: the exported `model.onnx`, evaluated in ONNX Runtime, reproduces the
//! accuracy the run reports.
#![cfg(feature = "torch")]

mod common;

use ldam_onnx::backend::{Backend, Device};
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::{load, save, SaveOptions};
use ldam_onnx::train::batches::{Augment, Preprocess};
use ldam_onnx::train::data::{self, Split};
use ldam_onnx::train::evaluate::{evaluate, limit, recorded_normalization, Classifier};
use ldam_onnx::train::run::{self, Outcome, RunOptions};
use ldam_onnx::train::settings::TrainSettings;
use std::path::PathBuf;

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn torch_run_exports_a_model_whose_onnx_runtime_accuracy_is_the_reported_one() {
    let data = PathBuf::from(FASHION_MNIST);
    assert!(
        data.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing: run `bash .ci/deps.sh`"
    );
    let (train_limit, seed) = (3000, 2);
    let counts = limit(
        data::load(&data, Split::Train).unwrap(),
        Some(train_limit),
        seed,
    )
    .unwrap()
    .class_counts();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = LossConfig::reference(counts);
    config.drw_epoch = 1;
    let patched = common::patch_with(&common::bundled("cnn"), config);
    let model = tmp.path().join("cnn.ldam.onnx");
    save(&patched, None, &model, SaveOptions::default()).unwrap();

    let mut settings = TrainSettings::new(model, data.clone(), data.clone());
    settings.train_limit = Some(train_limit);
    settings.test_limit = Some(1000);
    settings.recipe.epochs = 3;
    settings.recipe.seed = seed;
    settings.recipe.backend = Backend::Torch;
    let out = tmp.path().join("run");
    let done = match run::start(settings, &out, &RunOptions::default()).unwrap() {
        Outcome::Finished(done) => done,
        other => panic!("{other:?}"),
    };
    assert!(done.report.top1 > 50.0, "top-1 {}", done.report.top1);
    let runtime = done.report.settings["resolved"]["runtime"]
        .as_str()
        .unwrap();
    assert!(runtime.starts_with("libtorch"), "{runtime}");

    let exported = load(&done.model).unwrap().model;
    let mut classifier = Classifier::new(&exported, None, Device::Cpu).unwrap();
    let test = limit(data::load(&data, Split::Test).unwrap(), Some(1000), seed).unwrap();
    let preprocess = Preprocess {
        augment: Augment::None,
        normalization: recorded_normalization(&exported).unwrap(),
        seed,
    };
    let mut logits = Vec::new();
    let evaluation = evaluate(&test, &preprocess, 500, 10, |b| {
        let out = classifier.predict(b)?;
        logits.extend_from_slice(&out);
        Ok(out)
    })
    .unwrap();
    // The run's accuracy comes from libtorch, this one from ONNX Runtime: an
    // example's arg-max can differ only where its top two logits are closer than
    // the two runtimes' forward difference (`common::tolerance`), bounded per row by
    // `forward_bound * ||row||_2` on each side.
    let bound = common::tolerance::Accumulation::of(&exported, 500).forward_bound();
    let ambiguous = logits
        .chunks(10)
        .filter(|row| {
            let mut sorted = row.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            f64::from(sorted[0] - sorted[1]) <= 2.0 * bound * common::tolerance::norm(row)
        })
        .count();
    let differing = ((evaluation.top1() - done.report.top1).abs() / 100.0 * 1000.0).round();
    assert!(
        differing <= ambiguous as f64,
        "ONNX Runtime top-1 {} vs the run's {}: {differing} examples differ, {ambiguous} are within rounding of a tie",
        evaluation.top1(),
        done.report.top1
    );
}
