#!/usr/bin/env bash
# Installs, when missing, the Python environment that exports PyTorch models the
# way users do (torch 2.13's exporters), into the git-ignored .deps/py-export:
# used by tests/export_live.rs and by tests/exports/make.py, which regenerates the
# committed export fixtures. The torch wheel is the full CUDA build (about 4.7 GB
# with its nvidia-* dependencies): `import torch` needs them even on CPU.
# Idempotent: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.deps/py-export
stamp="$venv/.installed-torch-2.13.0"
if [ ! -f "$stamp" ]; then
    echo "installing torch 2.13.0 + onnx exporters into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        torch==2.13.0 torchvision==0.28.0 onnx==1.23.2 onnxscript==0.7.2 onnx_ir==1.1.0 \
        numpy==2.4.6
    touch "$stamp"
fi
