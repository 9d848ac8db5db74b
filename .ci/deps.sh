#!/usr/bin/env bash
# Installs what the tests and the demo need, when missing, into project-local,
# git-ignored folders:
#   .deps/onnxruntime/libonnxruntime.so.1.31.1  (from the onnxruntime==1.31.1 wheel on PyPI)
# and, system-wide, Fashion-MNIST (Debian package dataset-fashion-mnist,
# /usr/share/datasets/fashion-mnist) for the training tests and the demo.
# Idempotent: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ort_dir=.deps/onnxruntime
if [ ! -f "$ort_dir/libonnxruntime.so.$ORT_VERSION" ]; then
    echo "installing ONNX Runtime $ORT_VERSION into $ort_dir" >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 "onnxruntime==$ORT_VERSION" -d "$tmp"
    mkdir -p "$ort_dir"
    python3 - "$tmp"/onnxruntime-*.whl "$ort_dir" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/libonnxruntime") and ".so" in base:
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
PY
fi

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
    echo "installing Fashion-MNIST (dataset-fashion-mnist) into $fmnist" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq || true
    "${sudo_cmd[@]}" apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
