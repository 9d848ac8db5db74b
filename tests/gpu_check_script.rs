//! `.ci/gpu-check.sh` on a machine without a usable NVIDIA GPU stops at once,
//! before installing or building anything, with exit status 2 and a message that
//! says why. The nvidia-smi it asks is replaced (`LDAM_NVIDIA_SMI`) by one that is
//! absent, one that fails as it does without a driver, one that lists no GPU and
//! one whose driver is too old, so that the test means the same on a GPU machine.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A stand-in nvidia-smi running `body` (a shell script).
fn fake_smi(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

fn assert_stops(smi: &str, reason: &str) {
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(common::repo_dir().join(".ci/gpu-check.sh"))
        .env("LDAM_NVIDIA_SMI", smi)
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{smi}: {stderr}");
    assert!(
        stderr.contains("no usable NVIDIA GPU") && stderr.contains(reason),
        "{smi}: the message says why ({reason}): {stderr}"
    );
    assert!(
        stderr.contains("nothing was checked"),
        "{smi}: says that nothing ran: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{smi}: stops at once"
    );
}

#[test]
fn the_gpu_check_stops_at_once_with_a_clear_message_without_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent/nvidia-smi");
    assert_stops(&absent.to_string_lossy(), "is not on PATH");
    let failing = fake_smi(
        dir.path(),
        "failing",
        "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9",
    );
    assert_stops(&failing, "NVIDIA-SMI has failed");
    let empty = fake_smi(dir.path(), "empty", "exit 0");
    assert_stops(&empty, "lists no GPU");
    let old = fake_smi(
        dir.path(),
        "old",
        r#"case "$1" in
  --query-gpu=*) echo '0, NVIDIA Fake, 535.54, 81559 MiB' ;;
  *) echo '| NVIDIA-SMI 535.54    Driver Version: 535.54    CUDA Version: 12.2 |' ;;
esac"#,
    );
    assert_stops(&old, "supports CUDA 12.2");
}
