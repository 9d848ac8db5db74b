#!/usr/bin/env python3
"""Generates the large classifier used by benches/patch_large.sh.

x float[N, IN] -> Gemm(transB=1) -> Relu -> ... -> Gemm -> logits float[N, CLASSES]

Weights are random float32 stored inline as raw_data (opset 17, symbolic batch N).
Writes two variants of the same model:

  OUT_DIR/inline/model.onnx                      all weights inside the .onnx file
  OUT_DIR/external/model.onnx + model.onnx.data  weights in one data file beside it

Usage: make_large_model.py OUT_DIR [--in-features 4096] [--hidden 8192,8192,3072]
                                   [--classes 10] [--seed 0] [--variants inline,external]

A model of 2 GiB or more has no inline variant (one protobuf message cannot hold
it): ask for `--variants external` only.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(in_features, hidden, classes, seed):
    rng = np.random.default_rng(seed)
    widths = [in_features] + hidden + [classes]
    nodes, inits = [], []
    cur = "x"
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        # Gemm B with transB=1 is [out, in], as torch.nn.Linear exports it.
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        w *= np.float32(1.0 / np.sqrt(fan_in))
        b = np.zeros(fan_out, dtype=np.float32)
        inits.append(numpy_helper.from_array(w, f"fc{i}.weight"))
        inits.append(numpy_helper.from_array(b, f"fc{i}.bias"))
        del w
        out = "logits" if last else f"fc{i}.out"
        nodes.append(helper.make_node("Gemm", [cur, f"fc{i}.weight", f"fc{i}.bias"], [out],
                                      name=f"fc{i}", transB=1))
        cur = out
        if not last:
            nodes.append(helper.make_node("Relu", [cur], [f"relu{i}.out"], name=f"relu{i}"))
            cur = f"relu{i}.out"
    graph = helper.make_graph(
        nodes, "large_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="ldam-onnx-bench")
    model.ir_version = 8
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--in-features", type=int, default=4096)
    ap.add_argument("--hidden", default="8192,8192,3072")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="inline,external",
                    help="which files to write: inline, external or both (comma-separated)")
    a = ap.parse_args()
    variants = {v for v in a.variants.split(",") if v}
    if not variants or variants - {"inline", "external"}:
        ap.error(f"--variants takes inline and/or external, not {a.variants!r}")
    hidden = [int(h) for h in a.hidden.split(",") if h]
    model = build(a.in_features, hidden, a.classes, a.seed)

    written = []
    # Inline first: saving with external data rewrites the tensors in place.
    # onnx.save refuses a single proto >2 GiB.
    if "inline" in variants:
        inline = os.path.join(a.out_dir, "inline", "model.onnx")
        os.makedirs(os.path.dirname(inline), exist_ok=True)
        onnx.save(model, inline)
        written.append(inline)
    if "external" in variants:
        ext = os.path.join(a.out_dir, "external", "model.onnx")
        os.makedirs(os.path.dirname(ext), exist_ok=True)
        onnx.save(model, ext, save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=1024)
        written += [ext, ext + ".data"]
    for p in written:
        print(f"  wrote {p} ({os.path.getsize(p) / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
