//! Running the built `ldam-onnx` from integration tests (only they know its
//! path: `CARGO_BIN_EXE_ldam-onnx`).

use std::path::Path;
use std::process::Command;

/// Runs the binary; returns (success, stdout + stderr).
pub fn ldam(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(args)
        .output()
        .expect("the binary starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs the binary, failing the test unless it succeeds; returns its output.
pub fn ldam_ok(args: &[&str]) -> String {
    let (ok, text) = ldam(args);
    assert!(ok, "ldam-onnx {args:?} failed: {text}");
    text
}

/// `eval` of the model a `train` run deployed (`run/model.onnx`) on `data`
/// (eval's data arguments) prints the top-1 accuracy the run's report.json
/// records: the deployed model is the one that was evaluated.
pub fn assert_eval_reproduces_the_report(run: &Path, data: &[&str]) {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let top1 = report["top1"].as_f64().expect("report.json has top1");
    let model = run.join("model.onnx").display().to_string();
    let mut args = vec!["eval", model.as_str()];
    args.extend_from_slice(data);
    let eval = ldam_ok(&args);
    let printed: f64 = eval
        .split("top-1 accuracy ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("eval prints its top-1: {eval}"));
    assert!(
        (printed - top1).abs() <= 0.01,
        "{}: eval {printed}% against the run's {top1}%",
        run.display()
    );
}
