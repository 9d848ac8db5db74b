#!/usr/bin/env bash
# Installs, when missing, the Python environment that exports PyTorch models the
# way users do (torch 2.13's exporters, and Hugging Face transformers for the
# AutoModelForSequenceClassification fixture), into the git-ignored
# .deps/py-export: used by tests/export_live.rs and by tests/exports/make.py, which
# regenerates the committed export fixtures. The torch wheel is the full CUDA build
# (about 4.7 GB with its nvidia-* dependencies): `import torch` needs them even on CPU.
# Idempotent: a second run does nothing. A venv made by the previous version of
# this script (torch 2.13.0, no transformers) is completed in place, not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.deps/py-export
stamp="$venv/.installed-torch-2.13.0-transformers-5.25.0"
previous="$venv/.installed-torch-2.13.0"
if [ ! -f "$stamp" ]; then
    if [ ! -f "$previous" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    echo "installing torch 2.13.0 + onnx exporters + transformers 5.25.0 into $venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        torch==2.13.0 torchvision==0.28.0 onnx==1.23.2 onnxscript==0.7.2 onnx_ir==1.1.0 \
        numpy==2.4.6 transformers==5.25.0
    rm -f "$previous"
    touch "$stamp"
fi
