//! The browser trainer (`web/`) in headless Chromium: it trains the compiled
//! MLP step on an exported Fashion-MNIST-LT subset for a few steps and must give
//! the per-step losses (and the trained state it offers for download) that
//! native ONNX Runtime gives for the same step files on the same batches.
//!
//! Needs Node and Chromium: the test installs Debian's `chromium` (apt-get, with
//! sudo when not root) and the npm packages of `web/package.json`
//! (onnxruntime-web) and `tests/web/package.json` (playwright-core) into their
//! git-ignored `node_modules` when missing. Fashion-MNIST comes from
//! `bash .ci/deps.sh`. The page's screenshot is kept in
//! `target/web-page/page.png`.

mod common;

use common::tolerance::{self, normwise_error};
use common::{run_session, Data};
use ldam_onnx::onnx::tensor::f32_values;
use ldam_onnx::train::batches::{assemble, Augment, Preprocess};
use ldam_onnx::train::data::export;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";
const STEPS: usize = 6;
const BATCH: usize = 32;
const LR: f32 = 0.05;
/// The page's `strided` order: position k of an epoch holds example
/// (k * STRIDE) mod N_train.
const STRIDE: usize = 7919;

fn repo() -> PathBuf {
    common::repo_dir()
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ldam-onnx")
}

/// Runs `command`, panicking with its output when it fails.
fn check(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// Chromium, installed from Debian when missing.
fn chromium() -> PathBuf {
    if let Some(path) = on_path("chromium") {
        return path;
    }
    let root = check(&mut Command::new("id").arg("-u"), "id -u").trim() == "0";
    let apt = |args: &[&str]| {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let _ = apt(&["update", "-qq"]);
    let installed = apt(&["install", "-y", "-qq", "chromium"]);
    on_path("chromium").unwrap_or_else(|| {
        panic!(
            "Chromium is missing and `apt-get install chromium` did not install it ({:?}); \
             install the Debian package `chromium` to run the browser test",
            installed.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        )
    })
}

/// `npm install` in `dir` (its package.json) unless `dir/node_modules/package` exists.
fn npm_packages(dir: &Path, package: &str) {
    if dir.join("node_modules").join(package).is_dir() {
        return;
    }
    assert!(
        on_path("npm").is_some(),
        "npm is missing: install Node.js (Debian `nodejs` and `npm`) to run the browser test"
    );
    check(
        Command::new("npm")
            .args(["install", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(dir),
        &format!("npm install in {}", dir.display()),
    );
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A folder removed when the test ends.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The state file's (or companion's) tensors, by name.
fn state_file(path: &Path) -> HashMap<String, (Vec<i64>, Vec<f32>)> {
    let loaded = ldam_onnx::onnx::io::load(path).unwrap_or_else(|e| panic!("{e}"));
    loaded
        .model
        .graph
        .iter()
        .flat_map(|g| g.initializer.iter())
        .map(|t| {
            let values = f32_values(t).unwrap_or_else(|| panic!("{}: not float32", t.name()));
            (t.name().to_string(), (t.dims.clone(), values))
        })
        .collect()
}

#[test]
fn the_page_trains_as_native_onnx_runtime_does() {
    let repo = repo();
    assert!(
        on_path("node").is_some(),
        "node is missing: install Node.js (Debian `nodejs`) to run the browser test"
    );
    assert!(
        Path::new(FASHION_MNIST)
            .join("train-images-idx3-ubyte.gz")
            .is_file(),
        "Fashion-MNIST is missing from {FASHION_MNIST}: run `bash .ci/deps.sh`"
    );
    let chromium = chromium();
    npm_packages(&repo.join("web"), "onnxruntime-web");
    npm_packages(&repo.join("tests/web"), "playwright-core");

    // Files under web/ (git-ignored data/), since the server serves that folder.
    let name = format!("test-{}", std::process::id());
    let work = repo.join("web/data").join(&name);
    std::fs::create_dir_all(&work).unwrap();
    let _cleanup = Removed(work.clone());
    let data = work.join("fashion-lt.bin");
    let exported = check(
        Command::new(bin())
            .args([
                "export-data",
                "--train",
                FASHION_MNIST,
                "--max-train",
                "3000",
            ])
            .arg("-o")
            .arg(&data),
        "ldam-onnx export-data",
    );
    let set = export::read(&data).unwrap_or_else(|e| panic!("{e}"));
    let counts: Vec<String> = set.train_counts().iter().map(u64::to_string).collect();
    assert!(exported.contains(&counts.join(",")), "{exported}");
    // Exp profile, ratio 100: n_i = floor(head * 100^(-i/9)), with the largest
    // head whose counts sum to at most 3000.
    let profile = |head: u64| -> Vec<u64> {
        (0..10)
            .map(|i| (head as f64 * 100f64.powf(-(i as f64) / 9.0)) as u64)
            .collect()
    };
    let head = set.train_counts()[0];
    assert_eq!(set.train_counts(), profile(head));
    assert!(profile(head).iter().sum::<u64>() <= 3000);
    assert!(profile(head + 1).iter().sum::<u64>() > 3000);
    let patched = work.join("mlp.ldam.onnx");
    check(
        Command::new(bin())
            .arg("patch")
            .arg(repo.join("models/mlp.onnx"))
            .arg("-o")
            .arg(&patched)
            .args(["--class-counts", &counts.join(","), "--drw-epoch", "1"]),
        "ldam-onnx patch",
    );
    let step_file = work.join("mlp.train.onnx");
    check(
        Command::new(bin())
            .arg("compile")
            .arg(&patched)
            .arg("-o")
            .arg(&step_file),
        "ldam-onnx compile",
    );
    let companion = work.join("mlp.train.state.onnx");
    assert!(
        companion.is_file(),
        "compile writes the state file beside the step"
    );

    // The server prints its URL first.
    let mut server = Killed(
        Command::new(bin())
            .args(["serve-web", "--port", "0"])
            .arg(repo.join("web"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve-web starts"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("serve-web printed no URL: {line:?}"))
        .to_string();
    let url = format!(
        "{base}?step=data/{name}/mlp.train.onnx&data=data/{name}/fashion-lt.bin\
         &autorun={STEPS}&batch={BATCH}&lr={LR}&backend=wasm"
    );
    let out = repo.join("target/web-page");
    let _ = std::fs::remove_dir_all(&out);
    let driven = check(
        Command::new("node")
            .arg(repo.join("tests/web/drive_page.mjs"))
            .args(["--url", &url, "--timeout-s", "300", "--chromium"])
            .arg(&chromium)
            .arg("--out")
            .arg(&out),
        "the page in headless Chromium",
    );
    drop(server);
    let screenshot = out.join("page.png");
    println!("screenshot of the page: {}", screenshot.display());
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert!(
        result.get("error").is_none(),
        "the page failed: {result}\n{driven}"
    );
    assert_eq!(result["consoleErrors"], serde_json::json!([]), "{result}");
    assert!(screenshot.is_file());

    // Native ONNX Runtime: the same step file, the initial state from the state
    // file, the same batches (the tool's own input pipeline) in the same order.
    let mut session = ldam_onnx::runtime::session_from_file(&step_file).unwrap();
    let mut state = state_file(&companion);
    let state_names: Vec<String> = serde_json::from_str(
        ldam_onnx::onnx::metadata(
            &ldam_onnx::onnx::io::load(&step_file).unwrap().model,
            "ldam_onnx.train.state",
        )
        .expect("the step lists its state"),
    )
    .unwrap();
    let preprocess = Preprocess {
        augment: Augment::None,
        normalization: set.normalization.clone(),
        seed: 0,
    };
    let n = set.train.len();
    let per_epoch = n / BATCH;
    let mut native = Vec::new();
    for step in 0..STEPS {
        let (epoch, position) = (step / per_epoch, step % per_epoch);
        let indices: Vec<usize> = (position * BATCH..(position + 1) * BATCH)
            .map(|k| k * STRIDE % n)
            .collect();
        let batch = assemble(&set.train, &indices, &preprocess, epoch, position * BATCH).unwrap();
        let mut feeds = vec![
            ("input".to_string(), Data::F32(batch.shape, batch.data)),
            (
                "labels".to_string(),
                Data::I64(vec![BATCH as i64], batch.labels),
            ),
            ("epoch".to_string(), Data::I64(vec![], vec![epoch as i64])),
            ("lr".to_string(), Data::F32(vec![], vec![LR])),
        ];
        for s in &state_names {
            let (dims, values) = state[s].clone();
            feeds.push((s.clone(), Data::F32(dims, values)));
        }
        let feeds: Vec<(&str, Data)> = feeds.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let outputs = run_session(&mut session, &feeds);
        native.push(f64::from(outputs["loss"].f32()[0]));
        for s in &state_names {
            let next = &outputs[&format!("{s}.next")];
            state.insert(s.clone(), (next.shape().to_vec(), next.f32().to_vec()));
        }
    }

    let page: Vec<f64> = serde_json::from_value(result["losses"].clone()).unwrap();
    assert_eq!(page.len(), STEPS, "{result}");
    assert_eq!(
        result["domLosses"], result["losses"],
        "#losses shows the losses"
    );
    println!("page losses   {page:?}\nnative losses {native:?}");
    for (step, (p, n)) in page.iter().zip(&native).enumerate() {
        let rel = (p - n).abs() / n.abs().max(1e-12);
        assert!(
            rel <= 1e-5,
            "step {step}: page loss {p} vs native {n} (rel {rel:e})"
        );
    }
    assert!(
        native.windows(2).any(|w| w[0] != w[1]),
        "the losses change from step to step: {native:?}"
    );

    // The curve is drawn: pixels of the loss curve's colour.
    let loss_pixels = result["curvePixels"]["loss"].as_u64().unwrap();
    println!("loss curve pixels: {loss_pixels}");
    assert!(loss_pixels >= 50, "the loss curve is blank: {result}");

    // The trained state the page offers for download: the native state after
    // the same steps.
    let trained = state_file(&out.join("trained.state.onnx"));
    let mut worst = 0.0f64;
    for s in &state_names {
        let (dims, values) = &trained[s];
        assert_eq!(dims, &state[s].0, "{s}");
        worst = tolerance::worst([worst, normwise_error(values, &state[s].1, 1e-6)]);
    }
    println!("trained state vs native, worst normwise error: {worst:e}");
    assert!(worst <= 1e-4, "{worst}");

    // `deploy` turns the download into the deployable model, with the input
    // normalisation and class counts the page recorded; its logits are those
    // of the native state's deployable model.
    let deployed = work.join("mlp.onnx");
    check(
        Command::new(bin())
            .arg("deploy")
            .arg(&step_file)
            .arg("--state")
            .arg(out.join("trained.state.onnx"))
            .arg("-o")
            .arg(&deployed),
        "ldam-onnx deploy",
    );
    let deployed = ldam_onnx::onnx::io::load(&deployed).unwrap().model;
    let recorded = ldam_onnx::train::evaluate::recorded_normalization(&deployed).unwrap();
    assert_eq!(recorded, set.normalization);
    assert_eq!(
        ldam_onnx::onnx::metadata(&deployed, "ldam_onnx.train_class_counts"),
        Some(counts.join(",").as_str())
    );
    let native_state: HashMap<String, ldam_onnx::onnx::TensorProto> = state
        .iter()
        .map(|(name, (dims, values))| {
            let tensor = ldam_onnx::onnx::tensor::f32_tensor(name, dims, values);
            (name.clone(), tensor)
        })
        .collect();
    let step_model = ldam_onnx::onnx::io::load(&step_file).unwrap().model;
    let reference = ldam_onnx::compile::inference_model(&step_model, &native_state).unwrap();
    let indices: Vec<usize> = (0..64).collect();
    let batch = assemble(&set.test, &indices, &preprocess, 0, 0).unwrap();
    let input = [("input", Data::F32(batch.shape, batch.data))];
    let logits = |model| common::run(model, &input)["logits"].f32().to_vec();
    let (got, want) = (logits(&deployed), logits(&reference));
    assert_eq!(got.len(), 64 * 10);
    let error = normwise_error(&got, &want, 1e-6);
    println!("deployed logits vs native state's model: normwise {error:e}");
    assert!(error <= 1e-4, "{error}");
}
