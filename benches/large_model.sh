#!/usr/bin/env bash
# Benchmark: a classifier above protobuf's 2 GiB message limit through the whole
# CLI: `patch`, `compile`, `train` (one epoch of one batch), `deploy`, then the
# deployed model evaluated by `eval` and run in Python's onnxruntime against the
# run's own model.onnx. Each stage's wall time and peak RSS is measured.
#
#   benches/large_model.sh
#
# Environment:
#   HIDDEN=a,b,c         hidden widths of the generated MLP
#                        [16384,16384,14336 -> 2.28 GB of float32 weights]
#   IN_FEATURES=N        input features [4096]
#   BENCH_DATA=DIR       where the generated model is cached [target/bench-large]
#   BENCH_WORK=DIR       where the stages write, empty or new [a fresh folder
#                        under target/]
#   BENCH_PYTHON=PY      a python with onnx + numpy (+ onnxruntime for the last
#                        check) [.deps/py-export/bin/python, else $PYTHON or
#                        python3 if they have onnx + numpy, else a venv made
#                        under target/bench-venv]
#   LDAM_INLINE_LIMIT=B  the CLI's inline limit in bytes [1 GiB]: a small value
#                        (with a small HIDDEN) sends a small model down the paths
#                        a >2 GiB one takes, in seconds
#   KEEP=1               keep the stages' files (removed at the end otherwise;
#                        the compiled step's initial state, as large as the
#                        weights and their momentum, is removed once measured)
#
# Free disk needed: about 6x the weights (the model, the patched model, two
# checkpoints of weights + momentum while one replaces the other, the run's model
# and the deployed one); 8x with KEEP=1. Memory: about 5x the weights, in `train`
# (see the README).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DATA=${BENCH_DATA:-$ROOT/target/bench-large}
HIDDEN=${HIDDEN:-16384,16384,14336}
IN_FEATURES=${IN_FEATURES:-4096}
BIN=$ROOT/target/release/ldam-onnx

source "$ROOT/benches/tools.sh"
bench_python onnx numpy -- onnxruntime

# --- build -------------------------------------------------------------------
log "cargo build --release"
cargo build --release --quiet

# --- model (generated once, cached) and data -----------------------------------
GEN=$ROOT/benches/make_large_model.py
STAMP="hidden=$HIDDEN in=$IN_FEATURES gen=$(sha256sum "$GEN" | cut -c1-16)"
MODEL=$DATA/external/model.onnx
if [[ ! -f $DATA/stamp || $(cat "$DATA/stamp") != "$STAMP" || ! -f $MODEL.data ]]; then
    log "generating the model in $DATA (once)"
    rm -rf "$DATA"
    mkdir -p "$DATA"
    "$PY" "$GEN" "$DATA" --hidden "$HIDDEN" --in-features "$IN_FEATURES" --variants external
    echo "$STAMP" >"$DATA/stamp"
else
    log "using cached model in $DATA"
fi
# One example per class (10 classes): one batch of 10 trains one step.
"$PY" - "$DATA" "$IN_FEATURES" <<'PY'
import sys
import numpy as np
out, features = sys.argv[1], int(sys.argv[2])
for split, seed in (("train", 1), ("test", 2)):
    x = np.random.default_rng(seed).standard_normal((10, features)).astype(np.float32)
    np.savez(f"{out}/{split}.npz", x=x, y=np.arange(10, dtype=np.int64))
PY

# --- stages ------------------------------------------------------------------
mkdir -p "$ROOT/target"
if [[ -n ${BENCH_WORK:-} ]]; then
    WORK=$BENCH_WORK
    if [[ -e $WORK && -n $(ls -A "$WORK") ]]; then
        log "BENCH_WORK=$WORK is not empty"; exit 1
    fi
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "$ROOT/target/bench-large-run.XXXXXX")
fi
[[ ${KEEP:-} == 1 ]] || trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# size FILE...: total bytes of the files that exist.
size() { local total=0 f; for f in "$@"; do [[ -f $f ]] && total=$((total + $(stat -c %s "$f"))); done; echo "$total"; }

# stage LABEL OUTPUT_BYTES_CMD -- CMD...: one run, timed; appends
# "label wall_s rss_kb output_bytes written_bytes": the size of the files it
# leaves (measured after the run) and every byte it wrote to disk (temporary and
# replaced files included: the rusage block count, 512-byte blocks).
stage() {
    local label=$1 outputs=$2; shift 3
    log "$label"
    local t0 t1
    t0=$(date +%s%N)
    if ! /usr/bin/time -v -o "$WORK/time.txt" "$@" >"$WORK/cmd.log" 2>&1; then
        log "failed: $*"; cat "$WORK/cmd.log" >&2; exit 1
    fi
    t1=$(date +%s%N)
    local rss blocks
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
    blocks=$(awk -F': ' '/File system outputs/ {print $2}' "$WORK/time.txt")
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$(( (t1 - t0) / 1000000 ))e-3" "$rss" \
        "$(eval "$outputs")" "$((blocks * 512))" >>"$RESULTS"
    sed 's/^/   /' "$WORK/cmd.log" >&2
}

P=$WORK/model.ldam.onnx
STEP=$WORK/model.train.onnx
RUN=$WORK/run
DEPLOYED=$WORK/deployed.onnx

stage "patch" 'size "$P" "$P.data"' -- \
    "$BIN" patch "$MODEL" --labels-file "$DATA/train.npz" -o "$P"
stage "compile" 'size "$STEP" "$STEP.data" "${STEP%.onnx}.state.onnx" "${STEP%.onnx}.state.onnx.data"' -- \
    "$BIN" compile "$P" -o "$STEP"
# The initial state (weights + zero momentum) is not read again: deploy takes
# the run's checkpoint.
[[ ${KEEP:-} == 1 ]] || rm -f "${STEP%.onnx}.state.onnx" "${STEP%.onnx}.state.onnx.data"
stage "train (1 step + eval)" 'size "$RUN"/checkpoint.onnx* "$RUN"/model.onnx "$RUN"/model.onnx.data' -- \
    "$BIN" train "$P" --train "$DATA/train.npz" --test "$DATA/test.npz" --epochs 1 \
    --batch-size 10 --augment none --out "$RUN" --quiet
stage "deploy" 'size "$DEPLOYED" "$DEPLOYED.data"' -- \
    "$BIN" deploy "$STEP" --state "$RUN/checkpoint.onnx" -o "$DEPLOYED"
stage "eval (deployed)" 'echo 0' -- \
    "$BIN" eval "$DEPLOYED" --test "$DATA/test.npz"

# The deployed model in Python's onnxruntime, against the run's model.onnx
# (the same trained weights, deployed by `train` itself).
if "$PY" -c 'import onnxruntime' >/dev/null 2>&1; then
    stage "python onnxruntime (deployed)" 'echo 0' -- \
        "$PY" - "$DEPLOYED" "$RUN/model.onnx" "$DATA/test.npz" <<'PY'
import gc, sys
import numpy as np
import onnx
import onnxruntime as ort
deployed, trained, data = sys.argv[1:4]
x = np.load(data)["x"]
outputs = []
for path in (deployed, trained):
    meta = onnx.load(path, load_external_data=False)
    external = sum(1 for t in meta.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    print(f"{path}: {external} external initializers, logits {logits.shape}")
    outputs.append(logits)
    del session
    gc.collect()
assert outputs[0].shape == (10, 10) and np.isfinite(outputs[0]).all()
assert np.array_equal(outputs[0], outputs[1]), "deployed and trained model.onnx differ"
print("deployed == run/model.onnx, bit for bit")
PY
else
    log "no onnxruntime in $PY: Python check skipped"
fi

# --- report ------------------------------------------------------------------
weights=$(size "$MODEL" "$MODEL.data")
"$PY" - "$RESULTS" "$weights" "$HIDDEN" "$IN_FEATURES" "${LDAM_INLINE_LIMIT:-1073741824}" <<'PY'
import os, sys
results, weights, hidden, features, limit = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
GB = 1e9
print()
print(f"Model: MLP {features} -> {hidden} -> 10, {weights / GB:.3f} GB (.onnx + .data); "
      f"inline limit {int(limit) / 2**30:.3g} GiB")
print(f"Machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB")
print()
MB = 1e6
print("files MB: what the stage leaves; written MB: every byte it wrote (replaced and")
print("temporary files included). MB = 10^6 bytes.")
print()
hdr = (f"{'stage':<32} {'wall s':>8} {'peak RSS MB':>11} {'RSS/weights':>11} "
       f"{'files MB':>9} {'written MB':>10}")
print(hdr)
print("-" * len(hdr))
mb = lambda n: f"{n / MB:.0f}" if n else "-"
for line in open(results):
    label, wall, rss, files, written = line.rstrip("\n").split("\t")
    rss = int(rss) * 1024
    print(f"{label:<32} {float(wall):>8.1f} {rss / MB:>11.0f} {rss / weights:>11.2f} "
          f"{mb(int(files)):>9} {mb(int(written)):>10}")
PY
