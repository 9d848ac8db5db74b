#!/usr/bin/env bash
# End-to-end demo on the bundled networks: installs ONNX Runtime if missing, builds
# the tool, patches every model in models/ with LDAM-DRW for CIFAR-10-LT class
# counts (ratio 100), and runs each patched graph once in ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/deps.sh
cargo build --release --quiet --examples --bins
out=${1:-target/demo}
mkdir -p "$out"
counts=5000,2997,1796,1077,645,387,232,139,83,50
for model in models/*.onnx; do
    stem=$(basename "$model" .onnx)
    target/release/ldam-onnx patch "$model" --class-counts "$counts" -o "$out/$stem.ldam.onnx" --force
done
target/release/ldam-onnx inspect "$out/resnet32.ldam.onnx"
target/release/examples/run_patched "$out"/*.ldam.onnx
