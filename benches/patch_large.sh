#!/usr/bin/env bash
# Benchmark: `ldam-onnx patch` on a ~500 MB classifier (inline weights and external
# data), against Python `onnx.load` + `onnx.save` on the same inline file.
#
#   benches/patch_large.sh
#
# Environment:
#   RUNS=3            timed runs per variant (after one untimed warm-up each)
#   BENCH_DATA=DIR    where the generated models are cached [target/bench-data]
#   BENCH_PYTHON=PY   a python with onnx + numpy [.deps/py-export/bin/python, else
#                     $PYTHON or python3 if they have them; else a venv made under
#                     target/bench-venv] (benches/tools.sh)
#   HIDDEN=a,b,c      hidden widths of the generated MLP [8192,8192,3072 -> ~503 MB]
#
# Every file is in the page cache when timed (the warm-up reads it; dropping caches
# needs root and is not done), so the numbers measure CPU + memory + write-back,
# not cold disk reads. `ldam-onnx patch` fsyncs its output before renaming it into
# place, so its wall time includes flushing the written file to disk; the Python
# baseline does not fsync. The "cp + sync" row is the floor for read-cached +
# write + fsync of the same bytes on this disk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
DATA=${BENCH_DATA:-$ROOT/target/bench-data}
HIDDEN=${HIDDEN:-8192,8192,3072}
COUNTS=5000,2997,1796,1077,645,387,232,139,83,50
BIN=$ROOT/target/release/ldam-onnx

source "$ROOT/benches/tools.sh"
bench_python onnx numpy

# --- build -------------------------------------------------------------------
log "cargo build --release"
cargo build --release --quiet

# --- model (generated once, cached) -------------------------------------------
GEN=$ROOT/benches/make_large_model.py
STAMP="hidden=$HIDDEN gen=$(sha256sum "$GEN" | cut -c1-16)"
INLINE=$DATA/inline/model.onnx
EXTERNAL=$DATA/external/model.onnx
if [[ ! -f $DATA/stamp || $(cat "$DATA/stamp") != "$STAMP" || ! -f $INLINE || ! -f $EXTERNAL.data ]]; then
    log "generating the model in $DATA (once; takes a minute)"
    rm -rf "$DATA"
    mkdir -p "$DATA"
    "$PY" "$GEN" "$DATA" --hidden "$HIDDEN"
    echo "$STAMP" >"$DATA/stamp"
else
    log "using cached model in $DATA"
fi

# --- timing ------------------------------------------------------------------
mkdir -p "$ROOT/target"
WORK=$(mktemp -d "$ROOT/target/bench-tmp.XXXXXX")   # same filesystem as the inputs
trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# measure LABEL SIZE_BYTES CMD...: one run; appends "label size wall_s rss_kb".
measure() {
    local label=$1 size=$2; shift 2
    local t0 t1
    t0=$(date +%s%N)
    if ! /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >"$WORK/cmd.log" 2>&1; then
        log "failed: $*"; cat "$WORK/cmd.log" >&2; exit 1
    fi
    t1=$(date +%s%N)
    printf '%s\t%s\t%s\t%s\n' "$label" "$size" "$(( (t1 - t0) / 1000 ))e-6" "$(tail -n1 "$WORK/rss")" >>"$RESULTS"
}

# bench LABEL SIZE CLEANUP CMD...: one warm-up, then RUNS timed runs.
bench() {
    local label=$1 size=$2 cleanup=$3; shift 3
    log "$label: warm-up + $RUNS runs"
    eval "$cleanup"
    measure warmup "$size" "$@"
    sed -i '$d' "$RESULTS"
    for _ in $(seq "$RUNS"); do
        eval "$cleanup"
        measure "$label" "$size" "$@"
    done
}

OUT=$WORK/out
mkdir -p "$OUT"
inline_size=$(stat -c %s "$INLINE")
external_size=$(( $(stat -c %s "$EXTERNAL") + $(stat -c %s "$EXTERNAL.data") ))

bench "ldam-onnx patch, inline" "$inline_size" 'rm -f "$OUT"/*' \
    "$BIN" patch "$INLINE" --class-counts "$COUNTS" -o "$OUT/patched.onnx"
"$PY" - "$OUT/patched.onnx" <<'PY'
import onnx, sys
m = onnx.load(sys.argv[1], load_external_data=False)
outs = [o.name for o in m.graph.output]
assert "loss" in outs, outs
print(f">> check inline output: outputs {outs}, {len(m.graph.initializer)} initializers, ok", file=sys.stderr)
PY

bench "ldam-onnx patch, external data" "$external_size" 'rm -f "$OUT"/*' \
    "$BIN" patch "$EXTERNAL" --class-counts "$COUNTS" -o "$OUT/patched.onnx"
"$PY" - "$OUT/patched.onnx" "$external_size" <<'PY'
import onnx, os, sys
p = sys.argv[1]
m = onnx.load(p, load_external_data=False)
assert "loss" in [o.name for o in m.graph.output]
total = os.path.getsize(p) + os.path.getsize(p + ".data")
assert total >= int(sys.argv[2]) * 0.99, (total, sys.argv[2])
print(f">> check external output: {os.path.getsize(p)} + {os.path.getsize(p + '.data')} bytes, ok", file=sys.stderr)
PY

# Baseline: the whole Python process (interpreter start + import onnx + load + save),
# like ours (process start + load + patch + save). The in-process load/save times
# are logged to pytimes.
ROUNDTRIP='import sys, time
t0 = time.perf_counter(); import onnx
t1 = time.perf_counter(); m = onnx.load(sys.argv[1])
t2 = time.perf_counter(); onnx.save(m, sys.argv[2])
t3 = time.perf_counter()
print(f"{t1-t0:.3f}\t{t2-t1:.3f}\t{t3-t2:.3f}", file=open(sys.argv[3], "a"))'
: >"$WORK/pytimes"
bench "python onnx.load+save, inline" "$inline_size" 'rm -f "$OUT"/*' \
    "$PY" -c "$ROUNDTRIP" "$INLINE" "$OUT/roundtrip.onnx" "$WORK/pytimes"
sed -i 1d "$WORK/pytimes"   # the warm-up

bench "reference: cp + sync, inline" "$inline_size" 'rm -f "$OUT"/*' \
    sh -c 'cp "$1" "$2" && sync "$2"' sh "$INLINE" "$OUT/copy.onnx"
rm -f "$OUT"/*

# --- report ------------------------------------------------------------------
"$PY" - "$RESULTS" "$WORK/pytimes" "$RUNS" <<'PY'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    label, size, wall, rss = line.rstrip("\n").split("\t")
    rows.setdefault(label, []).append((int(size), float(wall), int(rss) * 1024))
MB = 1e6
print()
print(f"Large-model benchmark: {sys.argv[3]} timed runs per row after one warm-up; inputs in page cache.")
print("MB = 10^6 bytes; size = .onnx (+ .data); MB/s = size / wall; peak RSS = max over runs.")
print()
hdr = f"{'variant':<32} {'size MB':>8} {'wall best s':>11} {'wall med s':>10} {'MB/s best':>9} {'MB/s med':>8} {'peak RSS MB':>11} {'RSS/size':>8}"
print(hdr)
print("-" * len(hdr))
summary = {}
for label, runs in rows.items():
    size = runs[0][0]
    walls = [w for _, w, _ in runs]
    best, med = min(walls), st.median(walls)
    rss = max(r for _, _, r in runs)
    summary[label] = (best, med, rss, size)
    print(f"{label:<32} {size/MB:>8.1f} {best:>11.3f} {med:>10.3f} {size/MB/best:>9.0f} {size/MB/med:>8.0f} {rss/MB:>11.1f} {rss/size:>8.2f}")
print()
ours = summary["ldam-onnx patch, inline"]
py = summary["python onnx.load+save, inline"]
print(f"speed ratio, inline (python wall / ldam-onnx wall): best {py[0]/ours[0]:.2f}x, median {py[1]/ours[1]:.2f}x")
print(f"peak RSS ratio, inline (ldam-onnx / python): {ours[2]/py[2]:.2f}")
t = [l.split("\t") for l in open(sys.argv[2]) if l.strip()]
if t:
    imp, load, save = (st.median(float(r[i]) for r in t) for i in range(3))
    print(f"python in-process medians: import onnx {imp:.3f} s, onnx.load {load:.3f} s, onnx.save {save:.3f} s")
print()
for label in ("ldam-onnx patch, inline", "ldam-onnx patch, external data"):
    best, med, rss, size = summary[label]
    speed = "ok" if size / MB / med >= 500 else "MISSED"
    mem = "ok" if rss / size <= 1.5 else "MISSED"
    print(f"target {label}: >= 500 MB/s (median) {speed}; peak RSS <= 1.5x size {mem}")
PY
