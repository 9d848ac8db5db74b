#!/usr/bin/env bash
# The speed benchmark: training throughput of ResNet-32 (models/resnet32.onnx)
# and the CNN (models/cnn.onnx) with the paper's recipe (LDAM loss, cosine head,
# SGD momentum 0.9, weight decay 2e-4) in three implementations, on one fixed
# batch, the same process kind and thread count for each:
#   pytorch        PyTorch 2.13 eager from Python (benches/speed_pytorch.py)
#   torch-backend  `--backend torch`: the patched graph interpreted over libtorch
#                  (examples/bench_torch.rs; on the CNN also `tch-direct`, the
#                  same libtorch ops called by hand, to show the interpreter's cost)
#   compiled       the compiled training step in ONNX Runtime (examples/bench_step.rs)
# The three alternate within every repetition, so that load from other processes
# on a shared machine spreads over all of them; the table gives min and median
# img/s over the repetitions and their ratios to PyTorch, and each process's
# peak resident memory (max over repetitions).
#
# Usage: bash benches/speed.sh [--batch 128[,256...]] [--repeat 3] [--steps 10] [--models resnet32,cnn] [--threads 2] [--wait passive|active]
# Other CIFAR ResNet depths (--models resnet20,resnet56: depth 6n + 2) are exported
# once into target/speed/ (needs the onnx package: .deps/python from .ci/deps.sh).
#
# Installs, when missing, the pinned torch==2.13.0 wheel (with numpy) for Python
# into the git-ignored .deps/bench (the same wheel .ci/deps-torch.sh takes
# libtorch from), and builds the two examples in release mode.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

batches=128
repeat=3
steps=10
models=resnet32,cnn
threads=2
wait_policy=passive
while [ $# -gt 0 ]; do
    case "$1" in
        --batch) batches=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --models) models=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --wait) wait_policy=$2; shift 2 ;;
        *) echo "unknown argument '$1' (see the head of $0)" >&2; exit 2 ;;
    esac
done

source benches/deps-bench.sh
bench=$BENCH_PYTHONPATH
source .ci/deps-torch.sh >/dev/null
cargo build --quiet --release --locked --features torch --example bench_step --example bench_torch

# One thread count and one waiting policy for all: libtorch and PyTorch read
# OMP_NUM_THREADS and OMP_WAIT_POLICY; ONNX Runtime gets one intra-op thread per
# core whose threads sleep between ops (the trainer's settings, src/runtime.rs).
# Spinning threads (--wait active, OpenMP's default) ran PyTorch's CNN step 3.5x
# slower on a machine whose cores other processes share.
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OMP_WAIT_POLICY=$wait_policy
out="$root/target/speed"
mkdir -p "$out"
results="$out/results-$(date +%Y%m%d-%H%M%S).txt"
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
    "load $(cut -d' ' -f1-3 /proc/loadavg); batch $batches, $repeat x $steps steps, $threads threads, OpenMP wait $wait_policy" | tee "$results"

# Runs one measurement, appends its result lines and its peak RSS (kB) as
# `rss IMPL MODEL BATCH KB` for each implementation it measured.
measure() {
    local log
    log=$(mktemp)
    /usr/bin/time -f "peak-rss %M" "$@" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
    grep '^result ' "$log" | tee -a "$results"
    local kb
    kb=$(grep '^peak-rss ' "$log" | cut -d' ' -f2)
    grep '^result ' "$log" | awk -v kb="$kb" '{print "rss", $2, $3, $4, kb}' >>"$results"
    rm -f "$log"
}

for rep in $(seq "$repeat"); do
    for batch in ${batches//,/ }; do
        for model in ${models//,/ }; do
            file="models/$model.onnx"
            if [ ! -f "$file" ]; then
                # Another depth (resnet20, resnet56, ...): exported once, as models/export.py does.
                file="$out/$model.onnx"
                [ -f "$file" ] || PYTHONPATH="$bench:$root/.deps/python" python3 benches/speed_pytorch.py \
                    export --model "$model" --out "$file" >"$file.log" 2>&1 || { cat "$file.log" >&2; exit 1; }
            fi
            torch_model=$model
            [ "$model" = resnet32 ] || [ "$model" = cnn ] || torch_model=$file
            measure env PYTHONPATH="$bench" python3 benches/speed_pytorch.py measure \
                --model "$model" --batch "$batch" --steps "$steps" --threads "$threads"
            # bench_torch runs the CNN 4x as many steps (its steps are short).
            torch_steps=$steps
            [ "$model" = cnn ] && torch_steps=$(( (steps + 3) / 4 ))
            measure target/release/examples/bench_torch --model "$torch_model" --batch "$batch" \
                --steps "$torch_steps"
            measure target/release/examples/bench_step "$file" --batch "$batch" \
                --steps "$steps" --no-inference
        done
    done
done
echo
PYTHONPATH="$bench" python3 benches/speed_pytorch.py table "$results"
echo
echo "results: $results"
