"""Recreate the ONNX test models in this folder.

Usage:
    python models/export.py [--out models]

Environment used to produce the committed files (CPU only; a GPU is not needed):
    python3 -m venv /path/to/venv
    /path/to/venv/bin/pip install torch==2.13.0 torchvision==0.28.0 onnx onnxscript \
        onnxruntime==1.31.1

Versions the committed files were exported and checked with:
    torch 2.13.0 (+cu130 wheel, run on CPU), torchvision 0.28.0, onnx 1.23.2, onnxscript 0.7.2,
    onnx_ir 1.1.0, onnxruntime 1.31.1, numpy 2.4.6, python 3.11.7.
Re-running the script with these versions reproduces the committed files byte for byte.

Every model is built with torch.manual_seed(0) and random initial weights (nothing is
downloaded). Each file has one input `input` of shape [N, C, H, W] and one output
`logits` of shape [N, 10], where `N` is a symbolic batch dimension.

Files:
    mlp.onnx                 MLP 784-128-64-10, TorchScript exporter, opset 17, training mode
    cnn.onnx                 2x (Conv-BN-ReLU-MaxPool) + Linear, TorchScript, opset 17, training
    resnet32.onnx            CIFAR ResNet-32 (option-A shortcuts), TorchScript, opset 17, training
    shufflenet_v2_x0_5.onnx  torchvision ShuffleNetV2 x0.5 at 3x32x32, dynamo exporter, eval mode

The script checks every file with onnx.checker and onnxruntime (CPU) at batch sizes 1 and 5
against PyTorch in the same mode (train mode for training-mode graphs), and prints op
histograms, opsets, IR versions and sizes.
"""

from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import os
import sys
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.init as init
import torchvision

NUM_CLASSES = 10
BATCH_DIM = "N"
ATOL = 1e-4

# Known, expected exporter warnings (one per BatchNorm layer for the first); silenced so
# the report stays readable.
for _msg in (
    r"ONNX Preprocess - Removing mutation from node aten::add_ on block input: .*num_batches_tracked",
    r"You are using the legacy TorchScript-based ONNX export",
    r"Exporting a model while it is in training mode",
    r"Constant folding - Only steps=1 can be constant folded",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
):
    warnings.filterwarnings("ignore", message=_msg)


# --------------------------------------------------------------------------- models


class MLP(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


# CIFAR ResNet-32 as in kaidic/LDAM-DRW models/resnet_cifar.py (resnet32, use_norm=False).


def _weights_init(m):
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        init.kaiming_normal_(m.weight)


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            # option A: subsample spatially, zero-pad the channels
            self.shortcut = LambdaLayer(
                lambda x: F.pad(
                    x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0
                )
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class ResNetCifar(nn.Module):
    def __init__(self, block, num_blocks, num_classes=NUM_CLASSES):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(block, 16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)
        self.apply(_weights_init)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for s in strides:
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


def resnet32(num_classes=NUM_CLASSES):
    return ResNetCifar(BasicBlock, [5, 5, 5], num_classes)


# --------------------------------------------------------------------------- helpers


def strip_debug_info(model: onnx.ModelProto) -> None:
    """Drop per-node metadata (stack traces with local paths) and doc strings so the
    files do not depend on where the exporter ran."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    model.graph.doc_string = ""
    model.doc_string = ""


def rename_batch_dim(model: onnx.ModelProto, name: str = BATCH_DIM) -> None:
    """Give dim 0 of the graph input and output the symbolic name `name`."""
    old = set()
    for v in list(model.graph.input) + list(model.graph.output):
        d = v.type.tensor_type.shape.dim[0]
        if d.dim_param:
            old.add(d.dim_param)
        assert d.dim_param or not d.HasField("dim_value"), f"static batch on {v.name}"
        d.Clear()
        d.dim_param = name
    # keep value_info consistent if the exporter recorded shapes with the old name
    for v in model.graph.value_info:
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param in old:
                d.dim_param = name


def restore_initializers(model: onnx.ModelProto, state: dict[str, torch.Tensor]) -> int:
    """Overwrite initializers named after state_dict entries with the given values.

    The TorchScript exporter in training mode traces a forward pass in train mode, which
    moves the BatchNorm running statistics before they are written out; this puts the
    initial values (mean 0, var 1) back. Returns the number of initializers changed."""
    changed = 0
    for i, t in enumerate(model.graph.initializer):
        if t.name not in state:
            continue
        want = state[t.name].detach().cpu().numpy()
        have = onnx.numpy_helper.to_array(t)
        assert have.shape == want.shape, t.name
        if not np.array_equal(have, want):
            model.graph.initializer[i].CopyFrom(onnx.numpy_helper.from_array(want, t.name))
            changed += 1
    return changed


def check_initializers(model: onnx.ModelProto, torch_model: nn.Module) -> int:
    """Assert that every parameter and BatchNorm running statistic of the PyTorch model is
    an initializer of the same name, shape and exact value, and that no initializer is
    used twice as a parameter. Returns the number of such initializers."""
    state = {
        k: v
        for k, v in torch_model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    inits = {t.name: t for t in model.graph.initializer}
    missing = sorted(set(state) - set(inits))
    assert not missing, f"parameters missing from the graph: {missing[:5]}"
    for name, value in state.items():
        have = onnx.numpy_helper.to_array(inits[name])
        assert np.array_equal(have, value.detach().cpu().numpy()), name
    return len(state)


def export_torchscript(model: nn.Module, x: torch.Tensor, path: str) -> None:
    """Training-preserving export with the TorchScript exporter, opset 17."""
    pristine = copy.deepcopy(model.state_dict())
    m = copy.deepcopy(model).train()
    torch.onnx.export(
        m,
        (x,),
        path,
        dynamo=False,
        export_params=True,
        opset_version=17,
        training=torch.onnx.TrainingMode.TRAINING,
        do_constant_folding=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: BATCH_DIM}, "logits": {0: BATCH_DIM}},
    )
    proto = onnx.load(path)
    n = restore_initializers(proto, pristine)
    print(f"  restored {n} initializers moved by the export-time forward pass")
    strip_debug_info(proto)
    rename_batch_dim(proto)
    onnx.save(proto, path, save_as_external_data=False)


def _optimize_keep_parameters(model) -> None:
    """onnxscript's default post-export optimisation (as run by `optimize=True`), minus
    two steps that would change what is trainable:

    - the BatchNormalization -> Conv/Gemm fusion rules (they delete the BN layers), and
    - DeduplicateInitializersPass (it merges initializers with equal contents, e.g. the
      all-ones / all-zeros BN weights, biases and running statistics of same-width
      layers, which would tie independent parameters together).
    """
    import onnx_ir.passes.common as common_passes
    import onnxscript.optimizer
    import onnxscript.rewriter as rw
    from onnxscript.rewriter.rules.common import _fuse_batchnorm

    drop = set(map(id, _fuse_batchnorm.rules))
    rules = [r for r in rw._DEFAULT_REWRITE_RULES if id(r) not in drop]
    assert len(rules) == len(rw._DEFAULT_REWRITE_RULES) - len(drop)
    common_passes.InlinePass()(model)
    for _ in range(2):
        onnxscript.optimizer.fold_constants_ir(model, onnx_shape_inference=True)
        rw.RewritePass(rules)(model)
        common_passes.RemoveUnusedNodesPass()(model)
        common_passes.RemoveUnusedFunctionsPass()(model)
        common_passes.RemoveUnusedOpsetsPass()(model)
    common_passes.RemoveUnusedNodesPass()(model)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    common_passes.CommonSubexpressionEliminationPass()(model)
    common_passes.OutputFixPass()(model)
    common_passes.NameFixPass()(model)


def export_dynamo(model: nn.Module, x: torch.Tensor, path: str) -> None:
    """Eval-mode export with the torch.export-based exporter.

    The dynamo exporter always lowers BatchNorm to inference-mode BatchNormalization
    (onnxscript's torch_lib forces training=False, even for a model in train mode), and
    its default optimizer fuses BatchNormalization into the preceding Conv and merges
    equal initializers. We export unoptimised and then optimise without those steps, so
    every BatchNormalization node keeps its own parameters."""
    import onnx_ir as ir

    m = copy.deepcopy(model).eval()
    program = torch.onnx.export(
        m,
        (x,),
        None,
        dynamo=True,
        external_data=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
        optimize=False,
        verbose=False,
    )
    ir_model = ir.serde.deserialize_model(program.model_proto)
    _optimize_keep_parameters(ir_model)
    proto = ir.serde.serialize_model(ir_model)
    strip_debug_info(proto)
    rename_batch_dim(proto)
    onnx.save(proto, path, save_as_external_data=False)
    assert not os.path.exists(path + ".data")


def sym_dims(v: onnx.ValueInfoProto):
    out = []
    for d in v.type.tensor_type.shape.dim:
        out.append(d.dim_param if d.dim_param else d.dim_value)
    return out


def verify(path: str, model: nn.Module, in_shape, training: bool, seed: int) -> dict:
    import onnxruntime as ort

    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    g = proto.graph
    assert [i.name for i in g.input] == ["input"], [i.name for i in g.input]
    assert [o.name for o in g.output] == ["logits"], [o.name for o in g.output]
    out = g.output[0]
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert sym_dims(out) == [BATCH_DIM, NUM_CLASSES], sym_dims(out)
    assert sym_dims(g.input[0]) == [BATCH_DIM, *in_shape], sym_dims(g.input[0])
    n_state = check_initializers(proto, model)

    opts = ort.SessionOptions()
    # compare the graph as written, not an ORT-rewritten one
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    max_err = 0.0
    for bs in (1, 5):
        x = torch.randn(bs, *in_shape, generator=gen)
        ref_model = copy.deepcopy(model)
        ref_model.train(training)
        with torch.no_grad():
            ref = ref_model(x).numpy()
        (got,) = sess.run(["logits"], {"input": x.numpy()})
        assert got.shape == (bs, NUM_CLASSES), got.shape
        err = float(np.max(np.abs(got - ref)))
        assert np.allclose(got, ref, atol=ATOL, rtol=0), f"{path} batch {bs}: max err {err}"
        max_err = max(max_err, err)

    hist = collections.Counter(n.op_type for n in g.node)
    default_opset = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    bn = [n for n in g.node if n.op_type == "BatchNormalization"]
    bn_attrs = collections.Counter(
        tuple(sorted((a.name, round(onnx.helper.get_attribute_value(a), 6)) for a in n.attribute))
        for n in bn
    )
    with open(path, "rb") as f:
        data = f.read()
    return {
        "file": os.path.basename(path),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest()[:16],
        "ir_version": proto.ir_version,
        "opset": default_opset[0] if default_opset else None,
        "other_opsets": [(o.domain, o.version) for o in proto.opset_import if o.domain not in ("", "ai.onnx")],
        "params": sum(p.numel() for p in model.parameters()),
        "initializers": len(g.initializer),
        "state_in_graph": n_state,
        "ops": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "bn_attrs": dict(bn_attrs),
        "input": sym_dims(g.input[0]),
        "output": sym_dims(out),
        "max_abs_err": max_err,
    }


# --------------------------------------------------------------------------- main

MODELS = [
    # file, constructor, input shape (C, H, W), exporter, training-preserving
    ("mlp.onnx", MLP, (1, 28, 28), "torchscript", True),
    ("cnn.onnx", SmallCNN, (1, 28, 28), "torchscript", True),
    ("resnet32.onnx", resnet32, (3, 32, 32), "torchscript", True),
    (
        "shufflenet_v2_x0_5.onnx",
        lambda: torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=NUM_CLASSES),
        (3, 32, 32),
        "dynamo",
        False,
    ),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--only", nargs="*", help="file names to export (default: all)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    import onnx_ir
    import onnxruntime
    import onnxscript

    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, onnx {onnx.__version__}, "
        f"onnxscript {onnxscript.__version__}, onnx_ir {onnx_ir.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"
    )
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))

    reports = []
    for idx, (fname, ctor, in_shape, exporter, training) in enumerate(MODELS):
        if args.only and fname not in args.only:
            continue
        path = os.path.join(args.out, fname)
        print(f"== {fname} ({exporter})")
        torch.manual_seed(0)
        model = ctor()
        model.train(training)
        # example input for the exporter (batch 2 so training-mode BatchNorm is defined)
        x = torch.randn(2, *in_shape, generator=torch.Generator().manual_seed(1))
        if exporter == "torchscript":
            export_torchscript(model, x, path)
        else:
            export_dynamo(model, x, path)
        rep = verify(path, model, in_shape, training, seed=100 + idx)
        rep["exporter"] = exporter
        rep["training"] = training
        reports.append(rep)
        for k, v in rep.items():
            print(f"  {k}: {v}")

    print()
    print("| file | exporter | opset | IR | training | params | size (bytes) |")
    for r in reports:
        print(
            f"| {r['file']} | {r['exporter']} | {r['opset']} | {r['ir_version']} | "
            f"{'yes' if r['training'] else 'no (eval)'} | {r['params']} | {r['size']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
