"""Exports a small Fashion-MNIST-shaped CNN (Conv-BatchNorm-ReLU twice, a linear
head) as a user would, for tests/export_live.rs:

    python tests/exports/live.py OUT_DIR

writes OUT_DIR/default.onnx (+ default.onnx.data) with torch 2.13's default
exporter and nothing else (`torch.onnx.export(model, (x,), path)`: dynamo, batch
fixed at 4, BatchNorm folded, external data), and OUT_DIR/trainable.onnx with
python/ldam_onnx_export.py's export_for_training.
"""

import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from ldam_onnx_export import export_for_training  # noqa: E402

out = sys.argv[1]
torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
)
model.train()
x = torch.randn(4, 1, 28, 28)
torch.onnx.export(model, (x,), os.path.join(out, "default.onnx"))
export_for_training(model, x, os.path.join(out, "trainable.onnx"))
