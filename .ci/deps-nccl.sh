#!/usr/bin/env bash
# Installs NCCL for `--features mpi,cuda` (gradients summed on the GPUs), when
# missing, into the project-local, git-ignored folder .deps/nccl, and puts it
# on LD_LIBRARY_PATH.
#
# NCCL comes from the nvidia-nccl-cu13 wheel, pinned to the release torch
# 2.13.0's CUDA 13 build depends on. The wheel holds lib/libnccl.so.2; the
# `cudarc` crate loads NCCL at run time as libnccl.so, so a link of that name
# is made beside it (a wheel cannot carry links). Nothing is needed to build:
# only to run on a GPU machine (.ci/gpu-check-mpi.sh sources this).
#
# Usage: `source .ci/deps-nccl.sh` (installs and exports into the calling
# shell), or `bash .ci/deps-nccl.sh` (installs and prints the export line).
# Idempotent: a second run only exports.

_ldam_deps_nccl() {
    local root version dir lib
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    version=2.29.7
    dir="$root/.deps/nccl"
    lib="$dir/nvidia/nccl/lib"
    if [ ! -f "$dir/.installed-$version" ]; then
        echo "installing NCCL $version (nvidia-nccl-cu13) into $dir" >&2
        rm -rf "$dir"
        mkdir -p "$dir" || return 1
        python3 -m pip install --quiet --no-deps --only-binary=:all: \
            --disable-pip-version-check --no-compile --root-user-action=ignore \
            --python-version 3.11 --platform manylinux_2_18_x86_64 \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --target "$dir" "nvidia-nccl-cu13==$version" || return 1
        [ -f "$lib/libnccl.so.2" ] || { echo "the wheel has no $lib/libnccl.so.2" >&2; return 1; }
        ln -sf libnccl.so.2 "$lib/libnccl.so" || return 1
        touch "$dir/.installed-$version"
    fi
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    _ldam_deps_nccl
else
    _ldam_deps_nccl
    _ldam_status=$?
    unset -f _ldam_deps_nccl
    return "$_ldam_status"
fi
