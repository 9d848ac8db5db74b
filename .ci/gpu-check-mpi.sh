#!/usr/bin/env bash
# The data-parallel GPU check: `--features mpi,cuda` on a machine with an NVIDIA
# GPU, where the ranks sum their fused gradient buffer with NCCL in GPU memory
# (NCCL from the nvidia-nccl-cu13 wheel, .ci/deps-nccl.sh).
# 1. tests/nccl.rs: NCCL loads (the pinned release), one rank joins a
#    communicator and sums a GPU buffer in place.
# 2. One GPU allows one rank, so it trains with K = 1 under mpirun (the split
#    step, the NCCL allreduce of the gradients, the MPI sum of the loss and the
#    logits and the rank checks all run; the sums are over one rank) on
#    cuda:<local rank>, checks that the run's report names NCCL, and compares
#    the epochs' loss and accuracy with the same run on the CPU (MPI sum).
#
#   bash .ci/gpu-check.sh        # first: installs ONNX Runtime's GPU build and CUDA
#   bash .ci/gpu-check-mpi.sh
#
# Exit status 2 when there is no usable NVIDIA GPU (nothing checked), 1 when a
# step fails.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

say() { printf 'gpu-check-mpi: %s\n' "$*" >&2; }
smi=${LDAM_NVIDIA_SMI:-nvidia-smi}
if ! command -v "$smi" >/dev/null 2>&1 || ! "$smi" -L 2>/dev/null | grep -q '^GPU'; then
    say "no usable NVIDIA GPU ('$smi' missing, failing or listing none); nothing was checked"
    exit 2
fi
ort_gpu="$root/.deps/onnxruntime-gpu/libonnxruntime.so.1.31.1"
if [ ! -f "$ort_gpu" ]; then
    say "ONNX Runtime's GPU build is missing ($ort_gpu): run bash .ci/gpu-check.sh first"
    exit 1
fi
source .ci/deps-mpi.sh || { say "installing Open MPI failed"; exit 1; }
bash .ci/deps.sh || exit 1
cargo build --locked --release --features mpi,cuda || { say "build failed"; exit 1; }
bin="$root/target/release/ldam-onnx"
export ORT_DYLIB_PATH="$ort_gpu"
cuda_libs=$(ls -d "$root"/.deps/torch-cuda/nvidia/*/lib 2>/dev/null | paste -sd: -)
export LD_LIBRARY_PATH="${cuda_libs}${cuda_libs:+:}$root/.deps/onnxruntime-gpu:${LD_LIBRARY_PATH:-}"
# Put first on the library path: NCCL is the pinned wheel's, found through its libnccl.so link.
source .ci/deps-nccl.sh >/dev/null || { say "installing NCCL failed"; exit 1; }
say "== tests/nccl.rs (--features mpi,cuda)"
cargo test --locked --release --features mpi,cuda --test nccl -- --nocapture || { say "FAILED: tests/nccl.rs"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" patch models/cnn.onnx -o "$work/cnn.ldam.onnx" --drw-epoch 1 \
    --class-counts 6000,3597,2156,1292,774,464,278,166,99,60 >/dev/null || exit 1
args=(train "$work/cnn.ldam.onnx" --train /usr/share/datasets/fashion-mnist --train-limit 4096
      --test-limit 1000 --epochs 2 --batch-size 128 --augment none --no-shuffle
      --allow-count-mismatch --quiet)
status=0
for device in cuda cpu; do
    LDAM_ONNX_CHECK_RANKS=1 mpirun -np 1 "$bin" "${args[@]}" --device "$device" \
        --out "$work/$device" 2>"$work/$device.log" || { say "K = 1 on $device failed:"; cat "$work/$device.log" >&2; status=1; }
done
[ $status -eq 0 ] || exit 1
if ! grep -q 'NCCL 2\.29\.7 on cuda:0' "$work/cuda/report.json"; then
    say "the GPU run did not sum with NCCL; its runtime: $(grep '"runtime"' "$work/cuda/report.json")"
    exit 1
fi
steps=$(grep -c 'ranks hold identical parameters' "$work/cuda.log")
say "cuda: $steps steps checked; metrics (cuda, then cpu):"
cat "$work/cuda/metrics.csv" "$work/cpu/metrics.csv" >&2
python3 - "$work/cuda/metrics.csv" "$work/cpu/metrics.csv" <<'PY' || status=1
import csv, sys
gpu, cpu = (list(csv.DictReader(open(p))) for p in sys.argv[1:3])
for g, c in zip(gpu, cpu):
    loss = abs(float(g["train_loss"]) - float(c["train_loss"])) / abs(float(c["train_loss"]))
    acc = abs(float(g["test_acc"]) - float(c["test_acc"]))
    print(f"epoch {g['epoch']}: train loss differs by {loss:.2e} (relative), test accuracy by {acc:.2f} points")
    # Different kernels, same step: the runs stay close (BatchNorm and the
    # LDAM scale amplify rounding, so not to the bit).
    if loss > 1e-2 or acc > 2.0:
        sys.exit("GPU and CPU runs differ beyond rounding")
PY
exit $status
