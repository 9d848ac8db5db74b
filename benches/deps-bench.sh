#!/usr/bin/env bash
# Installs the benchmarks' Python packages, when missing, into the git-ignored
# .deps/bench and exports BENCH_PYTHONPATH pointing there:
#   torch==2.13.0 and numpy (the wheel .ci/deps-torch.sh takes libtorch from);
#   with BENCH_TORCHVISION=1 also torchvision 0.28.0 (the release that pins
#   torch 2.13.0) and pillow.
# Usage: `source benches/deps-bench.sh` from a benchmark script.

_ldam_deps_bench() {
    local root torch_version=2.13.0 torchvision_version=0.28.0 bench
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    bench="$root/.deps/bench"
    local pip=(python3 -m pip install --quiet --disable-pip-version-check --no-compile
        --root-user-action=ignore --target "$bench")
    if [ ! -f "$bench/.installed-$torch_version" ]; then
        echo "installing torch $torch_version and numpy for Python into $bench" >&2
        rm -rf "$bench"
        "${pip[@]}" "torch==$torch_version" numpy || return 1
        touch "$bench/.installed-$torch_version"
    fi
    if [ "${BENCH_TORCHVISION:-0}" = 1 ] && [ ! -f "$bench/.installed-torchvision-$torchvision_version" ]; then
        echo "installing torchvision $torchvision_version and pillow into $bench" >&2
        "${pip[@]}" --no-deps "torchvision==$torchvision_version" pillow || return 1
        touch "$bench/.installed-torchvision-$torchvision_version"
    fi
    export BENCH_PYTHONPATH="$bench"
}
_ldam_deps_bench
