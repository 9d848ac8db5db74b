"""Sweep of timm architectures through export, patch, compile and two training steps.

    .deps/py-export/bin/python benches/timm_sweep.py [--out DIR] [--models a,b,c]
        [--modes dynamo,helper] [--timeout 300] [--no-float64] [--list]

For every model (random init, nothing downloaded, 5 classes, every dropout and drop
path at 0) and every exporter mode this:

  1. exports the model with `tests/exports/make.py`'s `export` (batch 2):
       dynamo  torch.onnx.export(model, (x,), path), torch's default
       helper  python/ldam_onnx_export.py's export_for_training(model, x, path)
  2. computes PyTorch's two SGD steps (lr 0.1, momentum 0.9, weight decay 5e-4,
     cross-entropy, train mode) on a seeded batch of 6 with make.py's `reference`,
     and writes them, in the format make.py uses (`save_npz`), next to the export;
  3. runs `target/debug/examples/step_parity MODEL.onnx REFERENCE.npz` (patch with
     plain cross-entropy, compile, two steps in ONNX Runtime, compare losses and
     every parameter whose ONNX name is a state_dict name), with a timeout;
  4. on a mismatch, reruns both sides in float64: PyTorch's two steps with
     `model.double()` (`<model>__<mode>.f64.npz`), and the step the CLI compiles
     (`target/debug/ldam-onnx patch` + `compile`), widened to float64 and run by
     ONNX's reference evaluator, compared with the same bounds (`float64_steps`).

It prints one line per model and mode,

    model  mode  result  seconds  detail

where result is parity, f64-parity (the float32 steps differ by more than the
bounds, the float64 steps agree: rounding at a ReLU-like kink, see `float64_steps`),
mismatch (in float64 too, or the float64 rerun failed), refused (the patcher refuses a graph whose batch
is pinned: a `patch:` error mentioning dynamic_shapes), error (any other failure of
the tool, a timeout included) or export-failed (the exporter, or the PyTorch
reference, raised). At the end: totals per mode, and the distinct messages of the
errors and mismatches (numbers and tensor names masked) with their counts.

Build the checker and the CLI first (`cargo build --example step_parity && cargo
build`; `--release` builds work too, pass `--checker
target/release/examples/step_parity --cli target/release/ldam-onnx`). Files go to
target/timm-sweep/ by default (<model>__<mode>.onnx[.data], .npz). A benchmark,
not a test: it takes tens of minutes on a laptop CPU.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import io
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
import zlib
from collections import OrderedDict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "exports"))
sys.path.insert(0, os.path.join(ROOT, "python"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import make  # noqa: E402  (tests/exports/make.py: export, reference, save_npz; warning filters)

NUM_CLASSES = make.NUM_CLASSES
REF_BATCH = make.REF_BATCH
EXPORT_BATCH = make.EXPORT_BATCH
MODES = ("dynamo", "helper")

for _msg in (
    r"torch\.use_deterministic_algorithms",
    r".*deterministic implementation",
    r"Importing from timm\.models\.",
    r"Overwriting .* in registry",
    r"Converting a tensor to a Python",
    r"Iterating over a tensor might cause the trace to be incorrect",
    r"torch\.tensor results are registered as constants in the trace",
    r"Converting a tensor to a NumPy array might cause the trace to be incorrect",
    r"The shape inference of .* type is missing",
    r"Exporting aten::index operator",
    r"__floordiv__ is deprecated",
    r".*is deprecated.*",
    r".*Constant folding.*",
    r"The tensor attributes .* were assigned during export",  # LSTM _flat_weights (sequencer)
):
    warnings.filterwarnings("ignore", message=_msg)
# "Skipping constant folding for op Split with multiple outputs." (dynamo's optimiser)
logging.getLogger("onnxscript.optimizer").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

# name -> (extra create_model kwargs, image side). The smallest variant of each
# family (timm module) that runs at a small resolution.
MODELS = OrderedDict(
    resnet10t=({}, 32),
    seresnext26d_32x4d=({}, 32),  # resnet.py: SE, grouped convs, ResNet-D downsampling
    mobilenetv3_small_050=({}, 32),
    tinynet_e=({}, 32),  # efficientnet.py
    ghostnet_050=({}, 32),
    regnetx_002=({}, 32),
    densenet121=({}, 32),
    convnext_atto=({}, 32),
    poolformerv2_s12=({}, 32),  # metaformer.py
    vit_tiny_patch16_224=(dict(img_size=32, patch_size=4), 32),
    mixer_s16_224=(dict(img_size=64), 64),  # mlp_mixer.py
    levit_128s=(dict(img_size=64), 64),
    hrnet_w18_small=({}, 32),
    dla46_c=({}, 32),
    dpn48b=({}, 32),
    cs3darknet_s=({}, 32),  # cspnet.py
    rexnet_100=({}, 32),
    hardcorenas_a=({}, 32),
    repvgg_a0=({}, 32),  # byobnet.py
    skresnet18=({}, 32),  # sknet.py
    ese_vovnet19b_slim=({}, 32),  # vovnet.py
    inception_v3=({}, 75),
    resnest14d=({}, 32),
    coat_lite_tiny=(dict(img_size=32), 32),
    edgenext_xx_small=({}, 32),
    mobilevit_xxs=({}, 64),
    fastvit_t8=({}, 32),
    pit_ti_224=(dict(img_size=32), 32),
    efficientvit_m0=(dict(img_size=64), 64),  # efficientvit_msra.py
    efficientvit_b0=({}, 32),  # efficientvit_mit.py
    hgnetv2_b0=({}, 32),
    starnet_s050=({}, 32),
    inception_next_atto=({}, 32),
    repvit_m0_9=({}, 32),
    efficientformerv2_s0=(dict(img_size=64), 64),
    mambaout_femto=({}, 32),
    repghostnet_050=({}, 32),
    legacy_seresnet18=({}, 32),  # senet.py
    nf_regnet_b0=({}, 32),  # nfnet.py
    botnet26t_256=(dict(img_size=32), 32),  # byoanet.py
    swin_tiny_patch4_window7_224=(dict(img_size=32, window_size=2), 32),
    cait_xxs24_224=(dict(img_size=32, patch_size=4), 32),
    coatnet_nano_rw_224=(dict(img_size=64), 64),  # maxxvit.py
    fasternet_t0=({}, 32),
    pvt_v2_b0=({}, 32),
    xcit_nano_12_p8_224=(dict(img_size=32), 32),
    eva02_tiny_patch14_224=(dict(img_size=28), 28),
    convit_tiny=(dict(img_size=32, patch_size=4), 32),
    tiny_vit_5m_224=({}, 64),
    shvit_s1=({}, 64),
    sequencer2d_s=(dict(img_size=32), 32),  # LSTM
)

# Tried and left out (timm 1.0.31, torch 2.13), with the reason.
DROPPED = OrderedDict(
    efficientformer_l1="img_size=64 fails in PyTorch itself (attention bias built for 7x7 tokens: "
    "'size of tensor a (4) must match ... b (49)'); 224 px only",
    crossvit_tiny_240="img_size=32 fails in PyTorch itself (token counts of the two branches differ)",
    halonet26t="no small input: asserts that the feature map divides the halo block size",
    beit_base_patch16_224="no img_size override at this timm version's defaults (asserts 224 px), and 86M parameters",
    ghostnetv2_100="32 px fails in PyTorch itself (DFC attention pools 1x1 to 0x0); ghostnet is covered by ghostnet_050",
    vgg11="129M parameters (4096-wide ConvMlp head): too large for a sweep",
)


def create(name: str) -> nn.Module:
    kwargs, _ = MODELS[name]
    base = dict(pretrained=False, num_classes=NUM_CLASSES, drop_rate=0.0)
    try:
        model = timm.create_model(name, drop_path_rate=0.0, **base, **kwargs)
    except TypeError:
        model = timm.create_model(name, **base, **kwargs)
    for m in model.modules():  # any dropout the kwargs did not reach
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p:
            m.p = 0.0
    return model


class Timeout(Exception):
    pass


@contextlib.contextmanager
def alarm(seconds: int):
    def on_alarm(signum, frame):
        raise Timeout(f"timed out after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {line}"


def matched_keys(initial: dict, path: str) -> list:
    """The state_dict keys that name an initializer of the export at `path`."""
    names = {t.name for t in onnx.load(path, load_external_data=False).graph.initializer}
    return [k for k in initial if k in names]


def make_reference(name: str, model: nn.Module, initial: dict, x, labels, path: str, mode: str, call: str, npz: str):
    """make.py's NPZ for this export: reference values of the state_dict entries that
    are initializers of the file."""
    matched = matched_keys(initial, path)
    losses, logits = make.reference(model, x, labels, name)
    arrays = make.reference_arrays(model, initial, matched, x, labels, losses, logits)
    arrays["mode_info"] = np.array([f"mode={mode}", call, f"arch=timm {name} {MODELS[name]}"])
    make.save_npz(npz, arrays)
    return losses


def make_reference64(model: nn.Module, initial: dict, x, labels, path: str, npz64: str) -> None:
    """The same two steps in float64 (`model` still at its initial weights), written
    with every float array in float64. The hyperparameters the compiled step and
    the export hold as float32 (SGD's momentum and weight decay, normalisation
    epsilons, BatchNorm's momentum) are given to PyTorch at their float32 values,
    so that the two float64 steps differ only by rounding."""
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    model = model.double()
    for m in model.modules():
        if isinstance(getattr(m, "eps", None), float):
            m.eps = f32(m.eps)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None:
            m.momentum = f32(m.momentum)
    xd = x.double() if x.is_floating_point() else x
    losses, logits = make.reference(model, xd, labels, "", momentum=f32(0.9), weight_decay=f32(5e-4))
    matched = matched_keys(initial, path)
    arrays = make.reference_arrays(model, initial, matched, xd, labels, losses, logits, dtype=np.float64)
    make.save_npz(npz64, arrays)


# The bounds of tests/common/parity.rs (normwise per tensor, NaN fails): values
# within 2e-3 after two steps, the two steps' update within 1e-3, losses 1e-5;
# the norms floored at 1e-3 RMS (values) and lr * 1e-3 RMS (updates).
VALUE_BOUND, UPDATE_BOUND, LOSS_BOUND = 2e-3, 1e-3, 1e-5
VALUE_FLOOR, UPDATE_FLOOR, LR = 1e-3, 1e-3, 0.1


def floored_error(got: np.ndarray, want: np.ndarray, floor: float) -> float:
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        return float("inf")
    norm = max(float(np.linalg.norm(want)), floor * np.sqrt(want.size))
    return float(np.linalg.norm(got - want)) / norm


def widened(model: onnx.ModelProto) -> onnx.ModelProto:
    """The compiled step with every float32 tensor in float64 (exactly: each
    float32 is a float64): initializers, inputs and outputs, Constant and
    ConstantOfShape values (value_float(s) too), Casts to float."""
    from onnx import TensorProto, numpy_helper

    def widen(t):
        if t.data_type != TensorProto.FLOAT:
            return t
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)

    g = model.graph
    for i, t in enumerate(g.initializer):
        g.initializer[i].CopyFrom(widen(t))
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.DOUBLE
    del g.value_info[:]
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if a.type == onnx.AttributeProto.TENSOR:
                a.t.CopyFrom(widen(a.t))
            if n.op_type == "Constant" and a.name in ("value_float", "value_floats"):
                values = [a.f] if a.name == "value_float" else list(a.floats)
                array = np.array(values[0] if a.name == "value_float" else values, np.float64)
                a.CopyFrom(onnx.helper.make_attribute("value", numpy_helper.from_array(array)))
    return model


def grouped_conv_transpose():
    """ONNX's reference ConvTranspose (onnx 1.23) fails on a group with more than
    one output channel: this one runs each group through it with group 1 and
    concatenates the results along the channels."""
    from onnx.reference.ops.op_conv_transpose import ConvTranspose as Reference

    class ConvTranspose(Reference):
        def _run(self, X, W, B=None, **attributes):
            group = attributes.get("group") or 1
            if group == 1:
                return super()._run(X, W, B, **attributes)
            attributes["group"] = 1
            per_out = W.shape[1]
            outputs = [
                super(ConvTranspose, self)._run(
                    x, w, None if B is None else B[g * per_out:(g + 1) * per_out], **attributes)[0]
                for g, (x, w) in enumerate(zip(np.split(X, group, axis=1), np.split(W, group, axis=0)))
            ]
            return (np.concatenate(outputs, axis=1),)

    return ConvTranspose


def float64_steps(cli: str, path: str, npz64: str) -> tuple:
    """The export patched and compiled by the CLI as step_parity does it in
    process (plain cross-entropy, head kept, momentum 0.9, weight decay 5e-4), the
    step widened to float64 and run twice by ONNX's reference evaluator (numpy,
    float64), against PyTorch's float64 steps with the float32 bounds. A float32
    mismatch that passes here is rounding: in float32 a ReLU (or ReLU6, hard-swish,
    max-pool tie) input within rounding of zero falls on the other side in PyTorch
    than in the step, and lr 0.1 carries that into the second step; in float64
    both sides take the same decisions. A wrong gradient rule fails in both."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        patched, step = os.path.join(tmp, "patched.onnx"), os.path.join(tmp, "step.onnx")
        for cmd in ([cli, "patch", path, "-o", patched, "--class-counts", ",".join(["1"] * NUM_CLASSES),
                     "--loss", "ce", "--reweight", "none", "--head", "keep"],
                    [cli, "compile", patched, "-o", step, "--momentum", "0.9", "--weight-decay", "5e-4"]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                return "error", f"{cmd[1]}: {proc.stderr.strip().splitlines()[-1][:300]}"
        model = onnx.load(step)
        meta = {p.key: p.value for p in model.metadata_props}
        names = json.loads(meta["ldam_onnx.train.state"])
        kinds = dict(zip(names, json.loads(meta["ldam_onnx.train.state_kinds"])))
        state = onnx.load(os.path.join(tmp, meta["ldam_onnx.train.initial_state"]))
        feeds = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in state.graph.initializer}
        evaluator = ReferenceEvaluator(widened(model), new_ops=[grouped_conv_transpose()])
    ref = np.load(npz64)
    data_input = next(i.name for i in model.graph.input if i.name not in feeds and i.name not in ("labels", "epoch", "lr"))
    feeds.update({data_input: ref["input"], "labels": ref["labels"],
                  "epoch": np.array(0, np.int64), "lr": np.array(LR, np.float64)})
    initial = {k: feeds[k].copy() for k in names}
    losses = []
    for _ in range(2):
        out = evaluator.run(["loss"] + [k + ".next" for k in names], feeds)
        losses.append(float(out[0]))
        feeds.update(zip(names, out[1:]))
    for got, want in zip(losses, ref["loss"]):
        if not abs(got - want) / max(abs(want), 1.0) <= LOSS_BOUND:
            return "mismatch", f"float64 loss {got} against PyTorch's {want}"
    errors = []
    for k in names:
        key = {"parameter": "param", "running_mean": "buffer", "running_var": "buffer"}.get(kinds[k])
        if key is None or f"{key}/{k}" not in ref.files or not np.array_equal(ref[f"initial/{k}"], initial[k]):
            continue
        want, got, start = ref[f"{key}/{k}"], feeds[k], initial[k]
        errors.append((floored_error(got, want, VALUE_FLOOR),
                       floored_error(got - start, want - start, LR * UPDATE_FLOOR), k))
    if not errors:
        return "mismatch", "no tensor compared"
    worst_value = max(errors)
    worst_update = max(errors, key=lambda e: e[1])
    summary = (f"float64 losses {losses} vs {[float(v) for v in ref['loss']]}; {len(errors)} tensors, worst errors "
               f"{worst_value[0]:.1e} (values), {worst_update[1]:.1e} (update)")
    bad = [e for e in errors if not (e[0] <= VALUE_BOUND and e[1] <= UPDATE_BOUND)]
    if bad:
        return "mismatch", f"'{bad[0][2]}' off by {bad[0][0]:.2e} (values), {bad[0][1]:.2e} (update); {summary}"
    return "parity", summary


def classify(stdout: str, rc: int) -> tuple:
    line = stdout.strip().splitlines()[0] if stdout.strip() else ""
    if "\t" in line:
        kind, detail = line.split("\t", 1)
    else:
        kind, detail = "error", f"exit {rc}, no result line: {line[:200]}"
    if kind == "error" and detail.startswith("patch:") and "dynamic_shapes" in detail:
        kind = "refused"
    if kind not in ("parity", "mismatch", "refused", "error"):
        kind, detail = "error", line
    return kind, detail


def run_one(name: str, mode: str, out: str, checker: str, timeout: int, cli) -> tuple:
    _, side = MODELS[name]
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x = torch.randn(REF_BATCH, 3, side, side, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (REF_BATCH,), generator=g)
    path = os.path.join(out, f"{name}__{mode}.onnx")
    npz = os.path.join(out, f"{name}__{mode}.npz")
    npz64 = os.path.join(out, f"{name}__{mode}.f64.npz")
    for p in (path, path + ".data", npz, npz64):
        if os.path.exists(p):
            os.remove(p)
    try:
        torch.manual_seed(0)
        model = create(name)
        model.train()
        initial = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()
                   if not k.endswith("num_batches_tracked")}
        with alarm(timeout), contextlib.redirect_stdout(io.StringIO()):  # dynamo's progress lines
            call = make.export(mode, model, x[:EXPORT_BATCH], path)
        untrained = copy.deepcopy(model)
        with alarm(timeout):
            make_reference(name, model, initial, x, labels, path, mode, call, npz)
    except Exception as e:  # exporter or PyTorch failure: record and go on
        return "export-failed", first_line(e)
    kind, detail = check(checker, [path, npz], timeout)
    if kind == "mismatch" and cli and first_loss_agrees(detail):
        # Rounding at a kink, or a wrong rule: the same two steps in float64 tell.
        # (A first loss that differs is a different forward pass, e.g. BatchNorm
        # folded at export: no rerun.)
        try:
            with alarm(timeout):
                make_reference64(untrained, initial, x, labels, path, npz64)
                kind64, detail64 = float64_steps(cli, path, npz64)
        except Exception as e:
            kind64, detail64 = "error", first_line(e)
        if kind64 == "parity":
            kind, detail = "f64-parity", f"{detail64}; float32: {detail}"
        else:
            detail = f"{detail}; float64: {kind64}: {detail64}"
    return kind, detail.replace(path, "<model>")


# A first loss further than this from PyTorch's is another forward pass (BatchNorm
# folded at export, parameters dropped), not rounding: no float64 rerun. Rounding
# alone moves a float32 first loss by up to 2e-4 on deep networks with large
# activations (Inception-v3: PyTorch's own float32 loss is 5.5e-5 from its float64).
FORWARD_GAP = 1e-3


def first_loss_agrees(detail: str) -> bool:
    """Whether step_parity's `losses [a, b] vs [c, d]` has a == c within FORWARD_GAP."""
    m = re.search(r"losses \[([^,\]]+)[^\]]*\] vs \[([^,\]]+)", detail)
    if not m:
        return False
    got, want = float(m.group(1)), float(m.group(2))
    return abs(got - want) / max(abs(want), 1.0) <= FORWARD_GAP


def check(checker: str, args: list, timeout: int) -> tuple:
    """Runs step_parity; (result, detail)."""
    try:
        proc = subprocess.run([checker, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "error", f"step_parity timed out after {timeout} s"
    kind, detail = classify(proc.stdout, proc.returncode)
    if not proc.stdout.strip() and proc.stderr.strip():
        tail = proc.stderr.strip().splitlines()
        panic = next((l for l in tail if "panicked" in l), tail[-1])
        detail = f"exit {proc.returncode}: {panic[:300]}"
    return kind, detail


def message_key(kind: str, detail: str) -> str:
    """The part of a message that names the failure, with numbers and tensor names
    masked, so equal causes group together."""
    d = detail
    if kind == "mismatch":
        d = d.split("; losses")[0]
        d = re.sub(r"'[^']*' off by", "'<tensor>' off by", d)
    d = d.replace("<model>: ", "")
    d = re.sub(r"\b(node|tensor|initializer|value|input|output) '[^']*'", r"\1 '<name>'", d)
    d = re.sub(r"-?\d+\.\d+(e[-+]?\d+)?|\d+e[-+]?\d+|(?<=loss )\d+(?= against)", "#", d)
    return d[:200]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "timm-sweep"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--timeout", type=int, default=300, help="seconds per export and per check")
    ap.add_argument("--checker", default=os.path.join(ROOT, "target", "debug", "examples", "step_parity"))
    ap.add_argument("--cli", default=os.path.join(ROOT, "target", "debug", "ldam-onnx"),
                    help="the ldam-onnx binary that compiles the float64 rerun of a mismatch")
    ap.add_argument("--no-float64", action="store_true", help="do not rerun a float32 mismatch in float64")
    ap.add_argument("--list", action="store_true", help="print the models and the dropped ones, and exit")
    args = ap.parse_args()

    if args.list:
        for name, (kw, side) in MODELS.items():
            print(f"{name:32s} {side:3d}px {kw}")
        for name, why in DROPPED.items():
            print(f"dropped {name}: {why}")
        return 0
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in models if m not in MODELS] + [m for m in modes if m not in make.MODES]
    if unknown:
        ap.error(f"unknown model or mode: {', '.join(unknown)}")
    if not os.access(args.checker, os.X_OK):
        ap.error(f"{args.checker} is not built (cargo build --example step_parity)")
    cli = None if args.no_float64 else args.cli
    if cli and not os.access(cli, os.X_OK):
        ap.error(f"{cli} is not built (cargo build), or pass --no-float64")
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)

    print(f"timm {timm.__version__}, torch {torch.__version__}, onnx {onnx.__version__}; "
          f"{len(models)} models x {len(modes)} modes; files in {args.out}", flush=True)
    print(f"{'model':32s} {'mode':7s} {'result':13s} {'seconds':>7s}  detail", flush=True)
    start = time.time()
    results = []
    for name in models:
        for mode in modes:
            t = time.time()
            kind, detail = run_one(name, mode, args.out, args.checker, args.timeout, cli)
            secs = time.time() - t
            results.append((name, mode, kind, detail))
            short = detail if len(detail) <= 160 else detail[:157] + "..."
            print(f"{name:32s} {mode:7s} {kind:13s} {secs:7.1f}  {short}", flush=True)

    kinds = ("parity", "f64-parity", "mismatch", "refused", "error", "export-failed")
    print(f"\ntotals ({len(models)} models, {time.time() - start:.0f} s):")
    for mode in modes:
        c = collections.Counter(k for _, m, k, _ in results if m == mode)
        print(f"  {mode:7s} " + ", ".join(f"{k} {c[k]}" for k in kinds))
    for kind in ("mismatch", "error", "export-failed"):
        msgs = collections.Counter(message_key(k, d) for _, _, k, d in results if k == kind)
        if msgs:
            print(f"\n{kind} messages:")
            for msg, n in msgs.most_common():
                who = sorted({f"{a}/{m}" for a, m, k, d in results if k == kind and message_key(k, d) == msg})
                print(f"  {n:3d}  {msg}")
                print(f"       {', '.join(who)[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
