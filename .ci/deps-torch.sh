#!/usr/bin/env bash
# Installs libtorch for the `torch` cargo feature, when missing, into the
# project-local, git-ignored folder .deps/torch, and exports what the build needs:
#   LIBTORCH=<repo>/.deps/torch/torch   (include/ and lib/ of the pinned wheel)
#
# tch 0.26.0 needs PyTorch 2.13.0. The PyPI wheel is a CUDA build; on CPU it only
# needs two small CUDA runtime packages next to it (libcudart and libcupti are
# linked by libtorch_cpu, found through its own rpath), so nothing else is
# installed (--no-deps). build.rs sets an rpath to $LIBTORCH/lib, so the binaries
# run without LD_LIBRARY_PATH.
#
# Usage: `source .ci/deps-torch.sh` (exports LIBTORCH into the calling shell), or
# `bash .ci/deps-torch.sh` (installs and prints the export line).
# Idempotent: a second run only exports.
#
# CUDA (`cargo build --features torch,cuda`, GPU machines): with LDAM_TORCH_CUDA=1
# the wheel is installed with all its dependencies (the nvidia-* CUDA 13 and cuDNN
# wheels, about 4.5 GB) into .deps/torch-cuda instead; libtorch_cuda finds them
# through its own rpath.

_ldam_deps_torch() {
    local root torch_version dir stamp
    local -a packages deps
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    torch_version=2.13.0
    if [ "${LDAM_TORCH_CUDA:-0}" = 1 ]; then
        dir="$root/.deps/torch-cuda"
        packages=("torch==$torch_version")
        deps=()
    else
        dir="$root/.deps/torch"
        packages=("torch==$torch_version" "nvidia-cuda-runtime==13.0.96.*" "nvidia-cuda-cupti==13.0.85.*")
        deps=(--no-deps)
    fi
    stamp="$dir/.installed-$torch_version"
    if [ ! -f "$stamp" ]; then
        echo "installing torch $torch_version (libtorch for --features torch) into $dir" >&2
        rm -rf "$dir"
        mkdir -p "$dir" || return 1
        python3 -m pip install --quiet "${deps[@]}" --only-binary=:all: \
            --disable-pip-version-check --no-compile --root-user-action=ignore \
            --python-version 3.11 --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 \
            --target "$dir" "${packages[@]}" || return 1
        touch "$stamp"
    fi
    export LIBTORCH="$dir/torch"
    echo "export LIBTORCH=$LIBTORCH"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    _ldam_deps_torch
else
    _ldam_deps_torch
    _ldam_status=$?
    unset -f _ldam_deps_torch
    return "$_ldam_status"
fi
