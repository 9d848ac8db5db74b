#!/usr/bin/env bash
# Patches and compiles MODEL (default models/cnn.onnx) and times its step in
# native ONNX Runtime in both state layouts (benches/step_layout.py).
# Usage: bash benches/step_layout.sh [MODEL] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/cnn.onnx}
batch=${2:-128}
py=.deps/python
if ! PYTHONPATH=$py python3 -c "import onnx, onnxruntime" 2>/dev/null; then
    python3 -m pip install --quiet --target "$py" onnx==1.20.0 onnxruntime==1.31.1 numpy
fi
cargo build --quiet --locked --release --bin ldam-onnx
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
target/release/ldam-onnx patch "$model" -o "$tmp/m.ldam.onnx" \
    --class-counts 5000,2997,1796,1077,645,387,232,139,83,50 >/dev/null
target/release/ldam-onnx compile "$tmp/m.ldam.onnx" -o "$tmp/m.train.onnx" >/dev/null
PYTHONPATH=$py python3 benches/step_layout.py "$tmp/m.train.onnx" "$batch"
