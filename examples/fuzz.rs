//! Long fuzz runs of the library's input paths (see `tests/fuzz/mod.rs`).
//!
//! ```sh
//! bash benches/fuzz.sh --cases 20000 --seed 0            # in process, supervised children
//! bash benches/fuzz.sh --cases 2000 --process            # the ldam-onnx binary under limits
//! target/release/examples/fuzz --replay 1234             # one case, every stage printed
//! target/release/examples/fuzz --replay 1234 --write-input /tmp/case   # its input files
//! ```
//!
//! In process, cases run in a supervised child process (this program again), so
//! that an abort or a hang is reported with its seed instead of ending the run;
//! `--no-fork` runs them in this process. Findings are listed by place, each with
//! the seed that reproduces it.

#[path = "../tests/fuzz/mod.rs"]
mod fuzz;

use clap::Parser;
use fuzz::driver::{self, Event, Options};
use fuzz::process::{self, ProcessConfig};
use fuzz::supervise::{self, Launcher, RunConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Seeded structure-aware fuzzing of ldam-onnx's model and dataset inputs")]
struct Args {
    /// Number of cases (seeds SEED, SEED+1, ...)
    #[arg(long, default_value_t = 1000)]
    cases: u64,
    /// First seed
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (in process) or concurrent commands (--process) [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Run the ldam-onnx binary on the mutated files instead of the library in process
    #[arg(long)]
    process: bool,
    /// Run one seed and print every stage (with --process: through the binary)
    #[arg(long, value_name = "SEED")]
    replay: Option<u64>,
    /// With --replay: write the case's input files into DIR and stop
    #[arg(long, value_name = "DIR", requires = "replay")]
    write_input: Option<PathBuf>,
    /// Run the cases in this process (an abort ends the run)
    #[arg(long)]
    no_fork: bool,
    /// A case running longer than this many seconds is a hang
    #[arg(long, default_value_t = 30.0)]
    hang_limit: f64,
    /// List cases slower than this many milliseconds
    #[arg(long, default_value_t = 2000)]
    slow_ms: u64,
    /// Address-space limit of the fuzzed processes, in GiB
    #[arg(long, default_value_t = 8.0)]
    mem_cap_gib: f64,
    /// Fraction of mlp/cnn cases that create ONNX Runtime sessions
    #[arg(long, default_value_t = Options::default().ort_small)]
    ort_small: f64,
    /// Fraction of resnet32/shufflenet cases that create ONNX Runtime sessions
    #[arg(long, default_value_t = Options::default().ort_big)]
    ort_big: f64,
    /// The ldam-onnx binary for --process [default: beside this program's folder]
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    if let Some(spec) = supervise::child_spec() {
        supervise::child_main(&spec);
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let options = Options {
        ort_small: args.ort_small,
        ort_big: args.ort_big,
        tmp_root: None,
    };
    let mem_cap = (args.mem_cap_gib * (1u64 << 30) as f64) as u64;
    let hang_limit = Duration::from_secs_f64(args.hang_limit);
    let slow = Duration::from_millis(args.slow_ms);
    let process_config = || ProcessConfig {
        binary: args.bin.clone().unwrap_or_else(default_binary),
        time_limit: hang_limit,
        mem_cap,
        slow,
    };

    if let Some(seed) = args.replay {
        return replay(seed, &args, &options, process_config);
    }

    let mode;
    let report = if args.process {
        let config = process_config();
        if !config.binary.is_file() {
            eprintln!(
                "fuzz: {} not found; build it (cargo build --release --bin ldam-onnx) or pass --bin",
                config.binary.display()
            );
            return ExitCode::FAILURE;
        }
        mode = format!("process mode ({})", config.binary.display());
        process::run(&config, args.seed, args.cases, threads, true)
    } else if args.no_fork {
        mode = "in process, no child".to_string();
        run_here(args.seed, args.cases, threads, &options, slow)
    } else {
        mode = "in process, supervised child".to_string();
        let launcher = Launcher {
            program: std::env::current_exe().expect("this program's path"),
            args: Vec::new(),
        };
        supervise::run(
            &launcher,
            &RunConfig {
                first: args.seed,
                count: args.cases,
                threads,
                options: options.clone(),
                hang_limit,
                slow,
                mem_cap: Some(mem_cap),
                progress: true,
            },
        )
    };
    println!(
        "fuzz: seeds {}..{}, {threads} threads, {mode}",
        args.seed,
        args.seed + args.cases
    );
    print!("{}", report.summary());
    print!("{}", report.notes_text());
    print!("{}", report.findings_text());
    if !report.findings.is_empty() {
        println!(
            "replay one: target/release/examples/fuzz --replay SEED{}",
            if args.process { " --process" } else { "" }
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `target/<profile>/ldam-onnx` for `target/<profile>/examples/fuzz`.
fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this program's path");
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("ldam-onnx"))
        .unwrap_or_else(|| PathBuf::from("ldam-onnx"))
}

/// Runs the cases on threads of this process (no protection from aborts).
fn run_here(
    first: u64,
    count: u64,
    threads: usize,
    options: &Options,
    slow: Duration,
) -> fuzz::Report {
    let report = std::sync::Mutex::new(fuzz::Report::new(slow));
    let next = std::sync::Mutex::new(first);
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = {
                    let mut next = next.lock().unwrap();
                    if *next >= first + count {
                        break;
                    }
                    *next += 1;
                    *next - 1
                };
                let result = driver::run_case(seed, options, &mut |_| {});
                report.lock().unwrap().add(&result);
            });
        }
    });
    let mut report = report.into_inner().unwrap();
    report.elapsed = start.elapsed();
    report
}

fn replay(
    seed: u64,
    args: &Args,
    options: &Options,
    process_config: impl Fn() -> ProcessConfig,
) -> ExitCode {
    if let Some(dir) = &args.write_input {
        std::fs::create_dir_all(dir).expect("creating the output folder");
        let prepared = driver::prepare(seed, dir);
        if let driver::Input::Model { bytes } = &prepared.input {
            std::fs::write(dir.join("model.onnx"), bytes).expect("writing model.onnx");
        }
        println!(
            "seed {seed} [{}] written to {}",
            prepared.subject.name(),
            dir.display()
        );
        for m in &prepared.mutations {
            println!("  mutation: {m}");
        }
        return ExitCode::SUCCESS;
    }
    let result = if args.process {
        let tmp = tempfile::tempdir().expect("temporary folder");
        process::run_process_case(seed, &process_config(), tmp.path())
    } else {
        driver::run_case(seed, options, &mut |event| match event {
            Event::Prepared { subject, mutations } => {
                eprintln!("seed {seed} [{subject}]");
                for m in mutations {
                    eprintln!("  mutation: {m}");
                }
            }
            Event::Stage(stage) => eprintln!("  stage {stage}"),
        })
    };
    for stage in &result.stages {
        match &stage.error {
            None => println!("  {:<20} ok", stage.stage),
            Some(e) => println!("  {:<20} err: {e}", stage.stage),
        }
    }
    match fuzz::Finding::of(&result) {
        None => {
            println!("seed {seed}: ok ({} ms)", result.millis);
            ExitCode::SUCCESS
        }
        Some(finding) => {
            println!("FINDING {}", finding.line());
            ExitCode::FAILURE
        }
    }
}
