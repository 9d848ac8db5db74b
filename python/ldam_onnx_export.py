"""Export a PyTorch classifier to ONNX so that ldam-onnx can train it.

    import torch
    from ldam_onnx_export import export_for_training

    model = MyNet(num_classes=10)            # any torch.nn.Module, train or eval mode
    example = torch.randn(2, 3, 32, 32)      # one example batch (batch size >= 2)
    export_for_training(model, example, "mynet.onnx")

    # then, in a shell:
    #   ldam-onnx patch mynet.onnx --class-counts 5000,2997,...,50 -o mynet.ldam.onnx
    #   ldam-onnx train mynet.ldam.onnx --train DATA --out runs/mynet

Several inputs: pass a tuple, ``export_for_training(model, (tokens, mask), path,
input_names=("tokens", "mask"))``. Only torch and onnx are needed (copy this file
next to your script, or put its folder on PYTHONPATH).

What the file looks like, and why the plain ``torch.onnx.export(model, (x,), path)``
is not enough for training (torch 2.13, whose default is the dynamo exporter):

- BatchNorm stays a ``BatchNormalization`` node with ``training_mode=1`` and its own
  weight, bias, running mean and running variance initializers. The dynamo exporter
  always emits inference-mode BatchNormalization (even for a model in train mode and
  with ``training=TrainingMode.TRAINING``), and its default optimisation folds it into
  the preceding Conv, which leaves nothing to train. This helper therefore uses the
  TorchScript exporter (``dynamo=False``) with ``training=TrainingMode.TRAINING`` and
  ``do_constant_folding=False``.
- The batch dimension of every input and output is symbolic, named ``batch``
  (the dynamo default fixes it at the example's batch size).
- Initializers carry the ``state_dict`` names (``layer1.0.bn1.weight``,
  ``fc.bias``, ...); ``num_batches_tracked`` is not exported.
- Running statistics in the file are the model's own. The training-mode export runs
  one forward pass, which moves BatchNorm running statistics; the export works on a
  copy of the model (``model`` itself is left untouched) and the original values are
  written back into the file.
- Weights are stored inside the .onnx file while they fit in protobuf's 2 GiB limit,
  and in one external file ``<path>.data`` beside it otherwise.
- Dropout stays in the graph as a training-mode ``Dropout`` node: set ``p=0`` if
  training steps must be reproducible.
- LSTM/GRU weights keep their names too (the gate reordering is Slice/Concat in the
  graph, not folded into new initializers).

Running such a file in onnxruntime (1.31) as it is: pass
``disabled_optimizers=["ConstantSharing"]`` (or disable graph optimisations). That
optimizer merges equal initializers, e.g. a fresh BatchNorm's weight (ones) and
running variance (ones), and training-mode BatchNormalization then gives wrong
outputs that drift from call to call.

The output is named ``logits`` by default; the input ``input`` (one input) or
``input_0``, ``input_1``, ... (several). ``opset`` defaults to 17.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings

import onnx
import onnx.numpy_helper
import torch

__all__ = ["export_for_training"]

_DEFAULT_OPSET = 17
_BATCH = "batch"
_PROTOBUF_LIMIT = 2**31 - 1


def export_for_training(
    model: torch.nn.Module,
    example,
    path,
    *,
    input_names=None,
    output_names=("logits",),
    opset=None,
):
    """Export ``model`` to ``path`` as a trainable ONNX graph; returns the
    ``onnx.ModelProto`` as saved (for models over 2 GiB its initializers point into
    ``<path>.data``).

    model: the ``torch.nn.Module``; it is not modified (its mode, parameters and
        running statistics stay as they were).
    example: a tensor, or a tuple of tensors, with the model's input layout; dim 0 is
        the batch (use at least 2 rows: training-mode BatchNorm needs them). Its batch
        size is not fixed in the file.
    path: the .onnx file to write (``<path>.data`` too, for models over 2 GiB).
    input_names: one name per input (default ``input``, or ``input_<i>``).
    output_names: one name per output (default ``("logits",)``).
    opset: default-domain opset (default 17; ldam-onnx needs 13 or newer).
    """
    args = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    if input_names is None:
        input_names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    input_names, output_names = list(input_names), list(output_names)
    path = os.fspath(path)
    state = {
        k: v.detach().cpu().numpy()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The legacy exporter warns about what this function does on purpose
        # (training mode, the num_batches_tracked update it drops, itself).
        for message in (
            r"You are using the legacy TorchScript-based ONNX export",
            r"Exporting a model while it is in training mode",
            r"ONNX Preprocess - Removing mutation from node aten::add_",
        ):
            warnings.filterwarnings("ignore", message=message)
        raw = os.path.join(tmp, "model.onnx")
        torch.onnx.export(
            copy.deepcopy(model),
            args,
            raw,
            dynamo=False,
            export_params=True,
            opset_version=_DEFAULT_OPSET if opset is None else opset,
            training=torch.onnx.TrainingMode.TRAINING,
            do_constant_folding=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={name: {0: _BATCH} for name in input_names + output_names},
        )
        proto = onnx.load(raw)  # external tensors too, when the exporter wrote any

    # Undo the export-time forward pass: put the model's own values back.
    for i, t in enumerate(proto.graph.initializer):
        want = state.get(t.name)
        if want is None:
            continue
        have = onnx.numpy_helper.to_array(t)
        if have.shape == want.shape and not (have == want).all():
            proto.graph.initializer[i].CopyFrom(onnx.numpy_helper.from_array(want, t.name))

    weight_bytes = sum(len(t.raw_data) or t.ByteSize() for t in proto.graph.initializer)
    external = weight_bytes + (1 << 20) > _PROTOBUF_LIMIT
    data = path + ".data"
    if os.path.exists(data):
        os.remove(data)
    onnx.save(
        proto,
        path,
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=os.path.basename(data),
    )
    return proto
