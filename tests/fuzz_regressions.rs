//! Regression tests for the fuzzer's findings (tests/fuzz/, `examples/fuzz.rs`):
//! each reproduces one distinct panic or abort deterministically and asserts the
//! clean `Err` (or CLI `error:`) that should replace it, with a message naming
//! what is wrong. The seed that found each is in its comment
//! (`cargo run --release --example fuzz -- --replay SEED`); the source
//! locations are where the code was when it was fuzzed (before commit 006f164
//! moved the gradient rules from src/autodiff/rules/ to src/ops/).
//!
//! Inputs that abort the process (a failed allocation) go through the
//! `ldam-onnx` binary under an address-space limit, so that one abort cannot end
//! the other tests.

mod fuzz;

use fuzz::driver::{base_model, catch, reference_counts, Network, Options, Variant};
use fuzz::process::{run_command, ProcessConfig};
use fuzz::supervise::{self, Launcher, RunConfig};
use ldam_onnx::compile::{compile, CompileOptions};
use ldam_onnx::onnx::io;
use ldam_onnx::onnx::{AttributeProto, ModelProto};
use ldam_onnx::patch;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The error `f` returns; fails the test if it panics or succeeds.
fn clean_err<T>(what: &str, f: impl FnOnce() -> ldam_onnx::Result<T>) -> String {
    match catch(f) {
        Ok(Ok(_)) => panic!("{what}: returned Ok, expected an error"),
        Ok(Err(e)) => e.to_string(),
        Err(p) => panic!(
            "{what}: panicked at {}{}: {}",
            p.location,
            p.frame.map(|f| format!(" (from {f})")).unwrap_or_default(),
            p.message
        ),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "the error should name {part:?}: {message}"
        );
    }
}

/// `model` with the named node's attribute set to the given ints (or int).
fn with_attribute(mut model: ModelProto, node: &str, attr: AttributeProto) -> ModelProto {
    let graph = model.graph.as_mut().expect("bundled models have a graph");
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.name() == node)
        .unwrap_or_else(|| panic!("no node '{node}'"));
    node.attribute.retain(|a| a.name() != attr.name());
    node.attribute.push(attr);
    model
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    ldam_onnx::onnx::builder::attr_ints(name, values)
}

fn int(name: &str, value: i64) -> AttributeProto {
    ldam_onnx::onnx::builder::attr_int(name, value)
}

fn patched(model: &ModelProto) -> ModelProto {
    let options = patch::PatchOptions {
        batchnorm: Default::default(),
        config: ldam_onnx::ldam::LossConfig::reference(reference_counts(10)),
        head: patch::HeadMode::Auto,
        logits: None,
        names: patch::ContractNames::default(),
    };
    patch::patch(model, &options)
        .expect("the mutation leaves the model patchable")
        .0
}

/// Runs the built `ldam-onnx` with a 4 GiB address-space limit and a 2-minute
/// time limit; returns its `error:` line, failing on success, a crash or a hang.
fn cli_error(dir: &Path, args: &[&str]) -> String {
    let config = ProcessConfig {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_ldam-onnx")),
        time_limit: Duration::from_secs(120),
        mem_cap: 4 << 30,
        slow: Duration::from_secs(120),
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let run = run_command(&config, dir, &args);
    assert!(!run.timed_out, "ldam-onnx {args:?} still ran after 120 s");
    let status = run.status.expect("the process was waited for");
    assert_eq!(
        status.code(),
        Some(1),
        "ldam-onnx {args:?} should fail with an error, got {status}:\n{}",
        run.stderr.split("stack backtrace:").next().unwrap_or("")
    );
    run.stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no 'error:' line in:\n{}", run.stderr))
        .to_string()
}

/// `model` with dim `axis` of its graph input or output `name` fixed to `value`.
fn with_dim(mut model: ModelProto, name: &str, axis: usize, value: i64) -> ModelProto {
    use ldam_onnx::onnx::proto::{tensor_shape_proto::dimension, type_proto};
    let graph = model.graph.as_mut().expect("bundled models have a graph");
    let info = graph
        .input
        .iter_mut()
        .chain(graph.output.iter_mut())
        .find(|v| v.name() == name)
        .unwrap_or_else(|| panic!("no graph input or output '{name}'"));
    let Some(type_proto::Value::TensorType(tensor)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("'{name}' is not a tensor");
    };
    let shape = tensor.shape.as_mut().expect("bundled models have shapes");
    shape.dim[axis].value = Some(dimension::Value::DimValue(value));
    model
}

fn write_model(dir: &Path, name: &str, model: &ModelProto) {
    std::fs::write(dir.join(name), io::to_bytes(model)).expect("writing the model");
}

// ---------------------------------------------------------------------------
// compile: Conv attributes reach the gradient rules unchecked

/// Seeds 1495, 16195: panicked "attempt to divide by zero" in the Conv weight
/// gradient (src/autodiff/rules/nn.rs:451) for `group = 0`.
#[test]
fn compile_refuses_conv_group_zero_on_the_input_layer() {
    let node = "/features/features.0/Conv";
    let model = with_attribute(
        base_model(Network::Cnn, Variant::Original).clone(),
        node,
        int("group", 0),
    );
    let patched = patched(&model);
    let message = clean_err("compile", || compile(&patched, &CompileOptions::default()));
    assert_mentions(&message, &[node, "group"]);
}

/// Seeds 4617, 5195: panicked "attempt to divide by zero" in the Conv input
/// gradient (src/autodiff/rules/nn.rs:395) for `group = 0` on a hidden layer.
#[test]
fn compile_refuses_conv_group_zero_on_a_hidden_layer() {
    let node = "/features/features.4/Conv";
    let model = with_attribute(
        base_model(Network::Cnn, Variant::Original).clone(),
        node,
        int("group", 0),
    );
    let patched = patched(&model);
    let message = clean_err("compile", || compile(&patched, &CompileOptions::default()));
    assert_mentions(&message, &[node, "group"]);
}

/// Seeds 1863, 2158, 19512: the process aborted with "memory allocation of
/// 103079215416 bytes failed" while unfolding the Conv weight gradient's index
/// grid (`autodiff::rules::nn::grid`, src/autodiff/rules/nn.rs:209) for
/// `pads = [1, 2^32, 1, 1]`.
#[test]
fn compile_refuses_conv_pads_too_large_to_unfold() {
    let node = "/features/features.4/Conv";
    let model = with_attribute(
        base_model(Network::Cnn, Variant::Original).clone(),
        node,
        ints("pads", &[1, 1 << 32, 1, 1]),
    );
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "model.ldam.onnx", &patched(&model));
    let message = cli_error(
        dir.path(),
        &["compile", "model.ldam.onnx", "-o", "model.train.onnx"],
    );
    assert_mentions(&message, &[node, "pads"]);
    assert!(!dir.path().join("model.train.onnx").exists());
}

/// Seeds 1249, 4721, 14293: panicked "capacity overflow" (alloc's raw_vec) from
/// the same index grid (src/autodiff/rules/nn.rs:209) for a kernel of
/// 3039329720600857434 x 1.
#[test]
fn compile_refuses_a_conv_kernel_too_large_to_unfold() {
    let node = "node_Conv_349";
    let model = with_attribute(
        base_model(Network::Shufflenet, Variant::Patched).clone(),
        node,
        ints("kernel_shape", &[3039329720600857434, 1]),
    );
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "model.ldam.onnx", &model);
    let message = cli_error(
        dir.path(),
        &["compile", "model.ldam.onnx", "-o", "model.train.onnx"],
    );
    assert_mentions(&message, &[node, "kernel_shape"]);
}

/// Seed 31437: panicked "attempt to divide by zero" (src/autodiff/rules/nn.rs:506)
/// for a Conv kernel of 3 x 0.
#[test]
fn compile_refuses_a_conv_kernel_with_a_zero_dim() {
    let node = "/features/features.4/Conv";
    let model = with_attribute(
        base_model(Network::Cnn, Variant::Original).clone(),
        node,
        ints("kernel_shape", &[3, 0]),
    );
    let patched = patched(&model);
    let message = clean_err("compile", || compile(&patched, &CompileOptions::default()));
    assert_mentions(&message, &[node, "kernel_shape"]);
}

/// Seeds 32186, 41852, 65505 and more: the process aborted with "memory
/// allocation of 25769803752 bytes failed" in the same index grid
/// (`autodiff::rules::nn::grid`) when the model declares its input
/// `[N, 1, 2147483647, 28]`; smaller sizes panic with "capacity overflow".
#[test]
fn compile_refuses_an_input_too_large_to_unfold() {
    let model = with_dim(
        base_model(Network::Cnn, Variant::Original).clone(),
        "input",
        2,
        i32::MAX as i64,
    );
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "model.ldam.onnx", &patched(&model));
    let message = cli_error(
        dir.path(),
        &["compile", "model.ldam.onnx", "-o", "model.train.onnx"],
    );
    assert_mentions(&message, &["Conv node"]);
}

// ---------------------------------------------------------------------------
// patch: class counts for the logits' declared class count

/// Seeds 29148, 48626, 49397 and more: `patch --labels-file` allocates one
/// counter per class the logits declare (`counts::resolve`), so logits declared
/// `[N, 2^40]` abort the process ("memory allocation of 8796093022208 bytes
/// failed"), and `[N, 2^62]` panic with "capacity overflow".
#[test]
fn patch_labels_file_refuses_logits_with_an_absurd_class_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("labels.txt"), "0\n1\n2\n").unwrap();
    for classes in [1i64 << 40, 1 << 62] {
        let model = with_dim(
            base_model(Network::Cnn, Variant::Original).clone(),
            "logits",
            1,
            classes,
        );
        write_model(dir.path(), "model.onnx", &model);
        let message = cli_error(
            dir.path(),
            &[
                "patch",
                "model.onnx",
                "--labels-file",
                "labels.txt",
                "-o",
                "model.ldam.onnx",
            ],
        );
        assert_mentions(&message, &["logits", &classes.to_string()]);
    }
}

/// Seed 1188 (an op type mutated to Tile, fed a float tensor as its repeats):
/// compile names the Tile and the repeats instead of failing its own
/// structural check.
#[test]
fn compile_refuses_tile_repeats_that_are_not_int64() {
    let mut model = base_model(Network::Mlp, Variant::Patched).clone();
    let graph = model.graph.as_mut().unwrap();
    let relu = graph
        .node
        .iter_mut()
        .find(|n| n.op_type() == "Relu")
        .unwrap();
    relu.op_type = Some("Tile".into());
    relu.name = Some("tiled".into());
    relu.input.push("float_repeats".into());
    graph.initializer.push(ldam_onnx::onnx::tensor::f32_tensor(
        "float_repeats",
        &[2],
        &[1.0, 1.0],
    ));
    let err = clean_err("compile", || compile(&model, &CompileOptions::default()));
    assert_mentions(&err, &["Tile", "'tiled'", "float_repeats", "not int64"]);
    assert!(!err.contains("(a bug)"), "{err}");
}

/// Seed 1258 (`names.loss` drawn empty): an empty contract name is refused,
/// naming the setting, instead of an output named '' failing patch's own check.
#[test]
fn patch_refuses_an_empty_contract_name() {
    let model = base_model(Network::Mlp, Variant::Original);
    for (field, setting) in [
        (0, "labels_name"),
        (1, "epoch_name"),
        (2, "loss_name"),
        (3, "logits_output_name"),
    ] {
        let mut options = patch::PatchOptions {
            batchnorm: Default::default(),
            config: ldam_onnx::ldam::LossConfig::reference(reference_counts(10)),
            head: patch::HeadMode::Auto,
            logits: None,
            names: patch::ContractNames::default(),
        };
        let names = &mut options.names;
        *[
            &mut names.labels,
            &mut names.epoch,
            &mut names.loss,
            &mut names.logits,
        ][field] = String::new();
        let err = clean_err(setting, || patch::patch(model, &options));
        assert_mentions(&err, &[setting, "is empty"]);
        assert!(!err.contains("(a bug)"), "{err}");
    }
}

/// Seed 1479 (a BatchNorm's running mean retyped int32): compile names the
/// tensor and its type instead of building a step that fails its own check.
#[test]
fn compile_refuses_running_statistics_that_are_not_float() {
    let mut model = base_model(Network::Cnn, Variant::Patched).clone();
    let graph = model.graph.as_mut().unwrap();
    let bn = graph
        .node
        .iter()
        .find(|n| n.op_type() == "BatchNormalization")
        .unwrap();
    let mean = bn.input[3].clone();
    let tensor = graph
        .initializer
        .iter_mut()
        .find(|t| t.name() == mean)
        .unwrap();
    tensor.data_type = Some(6); // int32, the same four bytes per element
    let err = clean_err("compile", || compile(&model, &CompileOptions::default()));
    assert_mentions(&err, &["running_mean", &format!("'{mean}'"), "int32"]);
    assert!(!err.contains("(a bug)"), "{err}");
}

/// Seed 1511 (a compiled step with its nodes reversed): recovering the
/// deployable model says the step is not a valid graph, the input's fault,
/// rather than blaming its own result.
#[test]
fn a_step_with_its_nodes_out_of_order_is_the_inputs_fault() {
    let model = base_model(Network::Mlp, Variant::Patched);
    let mut step = compile(model, &CompileOptions::default()).unwrap();
    let state = step.initial_values();
    step.model.graph.as_mut().unwrap().node.reverse();
    let err = clean_err("inference_model", || {
        ldam_onnx::compile::inference_model(&step.model, &state)
    });
    assert_mentions(
        &err,
        &[
            "the training step is not a valid graph",
            "not defined before this node",
        ],
    );
    assert!(!err.contains("(a bug)"), "{err}");
}

// ---------------------------------------------------------------------------
// Dataset readers

/// Seed 1108: panicked "attempt to add with overflow" (src/train/data.rs:1266,
/// debug builds; release wraps to a "truncated" error) for an .npy member whose
/// header shape `(18446744073709551615,)` of `|u1` needs usize::MAX bytes.
#[test]
fn npz_array_of_usize_max_bytes_is_an_error() {
    let path = fuzz::repo_dir().join("tests/fuzz_cases/npy_shape_of_usize_max_bytes.npz");
    let message = clean_err("data::load", || {
        ldam_onnx::train::data::load(&path, ldam_onnx::train::data::Split::Test)
    });
    assert_mentions(&message, &["y_test", "18446744073709551615"]);
}

// ---------------------------------------------------------------------------
// Every seed that found something, replayed through the fuzzer itself

/// The child process of `finding_seeds_end_in_ok_or_err`.
#[test]
#[ignore = "the child process of finding_seeds_end_in_ok_or_err; does nothing on its own"]
fn fuzz_child() {
    if let Some(spec) = supervise::child_spec() {
        supervise::child_main(&spec);
    }
}

/// The seeds of the findings above (fuzz runs of seeds 0..20000), each run as
/// the fuzzer runs it, in a supervised child so that an abort is reported too.
#[test]
fn finding_seeds_end_in_ok_or_err() {
    const SEEDS: &[u64] = &[
        1108, 1249, 1495, 1863, 4617, 4721, 5195, 14293, 16195, 19512, 29148, 31437, 32186, 49397,
    ];
    let launcher = Launcher {
        program: std::env::current_exe().expect("the test binary's path"),
        args: [
            "fuzz_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from)
        .to_vec(),
    };
    let mut failures = String::new();
    for &seed in SEEDS {
        let report = supervise::run(
            &launcher,
            &RunConfig {
                first: seed,
                count: 1,
                threads: 1,
                options: Options::default(),
                hang_limit: Duration::from_secs(120),
                slow: Duration::from_secs(120),
                mem_cap: Some(8 << 30),
                progress: false,
            },
        );
        for finding in &report.findings {
            failures.push_str(&finding.line());
            failures.push('\n');
        }
    }
    assert!(failures.is_empty(), "{failures}");
}
