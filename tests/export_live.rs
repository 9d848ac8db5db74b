//! A user's first minutes, live: a CNN with BatchNorm exported by torch 2.13
//! with nothing but its defaults (external data, batch fixed at 4, BatchNorm
//! folded) and with `export_for_training`, then `inspect`, `patch`, `compile`,
//! `train` and `eval` from the command line on Fashion-MNIST. Needs the
//! exporters' Python environment (`bash .ci/deps-export.sh`) and the data
//! (`bash .ci/deps.sh`), as the README's test command installs them.

mod common;

use common::cli::{assert_eval_reproduces_the_report, ldam_ok};

use ldam_onnx::onnx::io;
use ldam_onnx::onnx::types::{tensor_type, Dim};
use std::path::{Path, PathBuf};
use std::process::Command;

const COUNTS: &str = "6000,3596,2156,1292,774,464,278,166,100,60";
const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

fn python() -> PathBuf {
    let python = common::repo_dir().join(".deps/py-export/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash .ci/deps-export.sh` (the README's test command does)",
        python.display()
    );
    python
}

fn export(dir: &Path) {
    let status = Command::new(python())
        .arg(common::repo_dir().join("tests/exports/live.py"))
        .arg(dir)
        .status()
        .expect("python starts");
    assert!(status.success(), "tests/exports/live.py failed");
}

fn op_count(path: &Path, op: &str) -> usize {
    io::load(path)
        .unwrap()
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type() == op)
        .count()
}

#[test]
fn torch_defaults_and_export_for_training_patch_compile_train_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    export(d);
    let p = |name: &str| d.join(name).display().to_string();

    // The default export: what inspect says about it.
    assert!(
        d.join("default.onnx.data").exists(),
        "external data written"
    );
    let inspect = ldam_ok(&["inspect", &p("default.onnx")]);
    for needle in [
        "external data:",
        "fixes the batch at 4",
        "none in a network with 2 convolutions",
        "export_for_training",
    ] {
        assert!(
            inspect.contains(needle),
            "inspect says {needle:?}:\n{inspect}"
        );
    }

    // patch frees the batch and warns about the folded BatchNorm.
    let patched = ldam_ok(&[
        "patch",
        &p("default.onnx"),
        "--class-counts",
        COUNTS,
        "-o",
        &p("default.ldam.onnx"),
    ]);
    assert!(patched.contains("now symbolic 'batch'"), "{patched}");
    assert!(patched.contains("warning: normalisation"), "{patched}");
    let model = io::load(&d.join("default.ldam.onnx")).unwrap();
    let input = &model.graph().input[0];
    assert_eq!(
        tensor_type(input).unwrap().shape.unwrap()[0],
        Dim::Symbolic("batch".into())
    );
    ldam_ok(&[
        "compile",
        &p("default.ldam.onnx"),
        "-o",
        &p("default.train.onnx"),
    ]);

    // One short epoch at batch 32 (not the export's 4), then the deployed model.
    let train = |model: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            model,
            "--train",
            FASHION_MNIST,
            "--imbalance-ratio",
            "100",
            "--train-limit",
            "3000",
            "--test-limit",
            "300",
            "--allow-count-mismatch",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--quiet",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        ldam_ok(&args)
    };
    train(&p("default.ldam.onnx"), &p("run-default"), &[]);
    let eval = ldam_ok(&[
        "eval",
        &p("run-default/model.onnx"),
        "--test",
        FASHION_MNIST,
        "--test-limit",
        "300",
    ]);
    assert!(eval.contains("top-1"), "{eval}");

    // export_for_training keeps BatchNorm in training mode and the batch free.
    let trainable = d.join("trainable.onnx");
    assert_eq!(op_count(&trainable, "BatchNormalization"), 2);
    assert_eq!(op_count(&d.join("default.onnx"), "BatchNormalization"), 0);
    let inspect = ldam_ok(&["inspect", &p("trainable.onnx")]);
    assert!(
        inspect.contains("2 BatchNormalization in training mode"),
        "{inspect}"
    );
    assert!(!inspect.contains("warning"), "{inspect}");
    ldam_ok(&[
        "patch",
        &p("trainable.onnx"),
        "--class-counts",
        COUNTS,
        "-o",
        &p("trainable.ldam.onnx"),
    ]);
    train(&p("trainable.ldam.onnx"), &p("run-trainable"), &[]);
    // The deployed model, evaluated on its own, gives the accuracy the run
    // reported (its BatchNorm now on the running statistics the step kept).
    assert_eval_reproduces_the_report(
        &d.join("run-trainable"),
        &["--test", FASHION_MNIST, "--test-limit", "300"],
    );
}

/// A graph that mixes examples across the fixed batch is refused up front:
/// one `error:` line naming the file, the node and the export argument, exit
/// 1, and no output file.
#[test]
fn an_export_that_pins_its_batch_is_refused_with_one_line_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::repo_dir().join("tests/exports/convnext__dynamo.onnx");
    let out = dir.path().join("convnext.ldam.onnx");
    let output = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args([
            "patch",
            &source.display().to_string(),
            "--class-counts",
            "5,4,3,2,1",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for needle in ["convnext__dynamo.onnx", "node_as_strided", "dynamic_shapes"] {
        assert!(errors[0].contains(needle), "{needle:?} in {stderr}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}
