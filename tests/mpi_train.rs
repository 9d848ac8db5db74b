//! Data-parallel training under `mpirun -np 2` (Open MPI; `--features mpi`):
//! two ranks splitting every global batch train exactly what one process
//! trains on the whole batch, hold bitwise identical state after every step,
//! average their BatchNorm running statistics, end together when one fails or
//! dies, and leave a checkpoint that resumes; with `--features mpi,torch` the
//! torch backend's data-parallel step is checked the same way. Needs `bash
//! .ci/deps.sh` (ONNX Runtime, Fashion-MNIST) and `bash .ci/deps-mpi.sh` (Open MPI).
#![cfg(feature = "mpi")]

use ldam_onnx::backend::{create_trainer, Backend, Device};
use ldam_onnx::compile::CompileOptions;
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::train::batches::{assemble, Augment, Preprocess};
use ldam_onnx::train::checkpoint::Checkpoint;
use ldam_onnx::train::data::{load, Split};
use ldam_onnx::train::evaluate::limit;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";
/// Long-tailed Fashion-MNIST counts: the DRW weights differ between classes.
const COUNTS: &str = "6000,3597,2156,1292,774,464,278,166,99,60";

/// One `mpirun` at a time: two jobs of 2 ranks on 2 cores would only slow
/// each other down.
static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_job() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ldam-onnx")
}

/// `mpirun -np ranks ldam-onnx ...` with what a root container on 2 cores needs.
fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args(["-np", &ranks.to_string(), "--oversubscribe", binary()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    command
}

fn check(output: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}): {stderr}",
        output.status
    );
    stderr
}

/// `model` patched with [`COUNTS`] and DRW from epoch 1 into `dir`.
fn patched(dir: &Path, model: &str) -> PathBuf {
    assert!(
        Path::new(FASHION_MNIST)
            .join("train-labels-idx1-ubyte.gz")
            .exists(),
        "Fashion-MNIST is missing from {FASHION_MNIST}: run `bash .ci/deps.sh`"
    );
    let out = dir.join(format!("{model}.ldam.onnx"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(format!("{model}.onnx"));
    let output = Command::new(binary())
        .arg("patch")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .args(["--class-counts", COUNTS, "--drw-epoch", "1"])
        .output()
        .unwrap();
    check(output, "patch");
    out
}

fn train_args(model: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into(), model.display().to_string()];
    args.extend(
        [
            "--train",
            FASHION_MNIST,
            "--test-limit",
            "300",
            "--augment",
            "none",
            "--allow-count-mismatch",
            "--quiet",
            "--out",
        ]
        .map(String::from),
    );
    args.push(out.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `||a - b|| / ||b||` over the tensors both states name and `keep` accepts.
fn relative_distance(a: &Checkpoint, b: &Checkpoint, keep: impl Fn(&str) -> bool) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    let mut compared = 0;
    for (name, tensor) in &b.state {
        if !keep(name) {
            continue;
        }
        let (x, y) = (
            f32_values(&a.state[name]).unwrap(),
            f32_values(tensor).unwrap(),
        );
        assert_eq!(x.len(), y.len(), "{name}");
        for (x, y) in x.iter().zip(&y) {
            diff += (f64::from(*x) - f64::from(*y)).powi(2);
            norm += f64::from(*y).powi(2);
        }
        compared += 1;
    }
    assert!(compared > 0, "no tensor compared");
    (diff / norm).sqrt()
}

#[test]
fn two_ranks_train_the_mlp_exactly_as_one_process_on_the_whole_batch() {
    two_ranks_train_as_one_process("ort");
}

/// The torch backend sums autograd's gradients the same way.
#[cfg(feature = "torch")]
#[test]
fn two_ranks_of_the_torch_backend_train_the_mlp_as_one_process() {
    two_ranks_train_as_one_process("torch");
}

fn two_ranks_train_as_one_process(backend: &str) {
    let _job = one_job();
    let tmp = tempfile::tempdir().unwrap();
    let model = patched(tmp.path(), "mlp");
    let extra = [
        "--train-limit",
        "1024",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--backend",
        backend,
    ];
    let one = tmp.path().join("one");
    check(
        Command::new(binary())
            .args(train_args(&model, &one, &extra))
            .output()
            .unwrap(),
        "one process",
    );
    let two = tmp.path().join("two");
    let stderr = check(
        mpirun(2)
            .args(train_args(&model, &two, &extra))
            .env(ldam_onnx::distributed::CHECK_RANKS_ENV, "1")
            .output()
            .unwrap(),
        "two ranks",
    );
    // Every step was checked: 2 epochs of 1024 / 64 batches.
    let checked = stderr
        .matches("2 ranks hold identical parameters and momentum")
        .count();
    assert_eq!(checked, 2 * 1024 / 64, "{stderr}");

    let (a, b) = (
        Checkpoint::load(&two).unwrap(),
        Checkpoint::load(&one).unwrap(),
    );
    let parameters = relative_distance(&a, &b, |n| !n.ends_with(".momentum"));
    let momentum = relative_distance(&a, &b, |n| n.ends_with(".momentum"));
    assert!(
        parameters < 1e-5,
        "parameters differ by {parameters:e} normwise"
    );
    assert!(momentum < 1e-5, "momentum differs by {momentum:e} normwise");
    assert_eq!(a.progress.records.len(), 2);
    eprintln!("{backend}: parameters {parameters:e}, momentum {momentum:e} normwise");
    // The slices' gradients are summed in another order than the whole
    // batch's, so the runs agree to rounding, not to the bit: an example whose
    // two top logits are within that rounding may be classed differently.
    let one_example = |n: f64| 100.0 / n + 1e-9;
    for (x, y) in a.progress.records.iter().zip(&b.progress.records) {
        let train = (x.train_acc - y.train_acc).abs();
        assert!(
            train <= one_example(1024.0),
            "epoch {}: train accuracy {} vs {}",
            x.epoch,
            x.train_acc,
            y.train_acc
        );
        let test = (x.test_acc.unwrap() - y.test_acc.unwrap()).abs();
        assert!(
            test <= one_example(300.0),
            "epoch {}: test accuracy {:?} vs {:?}",
            x.epoch,
            x.test_acc,
            y.test_acc
        );
        let loss = (x.train_loss - y.train_loss).abs() / y.train_loss.abs();
        assert!(
            loss < 1e-5,
            "epoch {} loss {} vs {}",
            x.epoch,
            x.train_loss,
            y.train_loss
        );
    }
    // Only rank 0 wrote: one set of files, a deployable model among them.
    assert!(two.join("model.onnx").exists());
}

#[test]
fn a_global_batch_that_does_not_split_evenly_is_refused() {
    let _job = one_job();
    let tmp = tempfile::tempdir().unwrap();
    let model = patched(tmp.path(), "mlp");
    let out = tmp.path().join("run");
    let extra = [
        "--train-limit",
        "256",
        "--epochs",
        "1",
        "--batch-size",
        "63",
    ];
    let output = mpirun(2)
        .args(train_args(&model, &out, &extra))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr
            .contains("--batch-size 63 is the global batch and must split evenly over the 2 ranks"),
        "{stderr}"
    );
}

#[test]
fn batchnorm_running_statistics_are_the_ranks_slices_averaged() {
    statistics_are_the_slices_averaged(Backend::OnnxRuntime);
}

#[cfg(feature = "torch")]
#[test]
fn the_torch_backend_averages_the_ranks_running_statistics() {
    statistics_are_the_slices_averaged(Backend::Torch);
}

fn statistics_are_the_slices_averaged(backend: Backend) {
    let _job = one_job();
    let tmp = tempfile::tempdir().unwrap();
    let model = patched(tmp.path(), "cnn");
    // A learning rate too small to move any weight (the statistics then come
    // from the same network on every slice), data in file order, raw pixels.
    let (examples, batch_size, lr) = (256, 64, 1e-30f32);
    let extra = [
        "--train-limit",
        "256",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--lr",
        "1e-30",
        "--no-shuffle",
        "--normalize",
        "none",
        "--backend",
        &backend.to_string(),
    ];
    let two = tmp.path().join("two");
    check(
        mpirun(2)
            .args(train_args(&model, &two, &extra))
            .output()
            .unwrap(),
        "two ranks",
    );
    let ranks = Checkpoint::load(&two).unwrap();

    // The specification: each rank is one process training on its contiguous
    // half of every batch; the running statistics are their average.
    let dataset = load(Path::new(FASHION_MNIST), Split::Train).unwrap();
    let dataset = limit(dataset, Some(examples), 0).unwrap();
    let preprocess = Preprocess {
        augment: Augment::None,
        normalization: None,
        seed: 0,
    };
    let patched_model = ldam_onnx::onnx::io::load(&model).unwrap().model;
    let half = || {
        create_trainer(
            backend,
            &patched_model,
            &CompileOptions::default(),
            Device::Cpu,
        )
        .unwrap()
    };
    let mut halves = [half(), half()];
    let order: Vec<usize> = (0..examples).collect();
    for (b, indices) in order.chunks(batch_size).enumerate() {
        for (r, half) in indices.chunks(batch_size / 2).enumerate() {
            let first = b * batch_size + r * batch_size / 2;
            let batch = assemble(&dataset, half, &preprocess, 0, first).unwrap();
            halves[r].step(&batch, 0, lr).unwrap();
        }
    }
    let (a, b) = (halves[0].state().unwrap(), halves[1].state().unwrap());
    let mut compared = 0;
    for (name, tensor) in &ranks.state {
        if !(name.ends_with("running_mean") || name.ends_with("running_var")) {
            continue;
        }
        let got = f32_values(tensor).unwrap();
        let (x, y) = (f32_values(&a[name]).unwrap(), f32_values(&b[name]).unwrap());
        let expected: Vec<f32> = x.iter().zip(&y).map(|(x, y)| (x + y) / 2.0).collect();
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for (g, e) in got.iter().zip(&expected) {
            diff += (f64::from(*g) - f64::from(*e)).powi(2);
            norm += f64::from(*e).powi(2);
        }
        let error = (diff / norm).sqrt();
        assert!(
            error < 1e-5,
            "{name} differs from the halves' average by {error:e}"
        );
        // The halves differ: the average is not one of them.
        assert_ne!(x, y, "{name}");
        compared += 1;
    }
    assert_eq!(compared, 4, "two BatchNorms, mean and variance each");
}

#[test]
fn a_rank_that_fails_alone_ends_every_rank_with_its_rank_named() {
    let _job = one_job();
    let tmp = tempfile::tempdir().unwrap();
    let model = patched(tmp.path(), "mlp");
    // Rank 0 alone writes the run folder, and cannot: a file is in the way.
    // Rank 1 trains on and would wait for rank 0 in the first allreduce.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let out = blocker.join("run");
    let extra = [
        "--train-limit",
        "256",
        "--epochs",
        "1",
        "--batch-size",
        "64",
    ];
    let started = Instant::now();
    let output = mpirun(2)
        .args(train_args(&model, &out, &extra))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("error: rank 0 of 2:"), "{stderr}");
    // mpirun's own report of the abort is not asserted: Open MPI sometimes
    // fails to print it ("ORTE_ERROR_LOG: Data unpack would read past end of
    // buffer" in show_help.c) although the job ends as it should.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// Pids of the processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            if after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) == Some(parent) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[test]
fn a_killed_rank_ends_every_rank_and_the_last_checkpoint_resumes() {
    let _job = one_job();
    let tmp = tempfile::tempdir().unwrap();
    let model = patched(tmp.path(), "mlp");
    let run = tmp.path().join("run");
    let epochs = 6;
    let extra = [
        "--train-limit",
        "8192",
        "--epochs",
        "6",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
    ];
    let mut launcher = mpirun(2)
        .args(train_args(&model, &run, &extra))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first epoch's checkpoint, then kill rank 1 mid-epoch.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            launcher.try_wait().unwrap().is_none(),
            "the run ended too early"
        );
        if Checkpoint::load(&run).is_ok_and(|c| c.progress.epoch >= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let ranks = children(launcher.id());
    assert_eq!(ranks.len(), 2, "mpirun's children: {ranks:?}");
    // Open MPI starts rank 0 first; the later pid is rank 1.
    let victim = *ranks.iter().max().unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let killed_at = Instant::now();
    let output = loop {
        if launcher.try_wait().unwrap().is_some() {
            break launcher.wait_with_output().unwrap();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "the other rank still runs 20 s after rank 1 died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1"),
        "the message names the dead rank: {stderr}"
    );

    let checkpoint = Checkpoint::load(&run).unwrap();
    assert!(checkpoint.progress.epoch >= 1 && checkpoint.progress.epoch < epochs);
    let output = mpirun(2)
        .args(["train", "--resume"])
        .arg(&run)
        .args(["--quiet"])
        .output()
        .unwrap();
    check(output, "resume");
    let done = Checkpoint::load(&run).unwrap();
    assert_eq!(done.progress.epoch, epochs);
    assert_eq!(done.progress.records.len(), epochs);
    assert!(run.join("model.onnx").exists());
}
