"""Cost of the step-file layout in native ONNX Runtime: the same compiled step
run with its state as plain inputs (what `compile` writes) and with the state
also held by initializers (the layout of earlier versions), alternating in one
process, fed the same batch and state.

  bash benches/step_layout.sh models/cnn.onnx 128

prints the median and minimum step time of each layout and their ratio.
"""
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def main(step_path, batch, rounds=8, steps=10):
    step = onnx.load(step_path)
    meta = {p.key: p.value for p in step.metadata_props}
    companion = onnx.load(step_path.rsplit("/", 1)[0] + "/" + meta["ldam_onnx.train.initial_state"]
                          if "/" in step_path else meta["ldam_onnx.train.initial_state"])
    embedded = onnx.ModelProto()
    embedded.CopyFrom(step)
    embedded.graph.initializer.extend(companion.graph.initializer)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # the initializer-backed layout warns once per state tensor
    sessions = {
        "plain inputs": ort.InferenceSession(step.SerializeToString(), options),
        "initializer-backed": ort.InferenceSession(embedded.SerializeToString(), options),
    }
    state = dict(zip([o.name for o in companion.graph.output],
                     ort.InferenceSession(companion.SerializeToString()).run(None, {})))
    data = step.graph.input[0]
    dims = [d.dim_value or batch for d in data.type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    feed = {
        data.name: rng.standard_normal(dims).astype(np.float32),
        "labels": (np.arange(batch) % 10).astype(np.int64),
        "epoch": np.array(0, dtype=np.int64),
        "lr": np.array(0.0, dtype=np.float32),
    }
    feed.update(state)
    times = {name: [] for name in sessions}
    for round in range(rounds):
        # Alternating which layout goes first cancels drifts of the machine's load.
        order = list(sessions.items())
        for name, session in order if round % 2 == 0 else reversed(order):
            session.run(None, feed)  # warm-up
            start = time.perf_counter()
            for _ in range(steps):
                session.run(None, feed)
            times[name].append((time.perf_counter() - start) / steps)
    for name, values in times.items():
        print(f"{name:20s} median {statistics.median(values) * 1e3:8.2f} ms  min {min(values) * 1e3:8.2f} ms")
    plain, backed = (statistics.median(times[n]) for n in sessions)
    print(f"plain / initializer-backed (median): {plain / backed:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
