//! The `ldam-onnx` binary on bad input: every failure exits non-zero with exactly
//! one `error: ...` line on stderr that names the problem, and leaves no output
//! file (nor a stray temporary file) behind.

mod common;

use common::{logits_model, model_from_graph, node, Rng};
use ldam_onnx::onnx::tensor::FLOAT;
use ldam_onnx::onnx::types::{value_info, Dim};
use ldam_onnx::onnx::{io, GraphProto, ModelProto};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

const MLP_COUNTS: &str = "5000,2997,1796,1077,645,387,232,139,83,50";

fn mlp_path() -> PathBuf {
    common::repo_dir().join("models/mlp.onnx")
}

/// Runs the binary with `args`, working directory `cwd`.
fn ldam(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ldam-onnx"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary starts")
}

/// Every entry of `dir` (recursively), relative to it.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            out.insert(path.strip_prefix(root).unwrap().to_path_buf());
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

/// A working folder and the files it held before the command under test.
struct Scene {
    dir: TempDir,
}

impl Scene {
    fn new() -> Self {
        Scene {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write test input");
        path
    }
    fn write_model(&self, name: &str, model: &ModelProto) -> PathBuf {
        self.write(name, &io::to_bytes(model))
    }
    fn copy_mlp(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::copy(mlp_path(), &path).expect("copy mlp.onnx");
        path
    }

    /// Runs `patch` with `args` plus `-o output` and checks the failure contract
    /// except for the shape of stderr: exit code 1, `output` not created, and the
    /// folder's contents unchanged (no `.tmp` files left). Returns stderr.
    fn patch_fails_quietly(&self, args: &[&str], output: &Path) -> String {
        let before = listing(self.dir.path());
        let output_existed = output.exists();
        let mut full = vec!["patch"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", output.to_str().unwrap()]);
        let result = ldam(self.dir.path(), &full);
        let stderr = stderr_of(&result);
        assert!(
            !result.status.success(),
            "expected failure for {full:?}, got {:?}; stdout: {}; stderr: {stderr}",
            result.status,
            String::from_utf8_lossy(&result.stdout)
        );
        assert_eq!(
            result.status.code(),
            Some(1),
            "exit code for {full:?}; stderr: {stderr}"
        );
        if !output_existed {
            assert!(
                !output.exists(),
                "{} was created by a failed run",
                output.display()
            );
        }
        let after = listing(self.dir.path());
        let stray: Vec<_> = after
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
        assert_eq!(after, before, "a failed run changed the folder's contents");
        stderr
    }

    /// [`Self::patch_fails_quietly`], and stderr is exactly one line starting with
    /// `error: ` that contains every `needle`. Returns that line.
    fn patch_fails(&self, args: &[&str], output: &Path, needles: &[&str]) -> String {
        let stderr = self.patch_fails_quietly(args, output);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "stderr should be exactly one line for {args:?}, got: {stderr:?}"
        );
        assert!(
            stderr.ends_with('\n'),
            "stderr line is terminated: {stderr:?}"
        );
        let line = lines[0];
        assert!(
            line.starts_with("error: "),
            "stderr line starts with 'error: ': {line:?}"
        );
        for needle in needles {
            assert!(
                line.contains(needle),
                "error line should mention {needle:?}: {line:?}"
            );
        }
        line.to_string()
    }
}

#[test]
fn missing_model_file_is_reported_by_name() {
    let s = Scene::new();
    let model = s.path("no_such_model.onnx");
    let line = s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &s.path("out.onnx"),
        &["no_such_model.onnx"],
    );
    assert!(
        line.to_lowercase().contains("no such file"),
        "names the cause: {line}"
    );
}

#[test]
fn empty_file_is_not_an_onnx_model() {
    let s = Scene::new();
    let model = s.write("empty.onnx", b"");
    s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &s.path("out.onnx"),
        &["empty.onnx", "not a valid ONNX model", "empty"],
    );
}

#[test]
fn random_bytes_are_not_an_onnx_model() {
    let s = Scene::new();
    for seed in 0..4u64 {
        let mut rng = Rng::new(seed);
        let bytes: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
        let name = format!("noise{seed}.onnx");
        let model = s.write(&name, &bytes);
        s.patch_fails(
            &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
            &s.path("out.onnx"),
            &[&name, "not a valid ONNX model"],
        );
    }
}

#[test]
fn truncated_model_is_reported_as_truncated() {
    let s = Scene::new();
    let bytes = std::fs::read(mlp_path()).unwrap();
    let model = s.write("half.onnx", &bytes[..bytes.len() / 2]);
    s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &s.path("out.onnx"),
        &["half.onnx", "not a valid ONNX model", "truncated"],
    );
}

#[test]
fn class_count_list_of_wrong_length_names_flag_and_class_count() {
    let s = Scene::new();
    let model = s.copy_mlp("mlp.onnx");
    s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", "1,2,3"],
        &s.path("out.onnx"),
        &["--class-counts", "3 class counts", "10 classes"],
    );
}

#[test]
fn zero_class_count_is_rejected_with_its_class() {
    let s = Scene::new();
    let model = s.copy_mlp("mlp.onnx");
    s.patch_fails(
        &[
            model.to_str().unwrap(),
            "--class-counts",
            "5000,2997,1796,0,645,387,232,139,83,50",
        ],
        &s.path("out.onnx"),
        &["--class-counts", "class 3", "count of 0"],
    );
}

#[test]
fn negative_class_count_is_rejected_with_its_value() {
    let s = Scene::new();
    let model = s.copy_mlp("mlp.onnx");
    s.patch_fails(
        &[
            model.to_str().unwrap(),
            "--class-counts=5000,2997,1796,1077,-645,387,232,139,83,50",
        ],
        &s.path("out.onnx"),
        &["--class-counts", "class 4", "negative", "-645"],
    );
}

#[test]
fn model_without_rank2_float_output_lists_its_outputs() {
    let s = Scene::new();
    let dims = |c| {
        vec![
            Dim::Symbolic("N".into()),
            Dim::Fixed(c),
            Dim::Fixed(4),
            Dim::Fixed(4),
        ]
    };
    let graph = GraphProto {
        name: Some("feature_map".into()),
        node: vec![node("Relu", &["x"], &["feature_map"], vec![])],
        input: vec![value_info("x", FLOAT, &dims(3))],
        output: vec![value_info("feature_map", FLOAT, &dims(3))],
        ..Default::default()
    };
    let model = s.path("rank4.onnx");
    io::save(
        &model_from_graph(graph, 17),
        None,
        &model,
        Default::default(),
    )
    .expect("save rank-4 model");
    s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", "1,2"],
        &s.path("out.onnx"),
        &["rank4.onnx", "rank 2", "'feature_map'"],
    );
}

#[test]
fn existing_value_named_labels_asks_for_labels_name_flag() {
    let s = Scene::new();
    let mut model = logits_model(10, 17);
    // z -> labels -> scores: an intermediate value already called `labels`.
    model.graph.as_mut().unwrap().node = vec![
        node("Identity", &["z"], &["labels"], vec![]),
        node("Identity", &["labels"], &["scores"], vec![]),
    ];
    let model = s.write_model("clash.onnx", &model);
    s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &s.path("out.onnx"),
        &["clash.onnx", "'labels'", "--labels-name"],
    );
}

#[test]
fn patching_an_already_patched_model_is_refused() {
    let s = Scene::new();
    let model = s.copy_mlp("mlp.onnx");
    let once = s.path("once.onnx");
    let first = ldam(
        s.dir.path(),
        &[
            "patch",
            model.to_str().unwrap(),
            "--class-counts",
            MLP_COUNTS,
            "-o",
            once.to_str().unwrap(),
        ],
    );
    assert!(first.status.success(), "first patch: {}", stderr_of(&first));
    s.patch_fails(
        &[once.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &s.path("twice.onnx"),
        &["once.onnx", "already patched"],
    );
}

#[test]
fn opset_11_model_is_refused_with_a_reexport_hint() {
    let s = Scene::new();
    let model = s.write_model("old.onnx", &logits_model(10, 11));
    s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &s.path("out.onnx"),
        &["old.onnx", "opset 11", "re-export"],
    );
}

#[test]
fn existing_output_is_kept_without_force_and_replaced_with_force() {
    let s = Scene::new();
    let model = s.copy_mlp("mlp.onnx");
    let out = s.write("taken.onnx", b"precious");
    s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &out,
        &["taken.onnx", "--force"],
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"precious",
        "the existing file is untouched"
    );

    let forced = ldam(
        s.dir.path(),
        &[
            "patch",
            model.to_str().unwrap(),
            "--class-counts",
            MLP_COUNTS,
            "-o",
            out.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(forced.status.success(), "--force: {}", stderr_of(&forced));
    let patched = io::load(&out).expect("the replaced output is a model");
    assert!(ldam_onnx::patch::metadata::is_patched(&patched.model));
    let stray: Vec<_> = listing(s.dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
}

#[test]
fn head_cosine_without_linear_layer_names_the_logits() {
    let s = Scene::new();
    let model = s.write_model("identity.onnx", &logits_model(10, 17));
    s.patch_fails(
        &[
            model.to_str().unwrap(),
            "--class-counts",
            MLP_COUNTS,
            "--head",
            "cosine",
        ],
        &s.path("out.onnx"),
        &["identity.onnx", "--head cosine", "'scores'"],
    );
}

#[test]
fn output_in_missing_folder_fails_without_leaving_files() {
    let s = Scene::new();
    let model = s.copy_mlp("mlp.onnx");
    let out = s.path("no_such_dir/out.onnx");
    let stderr = s.patch_fails_quietly(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &out,
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("no_such_dir"),
        "last line is the error: {stderr:?}"
    );
    assert!(
        !s.path("no_such_dir").exists(),
        "the missing folder is not created"
    );
}

#[test]
fn output_in_missing_folder_gives_exactly_one_stderr_line() {
    let s = Scene::new();
    let model = s.copy_mlp("mlp.onnx");
    let out = s.path("no_such_dir/out.onnx");
    s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &out,
        &["no_such_dir"],
    );
}

#[test]
fn missing_model_file_error_states_its_cause_once() {
    let s = Scene::new();
    let model = s.path("no_such_model.onnx");
    let line = s.patch_fails(
        &[model.to_str().unwrap(), "--class-counts", MLP_COUNTS],
        &s.path("out.onnx"),
        &["no_such_model.onnx"],
    );
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "cause repeated: {line}"
    );
}

#[test]
fn patch_help_exits_zero_and_documents_class_counts() {
    let s = Scene::new();
    let result = ldam(s.dir.path(), &["patch", "--help"]);
    assert!(result.status.success(), "patch --help: {:?}", result.status);
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert!(
        stdout.contains("--class-counts"),
        "help mentions --class-counts:\n{stdout}"
    );
}

#[test]
fn patch_with_default_output_writes_stem_ldam_onnx_and_keeps_input() {
    let s = Scene::new();
    let model = s.copy_mlp("net.onnx");
    let original = std::fs::read(&model).unwrap();
    let result = ldam(
        s.dir.path(),
        &[
            "patch",
            model.to_str().unwrap(),
            "--class-counts",
            MLP_COUNTS,
        ],
    );
    assert!(result.status.success(), "patch: {}", stderr_of(&result));
    let out = s.path("net.ldam.onnx");
    assert!(out.is_file(), "default output {} exists", out.display());
    assert_eq!(
        std::fs::read(&model).unwrap(),
        original,
        "the input is byte-identical"
    );
    let files = listing(s.dir.path());
    let expected: BTreeSet<PathBuf> = ["net.onnx", "net.ldam.onnx"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(
        files, expected,
        "exactly the input and the output, no temporary or data files"
    );
    let patched = io::load(&out).expect("the output loads");
    assert!(ldam_onnx::patch::metadata::is_patched(&patched.model));
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert!(
        stdout.contains("net.ldam.onnx"),
        "stdout names the output: {stdout}"
    );
}
