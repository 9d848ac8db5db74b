#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU whenever one is available.
#
#   bash .ci/gpu-check.sh
#
# 1. Stops at once, exit status 2, when there is no usable NVIDIA GPU (no
#    nvidia-smi, nvidia-smi failing or listing none, or a driver older than CUDA 13).
# 2. Installs, when missing, into git-ignored folders:
#    - the pinned torch==2.13.0 wheel with its CUDA 13 and cuDNN 9 libraries
#      (`LDAM_TORCH_CUDA=1 source .ci/deps-torch.sh`: .deps/torch-cuda, LIBTORCH);
#    - ONNX Runtime's GPU build of the same release the tests pin (the
#      onnxruntime-gpu==1.31.1 wheel's libraries: .deps/onnxruntime-gpu). Its CUDA
#      provider is built against CUDA 13 (libcublas.so.13, libcudart.so.13, and
#      cuDNN 9), the libraries the torch wheel brings, so both runtimes load the
#      same ones from .deps/torch-cuda/nvidia.
# 3. Builds `--features cuda` and `--features torch,cuda` (release).
# 4. Runs the cross-backend tests on the GPU (LDAM_TEST_DEVICE, default cuda:0):
#    tests/gpu.rs (ONNX Runtime's CUDA provider and libtorch on CUDA against ONNX
#    Runtime on the CPU, every bundled model) and tests/torch_backend.rs (which
#    runs its CUDA cross-check when libtorch sees a GPU).
# 5. Prints the training throughput of ResNet-32 at batch 128 on the GPU: the
#    compiled step in ONNX Runtime's CUDA provider, the torch backend on CUDA, and
#    PyTorch 2.13.0 eager on CUDA from the same wheel (the network of
#    benches/speed_pytorch.py, the recipe the patched graph computes).
# Every stage runs even when an earlier check fails; the exit status is 1 when any
# failed.
#
# LDAM_NVIDIA_SMI names the nvidia-smi to ask (default: nvidia-smi on PATH).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

say() { printf 'gpu-check: %s\n' "$*" >&2; }
no_gpu() {
    say "no usable NVIDIA GPU: $*"
    say "this check needs a machine with an NVIDIA GPU and its driver (CUDA 13: driver 580 or newer); nothing was checked"
    exit 2
}

# 1. The GPU, before anything else.
smi=${LDAM_NVIDIA_SMI:-nvidia-smi}
command -v "$smi" >/dev/null 2>&1 || no_gpu "'$smi' is not on PATH"
if ! gpus=$("$smi" --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1); then
    no_gpu "'$smi' fails: $(printf '%s' "$gpus" | head -n 3)"
fi
[ -n "$gpus" ] || no_gpu "'$smi' lists no GPU"
cuda_version=$("$smi" 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\.\([0-9]*\).*/\1.\2/p' | head -n 1)
if [ -n "$cuda_version" ] && [ "${cuda_version%%.*}" -lt 13 ]; then
    no_gpu "the driver supports CUDA $cuda_version; torch 2.13.0 and onnxruntime-gpu 1.31.1 need CUDA 13"
fi
device=${LDAM_TEST_DEVICE:-cuda:0}
export LDAM_TEST_DEVICE=$device
say "GPUs (index, name, driver, memory): $(printf '%s' "$gpus" | paste -sd ';')"
say "driver CUDA version ${cuda_version:-unknown}; testing on $device"

failed=()
stage() { # stage NAME COMMAND...: runs COMMAND, records NAME when it fails
    local name=$1
    shift
    say "== $name"
    if ! "$@"; then
        say "FAILED: $name"
        failed+=("$name")
        return 1
    fi
}

# 2. Libraries.
ORT_VERSION=1.31.1
ort_dir=$root/.deps/onnxruntime-gpu
install_ort_gpu() {
    [ -f "$ort_dir/.installed-$ORT_VERSION" ] && return 0
    local tmp
    tmp=$(mktemp -d) || return 1
    say "installing onnxruntime-gpu $ORT_VERSION's libraries into $ort_dir"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
        --python-version 3.11 --platform manylinux_2_28_x86_64 \
        "onnxruntime-gpu==$ORT_VERSION" -d "$tmp" || { rm -rf "$tmp"; return 1; }
    rm -rf "$ort_dir" && mkdir -p "$ort_dir" || return 1
    python3 - "$tmp"/onnxruntime_gpu-*.whl "$ort_dir" <<'PY' || { rm -rf "$tmp"; return 1; }
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        # The core library, the shared-provider bridge and the CUDA provider.
        if name.startswith("onnxruntime/capi/libonnxruntime") and "tensorrt" not in base:
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
PY
    rm -rf "$tmp"
    touch "$ort_dir/.installed-$ORT_VERSION"
}
libraries_ready=1
say "== install torch 2.13.0 with its CUDA libraries (LDAM_TORCH_CUDA=1 .ci/deps-torch.sh)"
if ! LDAM_TORCH_CUDA=1 source .ci/deps-torch.sh >/dev/null; then
    say "FAILED: installing torch 2.13.0 with its CUDA libraries"
    failed+=("install torch")
    libraries_ready=0
fi
stage "install onnxruntime-gpu $ORT_VERSION" install_ort_gpu || libraries_ready=0
if [ "$libraries_ready" = 0 ]; then
    say "the libraries are not installed, so nothing can be built or run"
    exit 1
fi
cuda_libs=$(find "$root/.deps/torch-cuda/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$ort_dir:$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ORT_DYLIB_PATH=$ort_dir/libonnxruntime.so.$ORT_VERSION
missing=$(ldd "$ort_dir/libonnxruntime_providers_cuda.so" | grep 'not found')
if [ -n "$missing" ]; then
    say "ONNX Runtime's CUDA provider lacks libraries: $(printf '%s' "$missing" | paste -sd' ')"
    failed+=("CUDA libraries for ONNX Runtime")
fi

# 3. Builds.
stage "cargo build --release --features cuda" cargo build --release --locked --features cuda
stage "cargo build --release --features torch,cuda" cargo build --release --locked --features torch,cuda

# 4. Cross-backend tests on the GPU.
stage "tests/gpu.rs, ONNX Runtime CUDA (--features cuda)" \
    cargo test --release --locked --features cuda --test gpu -- --nocapture
stage "tests/gpu.rs and tests/torch_backend.rs, with libtorch (--features torch,cuda)" \
    cargo test --release --locked --features torch,cuda --test gpu --test torch_backend -- --nocapture

# 5. Throughput.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
stage "throughput: ONNX Runtime CUDA step and torch backend on CUDA" bash -c \
    'set -o pipefail; cargo test --release --locked --features torch,cuda --test gpu throughput -- --ignored --nocapture --test-threads 1 | tee -a "$1"' _ "$results"
pytorch_eager() {
    PYTHONPATH="$root/.deps/torch-cuda" python3 - "$device" <<'PY' | tee -a "$results"
import sys, time
if sys.version_info[:2] != (3, 11):
    raise SystemExit(f"python3 is {sys.version.split()[0]}; the pinned torch wheel in .deps/torch-cuda is for 3.11")
sys.path.insert(0, "benches")
import torch, torch.nn.functional as F
from speed_pytorch import COUNTS, build  # the network and recipe of the CPU speed benchmark

device = torch.device(sys.argv[1])
batch, timed = 128, 20
net, shape = build("resnet32")
net = net.to(device).train()
m = [1.0 / c ** 0.25 for c in COUNTS]
margins = torch.tensor([v * 0.5 / max(m) for v in m], device=device)
g = torch.Generator().manual_seed(7)
x = (torch.rand((batch,) + shape, generator=g) * 2 - 1).to(device)
y = torch.randint(0, 10, (batch,), generator=g).to(device)
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)

def step():
    logits = net(x)
    scores = 30.0 * (logits - F.one_hot(y, 10).to(logits.dtype) * margins)
    loss = F.cross_entropy(scores, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()  # reads the loss back every step, as the Rust trainers do

for _ in range(2):
    step()
torch.cuda.synchronize(device)
started = time.perf_counter()
for _ in range(timed):
    step()
torch.cuda.synchronize(device)
print(f"result pytorch-eager-cuda resnet32 {batch} {batch * timed / (time.perf_counter() - started):.1f}")
print(f"version torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} tf32-conv {torch.backends.cudnn.allow_tf32} tf32-matmul {torch.backends.cuda.matmul.allow_tf32}")
PY
}
stage "throughput: PyTorch eager on CUDA" pytorch_eager

gpu_name=$(printf '%s\n' "$gpus" | awk -F', ' -v d="${device#cuda:}" '$1 == d { print $2 }')
# `result IMPLEMENTATION MODEL BATCH IMAGES_PER_S`, wherever the test harness puts it on a line.
rate() { grep -o "result $1 [^ ]* [0-9]* [0-9.]*" "$results" | tail -n 1 | cut -d' ' -f5; }
printf '\nResNet-32 training step, batch 128, on %s (%s): images/s over 20 steps after 2 warm-up steps\n' "${gpu_name:-the GPU}" "$device"
printf '| implementation | images/s |\n|---|---|\n'
printf '| compiled step, ONNX Runtime %s CUDA provider | %s |\n' "$ORT_VERSION" "$(rate ort-cuda)"
printf '| torch backend (patched graph on libtorch 2.13.0, CUDA) | %s |\n' "$(rate torch-backend-cuda)"
printf '| PyTorch 2.13.0 eager, CUDA (same wheel) | %s |\n' "$(rate pytorch-eager-cuda)"
grep '^version' "$results" || true

if [ ${#failed[@]} -gt 0 ]; then
    say "failed: $(printf '%s; ' "${failed[@]}")"
    exit 1
fi
say "every GPU check passed"
