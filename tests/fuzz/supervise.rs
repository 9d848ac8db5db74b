//! Cases run in a child process, supervised: the child runs seeds in process
//! (panics caught) and reports each case's start, stages and result on stdout;
//! the parent turns a child that dies (allocation failure, stack overflow,
//! signal) into an `Abort` finding for the seed it was running, kills a child
//! whose case passes the time limit (a `Hang`), and starts a new child on the
//! seeds that remain. When several seeds were in flight, each is run again
//! alone to find the one that kills the process.
//!
//! Protocol (one line each, on the child's stdout):
//! `@@start SEED`, `@@case SEED {"subject":..,"mutations":[..]}`,
//! `@@stage SEED NAME`, `@@end {CaseResult as JSON}`.

use super::driver::{self, run_case, CaseResult, Event, Options, Outcome};
use super::report::Report;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Environment variable that makes a process a fuzz child, holding its [`ChildSpec`].
pub const CHILD_ENV: &str = "LDAM_FUZZ_CHILD";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub first: u64,
    pub count: u64,
    pub threads: usize,
    pub options: Options,
}

/// The spec when this process was started as a fuzz child.
pub fn child_spec() -> Option<ChildSpec> {
    let text = std::env::var(CHILD_ENV).ok()?;
    Some(serde_json::from_str(&text).expect("harness: a valid child spec"))
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // The parent reads until the pipe closes; a write error means it is gone.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child's side: runs `spec`'s seeds on `spec.threads` threads.
pub fn child_main(spec: &ChildSpec) {
    driver::install_panic_hook();
    let end = spec.first + spec.count;
    // Taking a seed and announcing it happen under one lock, so that every seed
    // below the highest announced one has been announced.
    let next = Mutex::new(spec.first);
    emit("");
    std::thread::scope(|scope| {
        for _ in 0..spec.threads.max(1) {
            scope.spawn(|| loop {
                let seed = {
                    let mut next = next.lock().unwrap();
                    if *next >= end {
                        break;
                    }
                    let seed = *next;
                    *next += 1;
                    emit(&format!("@@start {seed}"));
                    seed
                };
                let result = run_case(seed, &spec.options, &mut |event| match event {
                    Event::Stage(stage) => emit(&format!("@@stage {seed} {stage}")),
                    Event::Prepared { subject, mutations } => emit(&format!(
                        "@@case {seed} {}",
                        serde_json::json!({ "subject": subject, "mutations": mutations })
                    )),
                });
                emit(&format!(
                    "@@end {}",
                    serde_json::to_string(&result).expect("results serialize")
                ));
            });
        }
    });
}

/// How to start a child: the program and the arguments that reach
/// [`child_main`] (the spec travels in [`CHILD_ENV`]).
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub first: u64,
    pub count: u64,
    pub threads: usize,
    pub options: Options,
    /// A case running longer than this is a hang.
    pub hang_limit: Duration,
    /// Cases at least this slow are listed in the report.
    pub slow: Duration,
    /// Address-space limit of the child (`prlimit --as`), so that a huge
    /// allocation fails at once instead of exhausting the machine.
    pub mem_cap: Option<u64>,
    /// Print progress to stderr every few seconds.
    pub progress: bool,
}

/// What the parent knows of a case in flight.
struct InFlight {
    started: Instant,
    stage: String,
    subject: String,
    mutations: Vec<String>,
}

enum Msg {
    Line(String),
    Closed,
}

/// Runs the configured seeds in supervised children and returns the report.
pub fn run(launcher: &Launcher, config: &RunConfig) -> Report {
    let tmp = tempfile::Builder::new()
        .prefix("ldam-fuzz-run-")
        .tempdir()
        .expect("harness: temporary folder");
    let mut config = config.clone();
    config.options.tmp_root = Some(tmp.path().to_path_buf());
    let mut report = Report::new(config.slow);
    let start = Instant::now();
    let mut progress = Progress::new(config.progress);
    let end = config.first + config.count;
    let mut next = config.first;
    while next < end {
        next = run_child(
            launcher,
            &config,
            next,
            end - next,
            config.threads,
            &mut report,
            &mut progress,
        );
    }
    report.elapsed = start.elapsed();
    report
}

struct Progress {
    enabled: bool,
    start: Instant,
    last: Instant,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            start: Instant::now(),
            last: Instant::now(),
        }
    }

    fn tick(&mut self, report: &Report) {
        if self.enabled && self.last.elapsed() >= Duration::from_secs(5) {
            self.last = Instant::now();
            let secs = self.start.elapsed().as_secs_f64();
            eprintln!(
                "[fuzz] {} cases, {:.1} cases/s, {} findings in {} places",
                report.cases,
                report.cases as f64 / secs.max(1e-9),
                report.findings.len(),
                report.groups().len()
            );
        }
    }
}

fn spawn(launcher: &Launcher, config: &RunConfig, spec: &ChildSpec) -> Child {
    let mut command = match config.mem_cap {
        Some(bytes) if has_prlimit() => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--as={bytes}"))
                .arg("--")
                .arg(&launcher.program);
            c
        }
        _ => Command::new(&launcher.program),
    };
    command
        .args(&launcher.args)
        .env(
            CHILD_ENV,
            serde_json::to_string(spec).expect("spec serializes"),
        )
        // A lone seed is run again to learn where it dies: the allocation-failure
        // handler prints a backtrace when asked to.
        .env("RUST_BACKTRACE", if spec.count == 1 { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
        .spawn()
        .unwrap_or_else(|e| panic!("harness: starting {}: {e}", launcher.program.display()))
}

/// Whether `prlimit` (util-linux) can be run; asked once per process.
pub fn has_prlimit() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        Command::new("prlimit")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Keeps the last few kilobytes a stream wrote.
fn tail_reader(mut stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let tail = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&tail);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut tail = sink.lock().unwrap();
            tail.extend_from_slice(&buf[..n]);
            let excess = tail.len().saturating_sub(16 << 10);
            tail.drain(..excess);
        }
    });
    tail
}

/// Runs seeds `first..first + count` in one child; returns the first seed it
/// did not settle (the child stops early when it dies or hangs).
fn run_child(
    launcher: &Launcher,
    config: &RunConfig,
    first: u64,
    count: u64,
    threads: usize,
    report: &mut Report,
    progress: &mut Progress,
) -> u64 {
    let spec = ChildSpec {
        first,
        count,
        threads,
        options: config.options.clone(),
    };
    let mut child = spawn(launcher, config, &spec);
    let stderr = tail_reader(child.stderr.take().expect("piped stderr"));
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if tx.send(Msg::Line(line)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(Msg::Closed);
    });

    let mut in_flight: BTreeMap<u64, InFlight> = BTreeMap::new();
    let mut max_started: Option<u64> = None;
    let mut hung = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Line(line)) => {
                // libtest may print "test fuzz_child ... " just before the first line.
                let Some(rest) = line.find("@@").map(|at| &line[at + 2..]) else {
                    continue;
                };
                let (tag, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                match tag {
                    "start" => {
                        let seed: u64 = rest.parse().expect("protocol: seed");
                        max_started = Some(max_started.map_or(seed, |m| m.max(seed)));
                        in_flight.insert(
                            seed,
                            InFlight {
                                started: Instant::now(),
                                stage: "prepare".into(),
                                subject: driver::plan(seed).0.name(),
                                mutations: Vec::new(),
                            },
                        );
                    }
                    "case" => {
                        let (seed, json) = rest.split_once(' ').expect("protocol: case");
                        let value: serde_json::Value =
                            serde_json::from_str(json).expect("protocol: case JSON");
                        if let Some(f) = in_flight.get_mut(&seed.parse().expect("protocol: seed")) {
                            f.mutations = serde_json::from_value(value["mutations"].clone())
                                .unwrap_or_default();
                        }
                    }
                    "stage" => {
                        let (seed, stage) = rest.split_once(' ').expect("protocol: stage");
                        if let Some(f) = in_flight.get_mut(&seed.parse().expect("protocol: seed")) {
                            f.stage = stage.to_string();
                        }
                    }
                    "end" => {
                        let result: CaseResult =
                            serde_json::from_str(rest).expect("protocol: result JSON");
                        in_flight.remove(&result.seed);
                        report.add(&result);
                        progress.tick(report);
                    }
                    _ => {}
                }
            }
            Ok(Msg::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => progress.tick(report),
        }
        let overdue = in_flight
            .iter()
            .find(|(_, f)| f.started.elapsed() > config.hang_limit)
            .map(|(&seed, _)| seed);
        if let Some(seed) = overdue {
            let _ = child.kill();
            let f = in_flight.remove(&seed).expect("overdue seed is in flight");
            report.add(&CaseResult {
                seed,
                subject: f.subject,
                mutations: f.mutations,
                stages: Vec::new(),
                outcome: Outcome::Hang {
                    stage: f.stage,
                    seconds: f.started.elapsed().as_secs_f64(),
                },
                millis: f.started.elapsed().as_millis() as u64,
            });
            hung = true;
            break;
        }
    }
    let status = child.wait().expect("harness: waiting for the child");
    let Some(max_started) = max_started else {
        let text = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        panic!(
            "harness: the fuzz child ({}) for seeds {first}..{} exited with {status} before \
             starting a case:\n{text}",
            launcher.program.display(),
            first + count
        );
    };
    if !in_flight.is_empty() {
        if in_flight.len() == 1 && !hung && count == 1 {
            let (seed, f) = in_flight.pop_first().expect("one in flight");
            // Give the stderr reader a moment to drain the dying words.
            std::thread::sleep(Duration::from_millis(50));
            let text = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
            report.add(&CaseResult {
                seed,
                subject: f.subject,
                mutations: f.mutations,
                stages: Vec::new(),
                outcome: Outcome::Abort {
                    stage: f.stage,
                    message: death_message(status, &text),
                    frame: driver::library_frame(&text),
                },
                millis: f.started.elapsed().as_millis() as u64,
            });
        } else {
            // Which of them killed the process, and where? Each runs again, alone.
            for (&seed, _) in &in_flight {
                run_child(launcher, config, seed, 1, 1, report, progress);
            }
        }
    }
    max_started + 1
}

/// "killed by signal 6 (SIGABRT): memory allocation of ... failed".
pub fn death_message(status: ExitStatus, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (_, Some(signal)) => format!(
            "killed by signal {signal}{}",
            match signal {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                7 => " (SIGBUS)",
                4 => " (SIGILL)",
                _ => "",
            }
        ),
        (Some(code), None) => format!("exit status {code}"),
        (None, None) => "ended".to_string(),
    };
    let before_backtrace = stderr.split("stack backtrace:").next().unwrap_or("");
    let last: Vec<&str> = before_backtrace
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("@@") && !l.starts_with("note: "))
        .collect();
    let words = last[last.len().saturating_sub(2)..].join(" | ");
    if words.is_empty() {
        how
    } else {
        format!("{how}: {words}")
    }
}
