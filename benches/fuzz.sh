#!/usr/bin/env bash
# Long fuzz runs (tests/fuzz/, driver examples/fuzz.rs): builds the CLI and the
# fuzz driver in release and runs the driver.
#
#   bash benches/fuzz.sh --cases 20000 [--seed S] [--threads T]   # library in process
#   bash benches/fuzz.sh --cases 2000 --process                    # the ldam-onnx binary
#   bash benches/fuzz.sh --replay SEED [--process]                 # one case, every stage
#
# Every other flag goes to the driver (`bash benches/fuzz.sh --help` lists them).
# In process, the cases run in a supervised child (an abort or a hang is reported
# with its seed and does not end the run); --process runs `ldam-onnx inspect`,
# `patch`, `compile` (and `eval`, `patch --labels-file` for dataset files) on the
# mutated files under an address-space limit and a time limit. The exit status is
# 1 when there are findings. FUZZ_FEATURES=torch builds with libtorch (not needed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
features=()
if [ -n "${FUZZ_FEATURES:-}" ]; then
    features=(--features "$FUZZ_FEATURES")
fi
cargo build --release --locked "${features[@]}" --bin ldam-onnx --example fuzz >&2
exec "$ROOT/target/release/examples/fuzz" "$@"
