//! Process mode: the same seeded inputs, written to a temporary folder and given
//! to the built `ldam-onnx` binary (`inspect`, `patch`, `compile`; `eval` and
//! `patch --labels-file` for dataset files) under an address-space limit and a
//! time limit. This catches what `catch_unwind` cannot (aborts, stack
//! overflows, hangs) and checks the CLI's contract for bad input: exit status
//! 1, an `error:` line, and no output file left behind.

use super::driver::{self, CaseResult, Input, Outcome, StageResult, Subject, Variant};
use super::repo_dir;
use super::report::Report;
use super::rng::Rng;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The `ldam-onnx` binary.
    pub binary: PathBuf,
    pub time_limit: Duration,
    /// Address-space limit in bytes (`prlimit --as`, or `ulimit -v` through sh).
    pub mem_cap: u64,
    pub slow: Duration,
}

/// How one command ended.
#[derive(Debug)]
pub struct CommandRun {
    pub args: Vec<String>,
    pub status: Option<std::process::ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

/// Runs `binary args` in `dir` under the memory cap and the time limit.
pub fn run_command(config: &ProcessConfig, dir: &Path, args: &[String]) -> CommandRun {
    let mut command = if super::supervise::has_prlimit() {
        let mut c = Command::new("prlimit");
        c.arg(format!("--as={}", config.mem_cap))
            .arg("--")
            .arg(&config.binary);
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "ulimit -v {}; exec \"$0\" \"$@\"",
                config.mem_cap / 1024
            ))
            .arg(&config.binary);
        c
    };
    let start = Instant::now();
    let mut child = command
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("harness: starting {}: {e}", config.binary.display()));
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > config.time_limit => {
                let _ = child.kill();
                timed_out = true;
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let text = |v: Vec<u8>| String::from_utf8_lossy(&v).into_owned();
    CommandRun {
        args: args.to_vec(),
        status,
        timed_out,
        stdout: text(out_reader.join().unwrap_or_default()),
        stderr: text(err_reader.join().unwrap_or_default()),
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// A panic's message and location from the default hook's output
/// (`thread 'main' panicked at src/x.rs:1:2:\nmessage`).
fn parse_panic(stderr: &str) -> Option<(String, String)> {
    let at = stderr.find("panicked at ")?;
    let rest = &stderr[at + "panicked at ".len()..];
    let (location, message) = rest.split_once('\n').unwrap_or((rest, ""));
    let message = message
        .lines()
        .take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace:"))
        .collect::<Vec<_>>()
        .join(" ");
    Some((location.trim_end_matches(':').to_string(), message))
}

/// Judges one command: `Ok(None)` for success, `Ok(Some(err))` for a clean
/// error, `Err(outcome)` for a finding. `output` must not exist after an error.
fn judge(stage: &str, run: &CommandRun, output: Option<&Path>) -> Result<Option<String>, Outcome> {
    use std::os::unix::process::ExitStatusExt;
    if run.timed_out {
        return Err(Outcome::Hang {
            stage: stage.to_string(),
            seconds: run.seconds,
        });
    }
    let Some(status) = run.status else {
        return Err(Outcome::Violation {
            stage: stage.to_string(),
            message: "could not wait for the process".into(),
        });
    };
    if status.signal().is_some() {
        return Err(Outcome::Abort {
            stage: stage.to_string(),
            message: super::supervise::death_message(status, &run.stderr),
            frame: driver::library_frame(&run.stderr),
        });
    }
    match status.code() {
        Some(0) => Ok(None),
        Some(101) => {
            let (location, message) = parse_panic(&run.stderr)
                .unwrap_or_else(|| (String::new(), run.stderr.trim().to_string()));
            let frame = if location.starts_with("src/") {
                None
            } else {
                driver::library_frame(&run.stderr)
            };
            Err(Outcome::Panic {
                stage: stage.to_string(),
                message,
                location,
                frame,
            })
        }
        Some(1) => {
            let error = run
                .stderr
                .lines()
                .find(|l| l.starts_with("error: "))
                .map(str::to_string);
            let Some(error) = error else {
                return Err(Outcome::Violation {
                    stage: stage.to_string(),
                    message: format!(
                        "exit status 1 without an 'error:' line: {}",
                        run.stderr.trim()
                    ),
                });
            };
            if let Some(output) = output {
                let leftovers = leftovers(output);
                if !leftovers.is_empty() {
                    return Err(Outcome::Violation {
                        stage: stage.to_string(),
                        message: format!(
                            "failed ({error}) but left {} behind",
                            leftovers.join(", ")
                        ),
                    });
                }
            }
            Ok(Some(error))
        }
        Some(code) => Err(Outcome::Violation {
            stage: stage.to_string(),
            message: format!("exit status {code}: {}", run.stderr.trim()),
        }),
        None => Ok(None),
    }
}

/// The output file and any temporary file of it (`.NAME.XXXX.tmp`) that exist.
fn leftovers(output: &Path) -> Vec<String> {
    let name = output.file_name().unwrap().to_string_lossy().into_owned();
    let dir = output.parent().unwrap();
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n == name || n == format!("{name}.data") || n.starts_with(&format!(".{name}.")) {
                found.push(n);
            }
        }
    }
    found.sort();
    found
}

/// The CLI flags a case patches with (reference settings, sometimes others).
fn patch_flags(rng: &mut Rng) -> Vec<String> {
    let mut flags = Vec::new();
    if rng.chance(0.1) {
        flags.extend(["--labels-file".to_string(), "labels.txt".to_string()]);
    } else {
        let counts = driver::reference_counts(10);
        flags.push("--class-counts".into());
        flags.push(
            counts
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if rng.chance(0.15) {
        flags.extend(["--loss".into(), rng.pick(&["ce", "focal"]).to_string()]);
    }
    if rng.chance(0.15) {
        flags.extend(["--head".into(), rng.pick(&["keep", "cosine"]).to_string()]);
    }
    flags
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs case `seed` through the binary.
pub fn run_process_case(seed: u64, config: &ProcessConfig, tmp_root: &Path) -> CaseResult {
    let start = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("case-")
        .tempdir_in(tmp_root)
        .expect("harness: temporary folder");
    let d = dir.path();
    let prepared = driver::prepare(seed, d);
    let mut result = CaseResult {
        seed,
        subject: prepared.subject.name(),
        mutations: prepared.mutations.clone(),
        stages: Vec::new(),
        outcome: Outcome::Ok,
        millis: 0,
    };
    let mut rng = prepared.rng;
    let step = |stage: &str,
                args: Vec<String>,
                output: Option<PathBuf>,
                result: &mut CaseResult|
     -> bool {
        if !result.outcome.is_ok() {
            return false;
        }
        let run = run_command(config, d, &args);
        match judge(stage, &run, output.as_deref()) {
            Ok(error) => {
                let ok = error.is_none();
                result.stages.push(StageResult {
                    stage: stage.to_string(),
                    error,
                });
                ok
            }
            Err(outcome) => {
                result.outcome = outcome;
                false
            }
        }
    };
    match prepared.input {
        Input::Model { bytes } => {
            std::fs::write(d.join("model.onnx"), &bytes).expect("harness: writing the model");
            let labels: Vec<String> = (0..20).map(|i| (i % 10).to_string()).collect();
            std::fs::write(d.join("labels.txt"), labels.join("\n")).expect("harness: labels");
            let format = *rng.pick(&["text", "json", "dot"]);
            step(
                "cli.inspect",
                strings(&["inspect", "model.onnx", "--format", format]),
                None,
                &mut result,
            );
            let mut args = strings(&["patch", "model.onnx", "-o", "out.ldam.onnx"]);
            args.extend(patch_flags(&mut rng));
            let patched = step(
                "cli.patch",
                args,
                Some(d.join("out.ldam.onnx")),
                &mut result,
            );
            let variant = match prepared.subject {
                Subject::Model(_, v) => v,
                Subject::Data(_) => unreachable!("model input"),
            };
            let compile_input = if patched {
                Some("out.ldam.onnx")
            } else if variant != Variant::Original {
                Some("model.onnx")
            } else {
                None
            };
            if let Some(input) = compile_input {
                step(
                    "cli.compile",
                    strings(&["compile", input, "-o", "out.train.onnx"]),
                    Some(d.join("out.train.onnx")),
                    &mut result,
                );
            }
        }
        Input::Data(files) => {
            if let Some((path, _split)) = &files.dataset {
                let model = repo_dir().join("models").join(if rng.chance(0.5) {
                    "mlp.onnx"
                } else {
                    "cnn.onnx"
                });
                let mut args = vec![
                    "eval".to_string(),
                    model.display().to_string(),
                    "--test".to_string(),
                    path.display().to_string(),
                ];
                if rng.chance(0.3) {
                    args.extend(strings(&["--test-limit", "2"]));
                }
                step("cli.eval", args, None, &mut result);
            }
            if let Some(labels) = &files.labels {
                let args = vec![
                    "patch".to_string(),
                    repo_dir().join("models/mlp.onnx").display().to_string(),
                    "--labels-file".to_string(),
                    labels.display().to_string(),
                    "-o".to_string(),
                    "labels.ldam.onnx".to_string(),
                ];
                step(
                    "cli.patch_labels",
                    args,
                    Some(d.join("labels.ldam.onnx")),
                    &mut result,
                );
            }
        }
    }
    result.millis = start.elapsed().as_millis() as u64;
    result
}

/// Runs seeds `first..first + count` through the binary on `threads` threads.
pub fn run(
    config: &ProcessConfig,
    first: u64,
    count: u64,
    threads: usize,
    progress: bool,
) -> Report {
    let tmp = tempfile::Builder::new()
        .prefix("ldam-fuzz-process-")
        .tempdir()
        .expect("harness: temporary folder");
    let report = Mutex::new(Report::new(config.slow));
    let next = Mutex::new(first);
    let start = Instant::now();
    let last_progress = Mutex::new(Instant::now());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = {
                    let mut next = next.lock().unwrap();
                    if *next >= first + count {
                        break;
                    }
                    *next += 1;
                    *next - 1
                };
                let result = run_process_case(seed, config, tmp.path());
                let mut report = report.lock().unwrap();
                report.add(&result);
                let mut last = last_progress.lock().unwrap();
                if progress && last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    eprintln!(
                        "[fuzz --process] {} cases, {:.2} cases/s, {} findings",
                        report.cases,
                        report.cases as f64 / start.elapsed().as_secs_f64(),
                        report.findings.len()
                    );
                }
            });
        }
    });
    let mut report = report.into_inner().unwrap();
    report.elapsed = start.elapsed();
    report
}
