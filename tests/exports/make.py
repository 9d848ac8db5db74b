"""Real PyTorch exports of small classifiers, with the PyTorch values a training step
must reproduce.

    .deps/py-export/bin/python tests/exports/make.py

Environment (CPU only; the full torch wheel is needed to import torch):

    python3 -m venv .deps/py-export
    .deps/py-export/bin/pip install torch==2.13.0 torchvision==0.28.0 onnx onnxscript \\
        timm numpy onnxruntime==1.31.1 transformers==5.25.0

Versions the committed files were made with: python 3.11.7, torch 2.13.0 (+cu130
wheel, run on CPU), torchvision 0.28.0, onnx 1.23.2, onnxscript 0.7.2, onnx_ir 1.1.0,
onnxruntime 1.31.1, numpy 2.4.6, transformers 5.25.0. With these versions, and the venv
at the path above, a rerun writes the same bytes. The dynamo exporter records stack
traces (absolute source paths, line numbers of this file) in node metadata: another
checkout or venv path, or an edit of this file, changes the *__dynamo.onnx files only.

For every architecture and every exporter mode this writes into tests/exports/:

    <arch>__<mode>.onnx         the export (dynamo mode: plus <arch>__dynamo.onnx.data)
    <arch>__<mode>.npz          reference values (below)
    MANIFEST.md                 what each file contains, and which exports failed

Exporter modes:

    dynamo        torch.onnx.export(model, (x,), path), nothing else (torch 2.13's
                  default), x with batch 2, model in train mode
    legacy_train  dynamo=False, training=TrainingMode.TRAINING, do_constant_folding=False,
                  dynamic_axes batch on input and logits, opset 17
    legacy_eval   dynamo=False, model.eval(), constant folding on (default), batch fixed
                  at 2, opset 17
    helper        python/ldam_onnx_export.export_for_training(model, x, path)

Every export is made from a deepcopy of the module; the reference values come from the
module itself in train mode, from the same initial weights (torch.manual_seed(0),
random init, nothing downloaded, every dropout 0).

NPZ keys (uncompressed, no pickles):

    input       the batch, 6 examples (float32; int64 tokens for `text`, `hf_bert`)
    labels      int64 [6], classes in 0..5
    loss        float64 [2]: F.cross_entropy(logits, labels) (mean) at steps 1 and 2
    logits      float32 [6, 5]: step 1's logits (mlp_logsoftmax: before the LogSoftmax)
    initial/<name>  value before the steps, for every initializer of the file whose name
                is a state_dict key (num_batches_tracked skipped)
    param/<name>    parameter after 2 steps of SGD(lr=0.1, momentum=0.9,
                weight_decay=5e-4) on the same batch
    buffer/<name>   buffer after the 2 train-mode forward passes (running_mean,
                running_var: PyTorch's unbiased variance, momentum 0.1)
    mode_info   strings: mode, torch/onnx versions, exporter call
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import os
import sys
import traceback
import warnings
import zipfile
from collections import OrderedDict

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from ldam_onnx_export import export_for_training  # noqa: E402

NUM_CLASSES = 5
EXPORT_BATCH = 2
REF_BATCH = 6
MODES = ("dynamo", "legacy_train", "legacy_eval", "helper")
OPSET = 17

for _msg in (
    r"You are using the legacy TorchScript-based ONNX export",
    r"ONNX Preprocess - Removing mutation",
    r"Exporting a model while it is in training mode",
    r"Constant folding - Only steps=1",
    r"enable_nested_tensor is True",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Exporting a model to ONNX with a batch_size other than 1",
    r"The tensor attributes self\.rnn\._flat_weights",
    r"Converting a tensor to a Python boolean might cause the trace to be incorrect",
    r"ONNX export mode is set to TrainingMode\.EVAL, but operator 'instance_norm'",
):
    warnings.filterwarnings("ignore", message=_msg)


# --------------------------------------------------------------------------- models


class TinyResNet(nn.Module):
    """conv-bn-relu stem, two torchvision BasicBlocks (the second strided, with a
    conv1x1-BN downsample), global average pool, fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 8)
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.layer2 = BasicBlock(8, 16, stride=2, downsample=down)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class MBConvSE(nn.Module):
    """EfficientNet-style block: expand 1x1, depthwise 3x3, squeeze-excite, project,
    BN after each conv, SiLU."""

    def __init__(self, c, expand=2):
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(
            Conv2dNormActivation(c, h, 1, activation_layer=nn.SiLU),
            Conv2dNormActivation(h, h, 3, groups=h, activation_layer=nn.SiLU),
            SqueezeExcitation(h, max(1, c // 4), activation=nn.SiLU),
            Conv2dNormActivation(h, c, 1, activation_layer=None),
        )

    def forward(self, x):
        return x + self.block(x)


class TinyMobileNet(nn.Module):
    """Stem (conv-BN-ReLU6, stride 2), a torchvision MobileNetV2 InvertedResidual
    (ReLU6, depthwise, residual), an MBConv block with squeeze-excite and SiLU, 1x1 head
    conv, pool, fc."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            Conv2dNormActivation(3, 8, 3, stride=2, activation_layer=nn.ReLU6),
            InvertedResidual(8, 8, 1, expand_ratio=2),
            MBConvSE(8),
            Conv2dNormActivation(8, 16, 1, activation_layer=nn.ReLU6),
        )
        self.classifier = nn.Linear(16, NUM_CLASSES)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class TextClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, tokens):
        return self.fc(self.encoder(self.embed(tokens)).mean(dim=1))


class RNNClassifier(nn.Module):
    def __init__(self, cell, num_layers=1, bidirectional=False):
        super().__init__()
        self.rnn = cell(8, 12, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(12 * (2 if bidirectional else 1), NUM_CLASSES)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.GroupNorm(4, 8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2),
            nn.InstanceNorm2d(8, affine=True),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(8, NUM_CLASSES)

    def forward(self, x):
        return self.fc(self.features(x))


class MLPLogSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, NUM_CLASSES))
        self.log_softmax = nn.LogSoftmax(dim=1)

    def forward(self, x):
        return self.log_softmax(self.body(x))


def _image(c=3, s=16):
    return lambda g: torch.randn(REF_BATCH, c, s, s, generator=g)


# name -> (constructor, input maker (generator -> batch of REF_BATCH), description)
ARCHS = OrderedDict(
    resnet=(TinyResNet, _image(), "conv-BN-ReLU stem, 2 torchvision BasicBlocks (1 downsample), pool, fc; 3x16x16"),
    mobilenet=(TinyMobileNet, _image(), "ReLU6 InvertedResidual + MBConv(SiLU, SE), depthwise convs, BN; 3x16x16"),
    densenet=(
        lambda: torchvision.models.DenseNet(
            growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, drop_rate=0.0,
            num_classes=NUM_CLASSES,
        ),
        _image(),
        "torchvision DenseNet(growth 4, blocks (2,2), 8 init features, bn_size 2); 3x16x16",
    ),
    convnext=(
        lambda: torchvision.models.ConvNeXt(
            [CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=NUM_CLASSES
        ),
        _image(),
        "torchvision ConvNeXt, 2 stages (8, 16 ch) of 1 CNBlock (dw7x7, LayerNorm, Linear, GELU, layer scale); 3x16x16",
    ),
    vit=(
        lambda: torchvision.models.VisionTransformer(
            image_size=16, patch_size=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
            num_classes=NUM_CLASSES,
        ),
        _image(),
        "torchvision VisionTransformer(16, patch 4, 1 layer, 2 heads, dim 16, mlp 32); 3x16x16",
    ),
    text=(
        TextClassifier,
        lambda g: torch.randint(0, 50, (REF_BATCH, 12), generator=g),
        "Embedding(50,16), TransformerEncoder(1 layer, d 16, 2 heads, ff 32, batch_first), mean, Linear; int64 [N,12]",
    ),
    lstm=(lambda: RNNClassifier(nn.LSTM), lambda g: torch.randn(REF_BATCH, 6, 8, generator=g),
          "LSTM(8,12, batch_first), last step, Linear(12,5); [N,6,8]"),
    gru=(lambda: RNNClassifier(nn.GRU), lambda g: torch.randn(REF_BATCH, 6, 8, generator=g),
         "GRU(8,12, batch_first), last step, Linear(12,5); [N,6,8]"),
    bilstm=(
        lambda: RNNClassifier(nn.LSTM, num_layers=2, bidirectional=True),
        lambda g: torch.randn(REF_BATCH, 6, 8, generator=g),
        "LSTM(8,12, 2 layers, bidirectional, batch_first), last step, Linear(24,5); [N,6,8]",
    ),
    groupnorm=(GroupNormNet, _image(), "conv, GroupNorm(4,8), ReLU, conv s2, InstanceNorm2d(affine), ReLU, pool, fc; 3x16x16"),
    mlp_logsoftmax=(MLPLogSoftmax, lambda g: torch.randn(REF_BATCH, 20, generator=g),
                    "Linear(20,16), ReLU, Linear(16,5), LogSoftmax(dim=1); [N,20]"),
    hf_bert=(
        lambda: hf_bert(),
        lambda g: torch.randint(1, HF_VOCAB, (REF_BATCH, 12), generator=g),
        "transformers AutoModelForSequenceClassification.from_config(BertConfig(vocab 100, hidden 32, "
        "2 layers, 2 heads, intermediate 64, max positions 16, 5 labels, dropout 0)); int64 [N,12], "
        "tokens 1..99 (0 is the padding id)",
    ),
)


# --------------------------------------------------------------------------- exports


def export(mode: str, model: nn.Module, x: torch.Tensor, path: str) -> str:
    """Exports a deepcopy of `model`; returns the exporter call as text."""
    m = copy.deepcopy(model)
    if mode == "dynamo":
        torch.onnx.export(m, (x,), path)
        return "torch.onnx.export(model, (x,), path)"
    if mode == "legacy_train":
        torch.onnx.export(
            m, (x,), path, dynamo=False, opset_version=OPSET,
            training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        return ("torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, "
                "training=TrainingMode.TRAINING, do_constant_folding=False, input_names=['input'], "
                "output_names=['logits'], dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}})")
    if mode == "legacy_eval":
        m.eval()
        torch.onnx.export(m, (x,), path, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"])
        return ("model.eval(); torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, "
                "input_names=['input'], output_names=['logits'])")
    if mode == "helper":
        export_for_training(m, x, path)
        return "ldam_onnx_export.export_for_training(model, x, path)"
    raise ValueError(mode)


# --------------------------------------------------------------------------- reference


def reference(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, arch: str,
              momentum: float = 0.9, weight_decay: float = 5e-4):
    """Two SGD steps in train mode on (x, labels). Returns (losses, step-1 logits)."""
    pre = {}
    if arch == "mlp_logsoftmax":
        model.log_softmax.register_forward_hook(lambda mod, inp, out: pre.__setitem__("z", inp[0]))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    losses, logits = [], None
    for _ in range(2):
        opt.zero_grad()
        out = logits_of(model(x))
        loss = F.cross_entropy(out, labels)
        if logits is None:
            logits = (pre["z"] if pre else out).detach().clone()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return np.array(losses, dtype=np.float64), logits.numpy().astype(np.float32)


def reference_arrays(model: nn.Module, initial: dict, matched, x, labels, losses, logits,
                     dtype=np.float32):
    """The NPZ entries of one export (the keys the module docstring lists, in that
    order), for the state_dict entries `matched` that are initializers of the file;
    `model` is the module after the reference steps. Tensors are written as `dtype`
    (the timm sweep's float64 rerun writes float64)."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    arrays = OrderedDict()
    arrays["input"] = x.numpy()
    arrays["labels"] = labels.numpy().astype(np.int64)
    arrays["loss"] = losses
    arrays["logits"] = logits
    for k in matched:
        arrays[f"initial/{k}"] = initial[k].astype(dtype)
    for k in matched:
        if k in params:
            arrays[f"param/{k}"] = params[k].detach().numpy().astype(dtype)
        elif k in buffers:
            arrays[f"buffer/{k}"] = buffers[k].detach().numpy().astype(dtype)
    return arrays


def save_npz(path: str, arrays: "OrderedDict[str, np.ndarray]") -> None:
    """np.savez's format (uncompressed zip of .npy files) with fixed timestamps, so
    reruns write identical bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            b = io.BytesIO()
            np.lib.format.write_array(b, np.asanyarray(arr), allow_pickle=False)
            z.writestr(info, b.getvalue())
    with open(path, "wb") as f:
        f.write(buf.getvalue())


# --------------------------------------------------------------------------- analysis


def dims(v):
    return [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]


def analyse(path: str, model: nn.Module, initial: dict) -> dict:
    proto = onnx.load(path)  # with external data
    raw = onnx.load(path, load_external_data=False)
    g = proto.graph
    ops = collections.Counter(n.op_type for n in g.node)
    bn_train = bn_inf = 0
    for n in g.node:
        if n.op_type == "BatchNormalization":
            tm = [onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "training_mode"]
            if tm and tm[0] == 1:
                bn_train += 1
            else:
                bn_inf += 1
    ext = [t.name for t in raw.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    inits = {t.name: t for t in g.initializer}
    sd_names = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    matched = [k for k in sd_names if k in inits]
    differ = [
        k for k in matched
        if not np.array_equal(onnx.numpy_helper.to_array(inits[k]), initial[k])
    ]
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in inits:
                consumers[name].append(f"{n.op_type}:{i}")
    multi = {k: v for k, v in consumers.items() if len(v) > 1}
    in_dims = dims(g.input[0])
    batch = in_dims[0]
    opset = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    data = path + ".data"
    return {
        "proto": proto,
        "ops": ops,
        "bn_train": bn_train,
        "bn_inf": bn_inf,
        "ext": len(ext),
        "n_init": len(g.initializer),
        "data_size": os.path.getsize(data) if os.path.exists(data) else 0,
        "size": os.path.getsize(path),
        "batch": batch,
        "inputs": [(i.name, dims(i)) for i in g.input],
        "outputs": [(o.name, dims(o)) for o in g.output],
        "opset": opset[0] if opset else None,
        "ir": proto.ir_version,
        "sd_total": len(sd_names),
        "matched": matched,
        "differ": differ,
        "multi": multi,
    }


def ort_check(path: str, info: dict, model0: nn.Module, x: torch.Tensor, logits: np.ndarray, arch: str, mode: str) -> str:
    """Runs the file in onnxruntime (CPU, graph optimisations off) and compares with
    PyTorch in the semantics the graph has: train-mode graphs on the 6-example batch
    against step 1's output, fixed-batch inference graphs on the first 2 examples
    against the initial model in eval mode."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    training = info["bn_train"] > 0 or mode in ("legacy_train", "helper")
    if training:
        xin = x
        ref = logits
        if arch == "mlp_logsoftmax":
            ref = torch.log_softmax(torch.from_numpy(logits), 1).numpy()
    else:
        xin = x[:EXPORT_BATCH]
        m = copy.deepcopy(model0).eval()
        with torch.no_grad():
            ref = logits_of(m(xin)).numpy()
    feed = {sess.get_inputs()[0].name: xin.numpy()}
    got = sess.run(None, feed)[0]
    err = float(np.max(np.abs(got - ref)))
    kind = "train, B=6" if training else "eval, B=2"
    return f"{kind}: {err:.1e}" + ("" if err < 1e-4 else " MISMATCH")


# --------------------------------------------------------------------------- main


def clean(out: str) -> None:
    for f in os.listdir(out):
        if "__" in f and f.endswith((".onnx", ".onnx.data", ".npz")):
            os.remove(os.path.join(out, f))


def main() -> int:
    import onnxruntime
    import onnxscript

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    versions = (f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnx {onnx.__version__}, "
                f"onnxscript {onnxscript.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}")
    print(versions)
    out = HERE
    clean(out)
    rows, failures = [], []
    for ai, (arch, (ctor, make_input, desc)) in enumerate(ARCHS.items()):
        g = torch.Generator().manual_seed(1000 + ai)
        x = make_input(g)
        labels = torch.randint(0, NUM_CLASSES, (REF_BATCH,), generator=g)
        for mode in MODES:
            torch.manual_seed(0)
            model = ctor()
            model.train()
            initial = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()
                       if not k.endswith("num_batches_tracked")}
            model0 = copy.deepcopy(model)
            name = f"{arch}__{mode}"
            path = os.path.join(out, name + ".onnx")
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # dynamo's progress lines
                    call = export(mode, model, x[:EXPORT_BATCH], path)
                assert all(np.array_equal(initial[k], v.numpy()) for k, v in model.state_dict().items()
                           if k in initial), "export moved the module's state"
                info = analyse(path, model, initial)
            except Exception as e:  # record and go on
                msg = traceback.format_exception_only(type(e), e)[-1].strip().splitlines()[0]
                failures.append((arch, mode, msg[:300]))
                for p in (path, path + ".data"):
                    if os.path.exists(p):
                        os.remove(p)
                print(f"{name}: FAILED {msg[:200]}")
                continue

            losses, logits = reference(model, x, labels, arch)
            try:
                info["ort"] = ort_check(path, info, model0, x, logits, arch, mode)
            except Exception as e:
                info["ort"] = "fails: " + str(e).strip().splitlines()[0][:150]

            arrays = reference_arrays(model, initial, info["matched"], x, labels, losses, logits)
            arrays["mode_info"] = np.array([f"mode={mode}", versions + extra_versions(arch), call, f"arch={arch}: {desc}"])
            save_npz(os.path.join(out, name + ".npz"), arrays)
            info.update(arch=arch, mode=mode, name=name)
            rows.append(info)
            ext = f", {info['ext']} external ({info['data_size']} B .data)" if info["ext"] else ""
            print(f"{name}.onnx: {info['size']} B{ext}, opset {info['opset']}, batch {info['batch']}, "
                  f"BN train/inf {info['bn_train']}/{info['bn_inf']}, names {len(info['matched'])}/{info['sd_total']}"
                  f" (values differ: {len(info['differ'])}), ort {info['ort']}, loss {losses.round(5).tolist()}")

    write_manifest(out, rows, failures, versions)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{len(rows)} exports, {len(failures)} failed, folder {total} B")
    return 0


def write_manifest(out, rows, failures, versions):
    L = []
    L.append("# Export fixtures\n")
    L.append("Made by `make.py` (its docstring: environment, NPZ keys, exact exporter calls). "
             f"Versions: {versions}{extra_versions('hf_')}.\n")
    L.append("Columns: **size** of the .onnx (+ its .data); **ext** = initializers stored in "
             "external data (count); **batch** = dim 0 of the graph input (a number: fixed); "
             "**BN tm=1 / inf** = BatchNormalization nodes with `training_mode=1` / without it "
             "(inference semantics); **RNN** = LSTM/GRU nodes; **names** = state_dict entries "
             "(num_batches_tracked excluded) present as initializers of the same name / all; "
             "**init == initial** = whether those initializers hold exactly PyTorch's initial "
             "values (otherwise which differ); **ORT** = onnxruntime CPU (no graph optimisation) "
             "against PyTorch: train-mode graphs on the NPZ batch vs step 1's output, "
             "inference graphs on its first 2 rows vs the initial model in eval mode, max abs "
             "error; **multi-use** = initializers consumed by more than one node input (listed "
             "below).\n")
    L.append("| arch | mode | file | size (B) | ext | opset | batch | BN tm=1 / inf | Conv | RNN | names | init == initial | multi-use | ORT | output |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        size = f"{r['size']}" + (f" + {r['data_size']}" if r["data_size"] else "")
        rnn = ", ".join(f"{k} {r['ops'][k]}" for k in ("LSTM", "GRU") if r["ops"].get(k)) or "0"
        if not r["matched"]:
            same = "n/a"
        elif not r["differ"]:
            same = "yes"
        else:
            same = f"no: {len(r['differ'])} differ (" + ", ".join(r["differ"][:4]) + (", ..." if len(r["differ"]) > 4 else "") + ")"
        outs = ", ".join(f"`{n}` {d}" for n, d in r["outputs"])
        L.append(
            f"| {r['arch']} | {r['mode']} | `{r['name']}.onnx` | {size} | "
            f"{'yes (' + str(r['ext']) + '/' + str(r['n_init']) + ')' if r['ext'] else 'no'} | {r['opset']} | "
            f"{r['batch']} | {r['bn_train']} / {r['bn_inf']} | {r['ops'].get('Conv', 0)} | {rnn} | "
            f"{len(r['matched'])}/{r['sd_total']} | {same} | {len(r['multi'])} | {r['ort']} | {outs} |"
        )
    L.append("")
    L.append("## Notes\n")
    L.append("""- Reference values (NPZ) always come from the PyTorch module in train mode, batch 6,
  from PyTorch's initial values; the `dynamo` and `legacy_eval` graphs have a batch fixed
  at 2 and inference semantics, so they reproduce them only after being made trainable.
- `dynamo` = `torch.onnx.export(model, (x,), path)` with the module in train mode. Output
  names are the exporter's (`linear`, `linear_4`, `log_softmax`), input names are
  `forward`'s argument names (`x`, `tokens`). BatchNorm is lowered to inference mode
  anyway and folded into the preceding Conv (the Conv keeps the state_dict weight name
  but holds the folded value, and the all-zero folded bias is dropped; see
  "init == initial"); a BatchNorm not preceded by a Conv (DenseNet's BN-ReLU-Conv) stays
  as inference BatchNormalization without its running statistics under state_dict names.
  Tensors of 1 KiB or more are written to `<file>.onnx.data` (smaller ones inline), so
  every `dynamo` file here has external data. GELU is the opset-20 `Gelu` op; attention
  is MatMul/Softmax (no Attention op); LSTM/GRU are single ONNX LSTM/GRU nodes whose
  weights are constant-folded into new initializers (`val_<k>`, gate order already
  ONNX's). GroupNorm's affine weight/bias become reshaped constants (`val_<k>`).
  The default optimisation also merges initializers of equal contents: a fresh
  BatchNorm's running_mean/running_var (zeros/ones) are read from a `bias`/`weight`
  (densenet: each of the 6 inference BatchNormalization nodes reads `W, B, B, W`, and
  BNs of one width share one pair: 3 pairs for 6 BNs), LayerNorms of one width share
  one weight and one bias (convnext, vit, text; in convnext a Conv bias is tied to a
  LayerNorm bias), and equal constants are shared (LSTM initial_h/initial_c, Clip
  bounds, Reshape shapes). Trained as they are, the merged parameters are tied.
  Node metadata carries stack traces with absolute source paths and make.py line
  numbers.
- `legacy_train` and `helper` write the same graph; they differ only in the values
  of BatchNorm running statistics: the exporter's training-mode forward pass (on the
  export example) moves them before they are written, `helper` writes PyTorch's
  initial values back. Dropout modules (p=0) appear as `Dropout` nodes with a ratio 0
  constant and training_mode true (vit, text). LSTM/GRU weights keep their state_dict
  names; gates are reordered by Slice/Concat in the graph.
- `legacy_eval` passes `input_names=['input'], output_names=['logits']` as well. With
  constant folding on, Conv+BN are fused into `onnx::Conv_<k>` initializers, LSTM/GRU
  weights into `onnx::LSTM_<k>`/`onnx::GRU_<k>`, and unfused BNs are inference-mode.
  Initializers of equal contents are merged too, each duplicate becoming an `Identity`
  node of the one kept (all `Identity` nodes in these files are such ties).
- In `legacy_train`/`helper` files the only multi-use initializers are LSTM/GRU
  weights read by several `Slice` nodes (one tensor, no tie).
- `vit`: torchvision initialises the head to zeros, so step 1's logits are all 0 and
  its loss is ln 5; step 2 is not trivial.
- `hf_bert` is the transformers model itself, exported without a wrapper: called
  without labels, its `SequenceClassifierOutput` holds only the logits, which every
  exporter writes as the one graph output, and initializers keep the `state_dict` names
  (`bert.encoder.layer.0.attention.self.query.weight`, `classifier.weight`). Its tokens
  are 1..99: 0 is BERT's `pad_token_id`, whose `word_embeddings` row PyTorch never
  updates (`padding_idx`); an ONNX `Gather` cannot say so (the legacy exporter warns),
  so a trained export moves that row when a batch holds token 0. `dynamo` folds the
  token-type and position embedding lookups into constants (`embedding_1` [2, 12, 32]
  at the fixed batch, `embedding_2` [1, 12, 32]), drops the pooler's and the
  classifier's zero biases (`Gemm` without C) and reads every 32-wide zero bias from
  `bert.embeddings.LayerNorm.bias`. `legacy_eval` keeps the token-type buffer's
  `expand(1, -1)` as `ConstantOfShape`/`Mul`/`Equal`/`Where` arithmetic on constants
  (a shape vector of length 2), then expands it to the fixed `[2, 12]`.
- onnxruntime 1.31.1 with its default graph optimisations runs the training-mode
  `helper` graphs of resnet, mobilenet and densenet wrongly (errors 8e-3 to 2e-1,
  growing from run to run): its ConstantSharing optimizer merges equal initializers
  (a fresh BatchNorm's weight and running_var are both ones) and the training-mode
  BatchNormalization then updates the shared tensor. The `legacy_train` files escape
  this only because their moved statistics are not all ones. The ORT column above uses
  `ORT_DISABLE_ALL`; `disabled_optimizers=["ConstantSharing"]` is enough.
""")
    L.append("## Op histograms\n")
    L.append("| file | inputs | ops |")
    L.append("|---|---|---|")
    for r in rows:
        ins = ", ".join(f"`{n}` {d}" for n, d in r["inputs"])
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r["ops"].items(), key=lambda kv: (-kv[1], kv[0])))
        L.append(f"| `{r['name']}.onnx` | {ins} | {ops} |")
    L.append("")
    L.append("## Initializers with several consumers\n")
    L.append("`op:i` = consumed as input i of an `op` node (repeated once per node).\n")
    L.append("| file | initializer | consumers |")
    L.append("|---|---|---|")
    for r in rows:
        for k, v in r["multi"].items():
            L.append(f"| `{r['name']}.onnx` | `{k}` | {', '.join(v)} |")
    L.append("")
    L.append("## Failed exports\n")
    if failures:
        L.append("| arch | mode | error |")
        L.append("|---|---|---|")
        for a, m, msg in failures:
            L.append(f"| {a} | {m} | {msg.replace('|', '/')} |")
    else:
        L.append("None.")
    L.append("")
    with open(os.path.join(out, "MANIFEST.md"), "w") as f:
        f.write("\n".join(L))


# --------------------------------------------------------------------------- Hugging Face

HF_VOCAB = 100


def hf_bert() -> nn.Module:
    """A tiny BERT sequence classifier built from its config (random init, nothing
    downloaded), exported as it is: with no labels passed, its SequenceClassifierOutput
    holds only the logits, which both exporters write as the one graph output."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    config = BertConfig(
        vocab_size=HF_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, num_labels=NUM_CLASSES,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
    )
    return AutoModelForSequenceClassification.from_config(config)


def extra_versions(arch: str) -> str:
    """The version of the library an architecture comes from, beyond torch's own."""
    if not arch.startswith("hf_"):
        return ""
    import transformers

    return f", transformers {transformers.__version__}"


def logits_of(out):
    """The logits tensor of a model's output (a transformers ModelOutput has them as
    `.logits`)."""
    return getattr(out, "logits", out)


if __name__ == "__main__":
    sys.exit(main())
