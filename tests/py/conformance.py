#!/usr/bin/env python3
"""Spec conformance of the graphs ldam-onnx emits, driven by tests/reference_evaluator.rs.

    conformance.py steps STEP.onnx BATCH.json OUT_DIR
        Runs the compiled training step for every entry of BATCH.json's "steps" in
        ONNX Runtime (CPU) and in onnx.reference.ReferenceEvaluator, the ONNX
        specification's own implementation, both from the same state: the initial
        state read from the step's companion file, then ONNX Runtime's S.next
        after each step (so each step compares one step of the two runtimes).
        Writes OUT_DIR/result.json ({"versions", "state": [{"name", "dims",
        "offset", "length"}], "steps": [{"ort"|"reference": {"loss", "logits"}}]})
        and OUT_DIR/{ort,reference}-K.bin: the S.next of step K, float32
        little-endian, in state order at the listed offsets (in elements).

    conformance.py check FILE.onnx ...
        onnx.checker.check_model(full_check=True) on every file; on the first
        rejected one, prints the file and the checker's reason and exits 1.

BATCH.json: {"input_dims": [N, ...], "steps": [{"epoch": E, "lr": LR, "input": FILE
(float32 little-endian, beside BATCH.json), "labels": [...]}, ...]}, the format
tests/js/run_step.mjs reads too.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnx.checker
import onnx.reference
import onnxruntime

STATE_KEY = "ldam_onnx.train.state"
INITIAL_STATE_KEY = "ldam_onnx.train.initial_state"


def metadata(model):
    return {p.key: p.value for p in model.metadata_props}


def initial_state(step_path, step, names):
    """The state's initial values: the companion file's initializers, or the
    step's own where it names no companion."""
    meta = metadata(step)
    if INITIAL_STATE_KEY in meta:
        holder = onnx.load(os.path.join(os.path.dirname(step_path), meta[INITIAL_STATE_KEY]))
    else:
        holder = step
    values = {t.name: onnx.numpy_helper.to_array(t) for t in holder.graph.initializer}
    missing = [n for n in names if n not in values]
    if missing:
        raise SystemExit(f"{step_path}: no initial value for state tensor(s) {missing}")
    return {n: values[n] for n in names}


def reference_run(evaluator, step, feeds):
    """Runs the reference evaluator; on failure names the node whose op raised."""
    try:
        return evaluator.run(None, feeds)
    except Exception as error:  # the evaluator raises whatever its op raised
        node = None
        tb = error.__traceback__
        while tb is not None:
            local = tb.tb_frame.f_locals
            candidate = local.get("node") if "node" in local else None
            if candidate is not None and hasattr(candidate, "op_type"):
                node = candidate
            tb = tb.tb_next
        where = ""
        if node is not None:
            proto = getattr(node, "onnx_node", None)
            name = proto.name if proto is not None else "?"
            where = f" at node '{name}' ({node.op_type}, inputs {list(getattr(proto, 'input', []))})"
        raise SystemExit(
            f"onnx.reference.ReferenceEvaluator fails{where}: {type(error).__name__}: {error}"
        ) from error


def steps(step_path, batch_path, out_dir):
    step = onnx.load(step_path)
    meta = metadata(step)
    names = json.loads(meta[STATE_KEY])
    state = initial_state(step_path, step, names)
    with open(batch_path) as f:
        batch = json.load(f)
    labels_name = meta.get("ldam_onnx.labels_input", "labels")
    epoch_name = meta.get("ldam_onnx.epoch_input", "epoch")
    lr_name = meta.get("ldam_onnx.train.lr_input", "lr")
    loss_name = meta.get("ldam_onnx.loss_output", "loss")
    logits_name = meta.get("ldam_onnx.logits_output", "logits")
    fed = {labels_name, epoch_name, lr_name, *names}
    data_inputs = [i.name for i in step.graph.input if i.name not in fed]
    if len(data_inputs) != 1:
        raise SystemExit(f"{step_path}: expected one data input, found {data_inputs}")

    options = onnxruntime.SessionOptions()
    session = onnxruntime.InferenceSession(
        step.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    try:
        evaluator = onnx.reference.ReferenceEvaluator(step)
    except Exception as error:
        raise SystemExit(f"onnx.reference.ReferenceEvaluator refuses the step: {error}") from error
    outputs = [o.name for o in step.graph.output]

    layout, offset = [], 0
    for n in names:
        layout.append({"name": n, "dims": list(state[n].shape), "offset": offset, "length": int(state[n].size)})
        offset += int(state[n].size)
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for k, entry in enumerate(batch["steps"]):
        x = np.fromfile(os.path.join(os.path.dirname(batch_path), entry["input"]), dtype="<f4")
        feeds = {
            data_inputs[0]: x.reshape(batch["input_dims"]),
            labels_name: np.array(entry["labels"], dtype=np.int64),
            epoch_name: np.array(entry["epoch"], dtype=np.int64),
            lr_name: np.array(entry["lr"], dtype=np.float32),
            **state,
        }
        runs = {
            "ort": dict(zip(outputs, session.run(outputs, feeds))),
            "reference": dict(zip(outputs, reference_run(evaluator, step, feeds))),
        }
        record = {}
        for runtime, values in runs.items():
            record[runtime] = {
                "loss": float(values[loss_name]),
                "logits": np.asarray(values[logits_name], dtype=np.float32).ravel().tolist(),
            }
            nexts = []
            for n in names:
                value = np.asarray(values[f"{n}.next"])
                if value.shape != state[n].shape or value.dtype != np.float32:
                    raise SystemExit(
                        f"{runtime}: step {k}: {n}.next is {value.dtype} {value.shape}, "
                        f"expected float32 {state[n].shape}"
                    )
                nexts.append(value.astype("<f4").ravel())
            np.concatenate(nexts).tofile(os.path.join(out_dir, f"{runtime}-{k}.bin"))
        results.append(record)
        state = {n: np.asarray(runs["ort"][f"{n}.next"]) for n in names}
    versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump({"versions": versions, "state": layout, "steps": results}, f)


def check(paths):
    for path in paths:
        try:
            onnx.checker.check_model(path, full_check=True)
        except Exception as error:
            raise SystemExit(f"onnx.checker (onnx {onnx.__version__}) rejects {path}: {error}") from error
        print(f"ok {path}")


def main(argv):
    if len(argv) == 4 and argv[0] == "steps":
        steps(*argv[1:])
    elif len(argv) >= 2 and argv[0] == "check":
        check(argv[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
