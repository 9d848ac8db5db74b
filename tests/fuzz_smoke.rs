//! CI smoke run of the fuzzer (tests/fuzz/): 2,000 seeded cases over the bundled
//! models (original, patched, compiled; structure-aware and byte mutations) and
//! the dataset readers. Every case must end in `Ok` or an `Err` value; the test
//! fails listing each finding (panic, abort, hang) with the seed that replays it
//! (`cargo run --release --example fuzz -- --replay SEED`).
//!
//! The cases run in a child process (this test binary again, test `fuzz_child`)
//! with panics caught in process, so that an abort or a hang is reported with its
//! seed too. `LDAM_FUZZ_SEED` and `LDAM_FUZZ_CASES` change the seed range.

mod fuzz;

use fuzz::driver::Options;
use fuzz::supervise::{self, Launcher, RunConfig};
use std::time::Duration;

const CHILD_TEST: &str = "fuzz_child";

/// The cases themselves, run by `seeded_cases_end_in_ok_or_err` in a child.
#[test]
#[ignore = "the child process of seeded_cases_end_in_ok_or_err; does nothing on its own"]
fn fuzz_child() {
    if let Some(spec) = supervise::child_spec() {
        supervise::child_main(&spec);
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

#[test]
fn seeded_cases_end_in_ok_or_err() {
    let first = env_u64("LDAM_FUZZ_SEED", 0);
    let count = env_u64("LDAM_FUZZ_CASES", 2000);
    let launcher = Launcher {
        program: std::env::current_exe().expect("the test binary's path"),
        args: [
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from)
        .to_vec(),
    };
    let config = RunConfig {
        first,
        count,
        threads: 2,
        options: Options {
            ort_small: 0.3,
            ort_big: 0.05,
            tmp_root: None,
        },
        hang_limit: Duration::from_secs(60),
        slow: Duration::from_secs(5),
        mem_cap: Some(8 << 30),
        progress: false,
    };
    assert!(count > 0, "LDAM_FUZZ_CASES=0 runs nothing");
    let report = supervise::run(&launcher, &config);
    eprintln!("{}{}", report.summary(), report.notes_text());
    assert_eq!(report.cases, count, "cases run, of the {count} asked for");
    // An error that calls itself a bug, or a model ONNX Runtime takes in and
    // the tool gives back broken, is a finding too.
    assert!(
        report.notes.is_empty(),
        "{} notes (errors calling themselves a bug, outputs ONNX Runtime refuses):\n{}",
        report.notes.len(),
        report.notes_text()
    );
    assert!(
        report.findings.is_empty(),
        "{}every finding:\n{}replay one: cargo run --release --example fuzz -- --replay SEED \
         --ort-small 0.3 --ort-big 0.05",
        report.findings_text(),
        report.all_findings_text()
    );
}
