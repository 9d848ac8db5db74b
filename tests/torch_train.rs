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
    settings.epochs = 3;
    settings.seed = seed;
    settings.backend = Backend::Torch;
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
    let evaluation = evaluate(&test, &preprocess, 500, 10, |b| classifier.predict(b)).unwrap();
    assert_eq!(evaluation.top1(), done.report.top1);
}
