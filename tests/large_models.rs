//! Models past the inline limit (protobuf cannot hold one of 2 GiB or more), at
//! small sizes: the limit is lowered (`SaveOptions`, `SessionOptions`,
//! `Checkpoint::save_with_limit`, or `LDAM_INLINE_LIMIT` for the binary) so that
//! the bundled MLP takes the paths a large model takes. Each path must give the
//! numbers the inline one gives, bit for bit. `benches/large_model.sh` runs the
//! same flow on a model above 2 GiB.

mod common;

use common::{run, run_session, Data, Rng};
use ldam_onnx::backend::{create_trainer, Backend, Batch, Device};
use ldam_onnx::compile::CompileOptions;
use ldam_onnx::ldam::LossConfig;
use ldam_onnx::onnx::io::{self, SaveOptions};
use ldam_onnx::onnx::tensor::{f32_tensor, is_external};
use ldam_onnx::onnx::TensorProto;
use ldam_onnx::runtime::{ModelSource, SessionOptions};
use ldam_onnx::train::checkpoint::{Checkpoint, EpochTotals, Progress};
use ndarray::{Array1, Array4};
use ndarray_npy::NpzWriter;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Training counts of the CLI runs: 10 classes, 60 examples.
const COUNTS: [u64; 10] = [12, 10, 8, 7, 6, 5, 4, 3, 3, 2];
/// Below every MLP weight matrix and above its biases and shape constants.
const SMALL_LIMIT: u64 = 1024;

/// Tests that build sessions through staged files, one at a time, so that the
/// check for leftover staging folders sees only its own.
static STAGING: Mutex<()> = Mutex::new(());

fn mlp() -> ldam_onnx::onnx::ModelProto {
    common::bundled("mlp")
}

fn input(seed: u64, batch: i64) -> Data {
    Data::F32(
        vec![batch, 1, 28, 28],
        Rng::new(seed).floats((batch * 28 * 28) as usize, -1.0, 1.0),
    )
}

/// The staging folders (`.ldam-onnx-session.*`) in the temporary folder.
fn staging_folders() -> BTreeSet<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .expect("the temporary folder is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".ldam-onnx-session."))
        })
        .collect()
}

#[test]
fn a_session_of_an_in_memory_model_past_the_inline_limit_computes_what_the_inline_one_does() {
    let _one_at_a_time = STAGING.lock().unwrap_or_else(|e| e.into_inner());
    let model = mlp();
    let before = staging_folders();
    let options = SessionOptions {
        inline_limit: Some(SMALL_LIMIT),
        ..SessionOptions::default()
    };
    let mut staged = ldam_onnx::runtime::session(ModelSource::Model(&model), &options)
        .expect("a model past the limit reaches ONNX Runtime through files");
    assert_eq!(
        staging_folders(),
        before,
        "the staged files are removed once the session is built"
    );
    for seed in 0..2 {
        let x = input(seed, 3);
        let staged = run_session(&mut staged, &[("input", x.clone())]);
        let inline = run(&model, &[("input", x)]);
        assert_eq!(staged["logits"].shape(), [3, 10]);
        assert_eq!(
            staged["logits"], inline["logits"],
            "seed {seed}: the staged model's logits are the inline model's"
        );
    }
}

#[test]
fn save_with_data_file_writes_the_named_data_file_and_refuses_a_path_or_the_model_s_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.onnx");
    let small = SaveOptions {
        overwrite: false,
        inline_limit: SMALL_LIMIT,
    };
    io::save_with_data_file(&mlp(), None, &out, "weights.7.data", small).unwrap();
    let files: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from(["model.onnx".to_string(), "weights.7.data".to_string()])
    );
    let loaded = io::load_with_data(&out).unwrap();
    let original = mlp();
    for tensor in &original.graph.as_ref().unwrap().initializer {
        let read = loaded
            .graph()
            .initializer
            .iter()
            .find(|t| t.name() == tensor.name())
            .unwrap();
        assert_eq!(read.raw_data, tensor.raw_data, "'{}'", tensor.name());
    }

    let other = dir.path().join("other.onnx");
    for bad in ["sub/weights.data", "../weights.data", "other.onnx", ""] {
        let error = io::save_with_data_file(&mlp(), None, &other, bad, small)
            .expect_err("a data file outside the folder or over the model is refused");
        assert!(error.to_string().contains("must be a file name"), "{error}");
        assert!(!other.exists(), "nothing is written for '{bad}'");
    }
}

fn checkpoint(seed: u64) -> Checkpoint {
    let mut rng = Rng::new(seed);
    let state: HashMap<String, TensorProto> = [("w", vec![40i64, 30]), ("b", vec![30])]
        .into_iter()
        .map(|(name, dims)| {
            let len = dims.iter().product::<i64>() as usize;
            (
                name.to_string(),
                f32_tensor(name, &dims, &rng.floats(len, -1.0, 1.0)),
            )
        })
        .collect();
    Checkpoint {
        progress: Progress {
            epoch: seed as usize,
            batch: 3,
            partial: EpochTotals::default(),
            records: Vec::new(),
            settings: serde_json::json!({ "seed": seed }),
        },
        state,
    }
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_checkpoint_past_the_limit_gets_a_new_data_file_each_save_and_the_old_ones_go() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    // A data file a killed process left behind, newer than any checkpoint names.
    std::fs::write(run.join("checkpoint.onnx.7.data"), b"left over").unwrap();

    let first = checkpoint(1);
    first.save_with_limit(run, SMALL_LIMIT).unwrap();
    assert_eq!(
        file_names(run),
        ["checkpoint.onnx", "checkpoint.onnx.8.data"],
        "the first data file is numbered past the leftover, which is removed"
    );
    assert_eq!(Checkpoint::load(run).unwrap(), first);
    let saved = io::load(&Checkpoint::path(run)).unwrap();
    let weights = saved
        .graph()
        .initializer
        .iter()
        .find(|t| t.name() == "w")
        .unwrap();
    assert!(
        is_external(weights),
        "the 4.8 KB weight is in the data file"
    );

    let second = checkpoint(2);
    second.save_with_limit(run, SMALL_LIMIT).unwrap();
    assert_eq!(
        file_names(run),
        ["checkpoint.onnx", "checkpoint.onnx.9.data"]
    );
    assert_eq!(Checkpoint::load(run).unwrap(), second);

    // Under the limit again: one file, no data file left.
    let third = checkpoint(3);
    third.save_with_limit(run, u64::MAX).unwrap();
    assert_eq!(file_names(run), ["checkpoint.onnx"]);
    assert_eq!(Checkpoint::load(run).unwrap(), third);
}

#[test]
fn a_state_read_from_the_ort_trainer_keeps_its_values_through_later_steps() {
    let patched = common::patch_with(&mlp(), LossConfig::reference(COUNTS.to_vec()));
    let mut trainer = create_trainer(
        Backend::OnnxRuntime,
        &patched,
        &CompileOptions::default(),
        Device::Cpu,
    )
    .unwrap();
    let batch = |seed: u64| {
        let Data::F32(shape, data) = input(seed, 10) else {
            unreachable!("input() is float32")
        };
        Batch {
            shape,
            data,
            labels: (0..10).collect(),
        }
    };
    trainer.step(&batch(0), 0, 0.1).unwrap();
    let snapshot = trainer.state().unwrap();
    let copied: HashMap<String, Vec<u8>> = snapshot
        .iter()
        .map(|(name, t)| (name.clone(), t.raw_data.clone().unwrap().to_vec()))
        .collect();
    for seed in 1..3 {
        trainer.step(&batch(seed), 0, 0.1).unwrap();
    }
    let later = trainer.state().unwrap();
    let mut changed = 0;
    for (name, tensor) in &snapshot {
        let bytes = tensor.raw_data.as_deref().unwrap();
        assert_eq!(bytes, &copied[name][..], "'{name}' read before the steps");
        changed += usize::from(later[name].raw_data.as_deref().unwrap() != bytes);
    }
    assert!(
        changed >= 2,
        "the steps moved the weights and momentum ({changed} tensors changed)"
    );
}

// ---------------------------------------------------------------------------
// The binary, end to end

fn write_npz(path: &Path, seed: u64, counts: &[u64]) {
    let labels: Vec<i64> = counts
        .iter()
        .enumerate()
        .flat_map(|(class, &n)| std::iter::repeat_n(class as i64, n as usize))
        .collect();
    let n = labels.len();
    let x = Array4::from_shape_vec((n, 1, 28, 28), Rng::new(seed).floats(n * 28 * 28, 0.0, 1.0))
        .unwrap();
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    npz.add_array("x", &x).unwrap();
    npz.add_array("y", &Array1::from_vec(labels)).unwrap();
    npz.finish().unwrap();
}

/// Runs the binary with `LDAM_INLINE_LIMIT` set to `limit` (or unset); returns stdout.
fn ldam(limit: Option<u64>, args: &[&Path]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"));
    command.args(args).env_remove("LDAM_INLINE_LIMIT");
    if let Some(limit) = limit {
        command.env("LDAM_INLINE_LIMIT", limit.to_string());
    }
    let output = command.output().expect("the binary starts");
    assert!(
        output.status.success(),
        "ldam-onnx {args:?} (limit {limit:?}) failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// patch, compile, train one epoch, deploy the checkpoint and evaluate it, in
/// `dir`; returns the deployed model's path and eval's report.
fn cli_flow(dir: &Path, data: &Path, limit: Option<u64>) -> (PathBuf, String) {
    let p = |name: &str| dir.join(name);
    let (train, test) = (data.join("train.npz"), data.join("test.npz"));
    let flag = |s: &'static str| PathBuf::from(s);
    ldam(
        limit,
        &[
            &flag("patch"),
            &common::repo_dir().join("models/mlp.onnx"),
            &flag("--labels-file"),
            &train,
            &flag("-o"),
            &p("mlp.ldam.onnx"),
        ],
    );
    ldam(
        limit,
        &[
            &flag("compile"),
            &p("mlp.ldam.onnx"),
            &flag("-o"),
            &p("mlp.train.onnx"),
        ],
    );
    ldam(
        limit,
        &[
            &flag("train"),
            &p("mlp.ldam.onnx"),
            &flag("--train"),
            &train,
            &flag("--test"),
            &test,
            &flag("--epochs"),
            &flag("1"),
            &flag("--batch-size"),
            &flag("20"),
            &flag("--augment"),
            &flag("none"),
            &flag("--out"),
            &p("run"),
            &flag("--quiet"),
        ],
    );
    ldam(
        limit,
        &[
            &flag("deploy"),
            &p("mlp.train.onnx"),
            &flag("--state"),
            &p("run/checkpoint.onnx"),
            &flag("-o"),
            &p("deployed.onnx"),
        ],
    );
    let report = ldam(
        limit,
        &[&flag("eval"), &p("deployed.onnx"), &flag("--test"), &test],
    );
    (p("deployed.onnx"), report)
}

fn logits_of_file(path: &Path, x: &Data) -> Data {
    let mut session = ldam_onnx::runtime::session_from_file(path).unwrap();
    run_session(&mut session, &[("input", x.clone())])["logits"].clone()
}

#[test]
fn patch_compile_train_deploy_and_eval_past_the_limit_write_data_files_and_match_the_inline_run() {
    let _one_at_a_time = STAGING.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_npz(&data.join("train.npz"), 1, &COUNTS);
    write_npz(&data.join("test.npz"), 2, &[3; 10]);
    let (inline_dir, external_dir) = (root.path().join("inline"), root.path().join("external"));
    std::fs::create_dir(&inline_dir).unwrap();
    std::fs::create_dir(&external_dir).unwrap();
    let before = staging_folders();

    let (inline, inline_report) = cli_flow(&inline_dir, &data, None);
    let (external, external_report) = cli_flow(&external_dir, &data, Some(SMALL_LIMIT));

    let data_files = |dir: &Path| -> Vec<String> {
        file_names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".data"))
            .collect()
    };
    for dir in [&inline_dir, &inline_dir.join("run")] {
        assert_eq!(data_files(dir), Vec::<String>::new(), "{}", dir.display());
    }
    assert_eq!(
        data_files(&external_dir),
        [
            "deployed.onnx.data",
            "mlp.ldam.onnx.data",
            "mlp.train.state.onnx.data"
        ]
    );
    assert_eq!(
        data_files(&external_dir.join("run")),
        // Saved three times (twice at the start, once after the epoch).
        ["checkpoint.onnx.3.data", "model.onnx.data"]
    );
    assert_eq!(
        staging_folders(),
        before,
        "training's evaluation sessions left no staged files"
    );

    // The same training, the same numbers: checkpoint, deployed model, report.
    assert_eq!(
        Checkpoint::load(&external_dir.join("run")).unwrap().state,
        Checkpoint::load(&inline_dir.join("run")).unwrap().state,
        "the checkpoints hold the same state"
    );
    for seed in 0..2 {
        let x = input(seed, 5);
        let deployed = logits_of_file(&external, &x);
        assert_eq!(deployed.shape(), [5, 10]);
        assert_eq!(deployed, logits_of_file(&inline, &x), "seed {seed}");
        assert_eq!(
            deployed,
            logits_of_file(&external_dir.join("run/model.onnx"), &x),
            "seed {seed}: deploy gives train's own model.onnx"
        );
    }
    assert_eq!(external_report, inline_report);
    assert!(
        external_report.contains("on 30 test examples"),
        "{external_report}"
    );
}

#[test]
fn the_binary_refuses_an_inline_limit_that_is_not_a_number() {
    let output = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(["inspect", "models/mlp.onnx"])
        .current_dir(common::repo_dir())
        .env("LDAM_INLINE_LIMIT", "1GiB")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LDAM_INLINE_LIMIT=1GiB: not a number of bytes"),
        "{stderr}"
    );
}
