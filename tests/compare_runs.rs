//! `ldam-onnx compare`: the table of several runs' reports and the per-class
//! plot over classes sorted by training count.

use ldam_onnx::train::compare;
use ldam_onnx::train::metrics::Evaluation;
use ldam_onnx::train::report::{write_report_json, Report};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A run folder whose report has `confusion` and training counts `train`.
fn run_dir(root: &Path, name: &str, confusion: Vec<Vec<u64>>, train: &[u64]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let evaluation = Evaluation::from_confusion(confusion).unwrap();
    let settings = serde_json::json!({ "resolved": { "class_names": ["cat", "dog", "eel"] } });
    let report = Report::new(&evaluation, train, settings, "test").unwrap();
    write_report_json(&dir, &report).unwrap();
    dir
}

#[test]
fn compare_prints_the_papers_table_and_plots_classes_by_training_count() {
    let tmp = tempfile::tempdir().unwrap();
    // Training counts: eel (2) is few-shot, dog (50) medium, cat (500) many.
    let train = [500, 50, 2];
    let erm = run_dir(
        tmp.path(),
        "erm",
        vec![vec![10, 0, 0], vec![5, 5, 0], vec![10, 0, 0]],
        &train,
    );
    let ldam = run_dir(
        tmp.path(),
        "ldam-drw",
        vec![vec![9, 1, 0], vec![2, 8, 0], vec![4, 0, 6]],
        &train,
    );
    let runs: Vec<compare::Run> = [&erm, &ldam]
        .iter()
        .map(|p| compare::read_run(p).unwrap())
        .collect();
    // ERM: 15 of 30 right (error 50%); LDAM-DRW: 23 of 30 (error 23.33%).
    let table = compare::table(&runs);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[1],
        ["erm", "50.00", "0.00", "50.00", "100.00"],
        "{table}"
    );
    assert_eq!(
        rows[2],
        ["ldam-drw", "23.33", "10.00", "20.00", "40.00"],
        "{table}"
    );
    assert_eq!(compare::order_by_training_count(&runs), vec![0, 1, 2]);
    assert_eq!(runs[1].report.per_class[2].name, "eel");

    // The command line: the same table, and the plot.
    let png = tmp.path().join("compare.png");
    let output = Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .arg("compare")
        .arg(&erm)
        .arg(ldam.join("report.json"))
        .arg("--plot")
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(table.lines().nth(1).unwrap()), "{stdout}");
    let (width, height) = image::image_dimensions(&png).unwrap();
    assert_eq!((width, height), (1000, 650));

    // Runs on other classes are not compared.
    let other = run_dir(tmp.path(), "other", vec![vec![1, 0], vec![0, 1]], &[5, 5]);
    let mixed = vec![runs[0].clone(), compare::read_run(&other).unwrap()];
    let err = compare::check_same_classes(&mixed).unwrap_err().to_string();
    assert!(err.contains("other has 2 classes, but erm has 3"), "{err}");
    let missing = compare::read_run(&tmp.path().join("nothing")).unwrap_err();
    assert!(
        missing.to_string().contains("nothing: No such file"),
        "{missing}"
    );
}
