//! The training loop on real data (Fashion-MNIST, installed by the test command
//! from the `dataset-fashion-mnist` Debian package): accuracy of a short seeded
//! run, the exported model against the report, kill-and-resume and Ctrl-C-and-
//! resume equality, and the failure paths.

mod common;

use ldam_onnx::backend::Device;
use ldam_onnx::ldam::{LossConfig, Reweight};
use ldam_onnx::onnx::io::{load, save, SaveOptions};
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::train::batches::Preprocess;
use ldam_onnx::train::checkpoint::Checkpoint;
use ldam_onnx::train::data::{self, Split};
use ldam_onnx::train::evaluate::{evaluate, limit, recorded_normalization, Classifier};
use ldam_onnx::train::run::{self, Outcome, RunOptions};
use ldam_onnx::train::settings::TrainSettings;
use ldam_onnx::SettingNames;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

fn fashion_mnist() -> PathBuf {
    let dir = PathBuf::from(FASHION_MNIST);
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing from {FASHION_MNIST}: run `bash .ci/deps.sh` (installs dataset-fashion-mnist)"
    );
    dir
}

/// The class counts of the first `limit`-subset, exactly as the loop builds it.
fn subset_counts(limit_to: Option<usize>, seed: u64) -> Vec<u64> {
    let train = data::load(&fashion_mnist(), Split::Train).unwrap();
    limit(train, limit_to, seed).unwrap().class_counts()
}

/// `models/NAME.onnx` patched for `counts` into `dir/NAME.ldam.onnx`.
fn patched(
    name: &str,
    counts: Vec<u64>,
    reweight: Reweight,
    drw_epoch: i64,
    dir: &Path,
) -> PathBuf {
    let mut config = LossConfig::reference(counts);
    config.reweight = reweight;
    config.drw_epoch = drw_epoch;
    let model = common::patch_with(&common::bundled(name), config);
    let out = dir.join(format!("{name}.ldam.onnx"));
    save(&model, None, &out, SaveOptions::default()).unwrap();
    out
}

fn finished(outcome: Outcome) -> Box<run::Finished> {
    match outcome {
        Outcome::Finished(f) => f,
        other => panic!("the run did not finish: {other:?}"),
    }
}

#[test]
fn short_seeded_run_learns_fashion_mnist_and_the_exported_model_reproduces_its_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_limit, seed) = (4000, 1);
    let model = patched(
        "cnn",
        subset_counts(Some(train_limit), seed),
        Reweight::Drw,
        3,
        tmp.path(),
    );
    let mut settings = TrainSettings::new(model, fashion_mnist(), fashion_mnist());
    settings.train_limit = Some(train_limit);
    settings.test_limit = Some(2000);
    settings.recipe.epochs = 5;
    settings.recipe.seed = seed;
    let out = tmp.path().join("run");
    let done = finished(run::start(settings, &out, &RunOptions::default()).unwrap());

    // Five epochs on 4000 images (LDAM, cosine head): a CNN that learned
    // nothing scores ~10%, this one about 75%.
    assert!(
        done.report.top1 > 70.0,
        "top-1 after 5 epochs: {}%",
        done.report.top1
    );
    assert_eq!(done.records.len(), 5);
    let last = done.records.last().unwrap();
    assert_eq!(last.test_acc, Some(done.report.top1));
    assert!(last.train_loss.is_finite());
    for file in [
        "metrics.csv",
        "report.json",
        "curves.png",
        "per_class.png",
        "model.onnx",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");

    // The deployed model, evaluated independently in ONNX Runtime with the
    // normalisation it records, scores exactly the reported accuracy.
    let exported = load(&done.model).unwrap().model;
    assert!(
        exported
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .all(|n| n.op_type() != "SoftmaxCrossEntropyLoss"),
        "model.onnx still holds the loss"
    );
    let mut classifier = Classifier::new(&exported, None, Device::Cpu).unwrap();
    let test = limit(
        data::load(&fashion_mnist(), Split::Test).unwrap(),
        Some(2000),
        seed,
    )
    .unwrap();
    let preprocess = Preprocess {
        augment: ldam_onnx::train::batches::Augment::None,
        normalization: recorded_normalization(&exported).unwrap(),
        seed,
    };
    assert!(preprocess.normalization.is_some());
    let evaluation = evaluate(&test, &preprocess, 500, 10, |b| classifier.predict(b)).unwrap();
    assert_eq!(evaluation.top1(), done.report.top1);
    assert_eq!(evaluation.confusion(), done.report.confusion.as_slice());

    // The report says which counts it grouped by and how the run was set up.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["settings"]["epochs"], 5);
    assert_eq!(report["settings"]["resolved"]["drw_epoch"], 3);
    let counts: Vec<u64> = serde_json::from_value(report["class_counts"]["train"].clone()).unwrap();
    assert_eq!(counts, subset_counts(Some(train_limit), seed));
}

/// Settings for the resume tests: the MLP on all 60000 images, so an epoch lasts
/// long enough to be interrupted.
fn resume_settings(tmp: &Path, epochs: usize) -> TrainSettings {
    let model = patched("mlp", subset_counts(None, 0), Reweight::Drw, 2, tmp);
    let mut settings = TrainSettings::new(model, fashion_mnist(), fashion_mnist());
    settings.recipe.epochs = epochs;
    settings.test_limit = Some(1000);
    settings.recipe.seed = 5;
    settings.recipe.lr = 0.05;
    settings
}

fn assert_same_state(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.progress.epoch, b.progress.epoch);
    let mut names: Vec<&String> = a.state.keys().collect();
    names.sort();
    assert_eq!(names.len(), b.state.len());
    for name in names {
        let (x, y) = (
            f32_values(&a.state[name]).unwrap(),
            f32_values(&b.state[name]),
        );
        let y = y.unwrap_or_else(|| panic!("{name} missing after resume"));
        let same = x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "state tensor {name} differs after resuming");
    }
    let strip = |c: &Checkpoint| -> Vec<(f64, f64, Option<f64>)> {
        c.progress
            .records
            .iter()
            .map(|r| (r.train_loss, r.train_acc, r.test_acc))
            .collect()
    };
    assert_eq!(strip(a), strip(b), "per-epoch records differ");
}

fn ldam_onnx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
}

fn cli_args(settings: &TrainSettings, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "train".into(),
        settings.model.display().to_string(),
        "--train".into(),
        FASHION_MNIST.into(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    for (flag, value) in [
        ("--epochs", settings.recipe.epochs.to_string()),
        ("--test-limit", "1000".to_string()),
        ("--seed", settings.recipe.seed.to_string()),
        ("--lr", settings.recipe.lr.to_string()),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    args
}

/// Waits until `run_dir` holds a checkpoint past `epoch` epochs or `batch`
/// batches into the first, and the process is still running.
fn wait_for_progress(child: &mut std::process::Child, run_dir: &Path, epochs_done: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        if let Ok(c) = Checkpoint::load(run_dir) {
            if c.progress.epoch >= epochs_done {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no progress within 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_run_resumes_to_exactly_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let epochs = 4;
    let settings = resume_settings(tmp.path(), epochs);

    let whole = tmp.path().join("whole");
    finished(run::start(settings.clone(), &whole, &RunOptions::default()).unwrap());

    let killed = tmp.path().join("killed");
    let mut child = ldam_onnx()
        .args(cli_args(&settings, &killed))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_progress(&mut child, &killed, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = Checkpoint::load(&killed).unwrap();
    assert!(
        at_kill.progress.epoch < epochs,
        "killed after the run had finished"
    );
    assert!(!killed.join("model.onnx").exists());

    // The resumed run starts at the checkpoint's epoch (a restart from scratch
    // would end with the same weights, so only this shows it), and ends where
    // the uninterrupted run did.
    assert_eq!(
        at_kill.progress.batch, 0,
        "a killed run keeps epoch-end checkpoints"
    );
    assert!(at_kill.progress.epoch >= 1);
    assert_eq!(at_kill.progress.records.len(), at_kill.progress.epoch);
    let output = ldam_onnx()
        .args(["train", "--resume"])
        .arg(&killed)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let resuming = format!(
        "resuming at epoch {}, batch 0\n",
        at_kill.progress.epoch + 1
    );
    assert!(
        stderr.contains(&resuming),
        "expected {resuming:?} in: {stderr}"
    );
    assert_same_state(
        &Checkpoint::load(&whole).unwrap(),
        &Checkpoint::load(&killed).unwrap(),
    );
    let model_bytes = |dir: &Path| std::fs::read(dir.join("model.onnx")).unwrap();
    assert_eq!(model_bytes(&whole), model_bytes(&killed));
}

#[test]
fn ctrl_c_saves_a_mid_epoch_checkpoint_and_resume_matches_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let epochs = 2;
    let settings = resume_settings(tmp.path(), epochs);

    let whole = tmp.path().join("whole");
    finished(run::start(settings.clone(), &whole, &RunOptions::default()).unwrap());

    // In-process interrupt: the flag a Ctrl-C handler sets, raised before the
    // first step, stops after one step with a checkpoint at batch 1.
    let stopped = tmp.path().join("stopped");
    let options = RunOptions::default();
    options
        .interrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    match run::start(settings.clone(), &stopped, &options).unwrap() {
        Outcome::Interrupted { epoch, batch } => assert_eq!((epoch, batch), (0, 1)),
        other => panic!("expected an interruption, got {other:?}"),
    }
    let at_stop = Checkpoint::load(&stopped).unwrap();
    assert_eq!((at_stop.progress.epoch, at_stop.progress.batch), (0, 1));
    assert_eq!(at_stop.progress.partial.seen, 128);

    // Resuming with the flag raised again trains exactly one more step from the
    // saved position: batch 2 of epoch 0, 256 examples seen. A resume that
    // restarted at (0, 0), with or without the saved weights, would stop at
    // batch 1, which only a check of the position can tell apart.
    match run::resume(&stopped, &options).unwrap() {
        Outcome::Interrupted { epoch, batch } => assert_eq!((epoch, batch), (0, 2)),
        other => panic!("expected an interruption, got {other:?}"),
    }
    let at_second_stop = Checkpoint::load(&stopped).unwrap();
    assert_eq!(
        (at_second_stop.progress.epoch, at_second_stop.progress.batch),
        (0, 2)
    );
    assert_eq!(at_second_stop.progress.partial.seen, 256);
    assert!(at_second_stop.progress.records.is_empty());
    assert!(
        at_second_stop.progress.partial.loss_sum > at_stop.progress.partial.loss_sum,
        "the second step's loss is added to the first's"
    );
    assert!(
        at_stop
            .state
            .iter()
            .any(|(name, t)| f32_values(t) != f32_values(&at_second_stop.state[name])),
        "the resumed step changed the weights"
    );

    // A real SIGINT to the CLI: exit code 130 and a resumable checkpoint.
    let resumed = tmp.path().join("sigint");
    let mut child = ldam_onnx()
        .args(cli_args(&settings, &resumed))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_progress(&mut child, &resumed, 0);
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    // The position the CLI reports is the checkpoint's, and at least one step
    // (the one in flight at the signal) was trained.
    let at_sigint = Checkpoint::load(&resumed).unwrap();
    let (epoch, batch) = (at_sigint.progress.epoch, at_sigint.progress.batch);
    assert!((epoch, batch) != (0, 0), "stopped before any step");
    assert!(epoch < epochs, "the run finished before the signal");
    assert_eq!(at_sigint.progress.records.len(), epoch);
    assert_eq!(at_sigint.progress.partial.seen, 128 * batch as u64);
    let stopped_at = format!("stopped at epoch {}, batch {batch};", epoch + 1);
    assert!(
        stderr.contains(&stopped_at),
        "expected {stopped_at:?} in: {stderr}"
    );

    // The CLI resumes at exactly that position and ends where the uninterrupted
    // run did.
    let output = ldam_onnx()
        .args(["train", "--resume"])
        .arg(&resumed)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let resuming = format!("resuming at epoch {}, batch {batch}\n", epoch + 1);
    assert!(
        stderr.contains(&resuming),
        "expected {resuming:?} in: {stderr}"
    );

    finished(run::resume(&stopped, &RunOptions::default()).unwrap());
    for dir in [&stopped, &resumed] {
        assert_same_state(
            &Checkpoint::load(&whole).unwrap(),
            &Checkpoint::load(dir).unwrap(),
        );
    }
}

/// Settings whose loss turns non-finite at a known step: 2000 images (16 batches
/// of 128, the last of 80) per epoch, the first epoch at lr 0.05 with no warm-up,
/// then the rate times 1e300. That rate, 5e298, exceeds float32's range, so the
/// trainer's float32 rate is infinite from the second epoch on. Step 1 of epoch 2
/// still reports the loss of the first epoch's finite weights (the loss is
/// computed before the update), and its update `w - inf * v` makes every weight
/// with a nonzero momentum entry infinite (weight decay alone puts `2e-4 w` in
/// each), so step 2 of epoch 2 sums infinities of both signs or multiplies them
/// by zero, and its loss is the first non-finite one.
fn explode_in_epoch_2_settings(tmp: &Path) -> TrainSettings {
    let mut settings = resume_settings(tmp, 2);
    settings.train_limit = Some(2000);
    settings.recipe.allow_count_mismatch = true;
    settings.recipe.lr = 0.05;
    settings.recipe.warmup_epochs = Some(0);
    settings.recipe.lr_steps = Some(vec![1]);
    settings.recipe.lr_factor = 1e300;
    assert!(settings.recipe.schedule().lr_at(0) == 0.05);
    assert!(settings.recipe.schedule().lr_at(1) as f32 == f32::INFINITY);
    settings
}

#[test]
fn non_finite_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = explode_in_epoch_2_settings(tmp.path());
    let out = tmp.path().join("nan");
    let error = run::start(settings.clone(), &out, &RunOptions::default())
        .unwrap_err()
        .to_string();
    // 1-based, as the message reads: epoch 2 (index 1), step 2.
    assert!(error.contains("at epoch 2, step 2 ("), "{error}");
    assert!(error.contains("checkpoint"), "{error}");

    // The kept checkpoint is the last good one: the end of epoch 1, after its 16
    // good steps, bit for bit the checkpoint of the same run stopped after one
    // epoch, with that epoch's record.
    let kept = Checkpoint::load(&out).unwrap();
    assert_eq!((kept.progress.epoch, kept.progress.batch), (1, 0));
    assert_eq!(kept.progress.partial.seen, 0);
    assert_eq!(kept.progress.records.len(), 1);
    let record = &kept.progress.records[0];
    assert!(
        record.train_loss.is_finite() && record.test_acc.is_some(),
        "{record:?}"
    );
    for tensor in kept.state.values() {
        assert!(f32_values(tensor).unwrap().iter().all(|v| v.is_finite()));
    }
    let one_epoch = tmp.path().join("one-epoch");
    let mut first_epoch_only = settings;
    first_epoch_only.recipe.epochs = 1;
    finished(run::start(first_epoch_only, &one_epoch, &RunOptions::default()).unwrap());
    assert_same_state(&Checkpoint::load(&one_epoch).unwrap(), &kept);
}

/// The error's description of the kept checkpoint is the file's position, not
/// the in-memory count of good steps in the epoch (checkpoints are written at
/// epoch ends: after one good step of epoch 2 the file holds epoch 2, batch 0).
#[test]
fn non_finite_loss_error_names_the_position_of_the_kept_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nan");
    let error = run::start(
        explode_in_epoch_2_settings(tmp.path()),
        &out,
        &RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    let kept = Checkpoint::load(&out).unwrap();
    let position = format!(
        "(epoch {}, batch {})",
        kept.progress.epoch + 1,
        kept.progress.batch
    );
    assert_eq!(position, "(epoch 2, batch 0)");
    assert!(error.contains(&position), "expected {position} in: {error}");
}

#[test]
fn unusable_output_folder_and_count_mismatch_fail_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = resume_settings(tmp.path(), 1);

    // --out below a regular file cannot be created.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let started = Instant::now();
    let error = run::start(settings.clone(), &file.join("run"), &RunOptions::default())
        .unwrap_err()
        .naming_settings(SettingNames::Flags);
    assert!(error.contains("--out"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(60));

    // Counts patched for another training set.
    let mut other = settings.clone();
    other.train_limit = Some(1000);
    let error = run::start(other.clone(), &tmp.path().join("m"), &RunOptions::default())
        .unwrap_err()
        .naming_settings(SettingNames::Flags);
    assert!(error.contains("--allow-count-mismatch"), "{error}");
    assert!(error.contains("--class-counts"), "{error}");

    // A folder holding a run is not silently reused.
    let out = tmp.path().join("once");
    let mut quick = other;
    quick.recipe.allow_count_mismatch = true;
    finished(run::start(quick.clone(), &out, &RunOptions::default()).unwrap());
    let error = run::start(quick, &out, &RunOptions::default())
        .unwrap_err()
        .naming_settings(SettingNames::Flags);
    assert!(error.contains("--resume"), "{error}");
}

#[test]
fn long_tailed_fashion_mnist_has_the_reference_counts() {
    // The CLI error for an unpatched-count model states the long-tail counts it
    // built: ratio 100 over 6000 images per class, exp profile.
    let tmp = tempfile::tempdir().unwrap();
    let model = patched("mlp", vec![1; 10], Reweight::Drw, 160, tmp.path());
    let output = ldam_onnx()
        .args(["train"])
        .arg(&model)
        .args([
            "--train",
            FASHION_MNIST,
            "--imbalance-ratio",
            "100",
            "--out",
        ])
        .arg(tmp.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    // The paper's profile, computed here: floor(6000 * 100^(-i / 9)).
    let expected: Vec<String> = (0..10)
        .map(|i| ((6000.0 * 100f64.powf(-(i as f64) / 9.0)).floor() as u64).to_string())
        .collect();
    let expected = format!("--class-counts {}", expected.join(","));
    assert!(stderr.contains(&expected), "expected {expected}: {stderr}");
}
