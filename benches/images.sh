#!/usr/bin/env bash
# The image-pipeline benchmark: decode + augment throughput (img/s) of
#   ldam-onnx    the trainer's batch producer on an image folder
#                (examples/bench_images.rs: the folder read as `train` reads it,
#                batches of 128 assembled with rayon on the background thread,
#                training augmentation, --normalize imagenet; no training)
#   torchvision  ImageFolder + DataLoader(num_workers=2, batch_size=128,
#                shuffle=True) with the same transforms
#                (benches/images_torchvision.py)
# on two synthetic ImageFolder datasets written once into target/bench-images/:
#   jpeg   photo-like JPEGs of 200-400 px a side, model input 3x224x224:
#          RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3)) + flip
#   png32  32x32 PNGs, model input 3x32x32: the CIFAR recipe, RandomCrop(32,
#          padding=4) + flip
# The two alternate within every repetition (one epoch each, start-up of the
# producer thread or of the DataLoader's workers included), so that load from
# other processes spreads over both; the table gives min and median img/s and
# their ratios. Then the peak RSS of the pipeline streaming over 10,000 and
# over 100,000 32x32 PNGs (png32-many: hard links to 500 distinct files), to
# show that memory does not grow with the dataset.
#
# Usage: bash benches/images.sh [--repeat 3] [--jpegs 2000] [--pngs 10000] [--many 100000]
#
# Installs, when missing, torchvision 0.28.0 (the release that pins torch
# 2.13.0) and pillow next to the pinned torch wheel in the git-ignored
# .deps/bench, and builds the example in release mode.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

repeat=3
jpegs=2000
pngs=10000
many=100000
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) repeat=$2; shift 2 ;;
        --jpegs) jpegs=$2; shift 2 ;;
        --pngs) pngs=$2; shift 2 ;;
        --many) many=$2; shift 2 ;;
        *) echo "unknown argument '$1' (see the head of $0)" >&2; exit 2 ;;
    esac
done

BENCH_TORCHVISION=1 source benches/deps-bench.sh
bench=$BENCH_PYTHONPATH
source .ci/deps-torch.sh >/dev/null
cargo build --quiet --release --locked --example bench_images
export PYTHONPATH="$bench${PYTHONPATH:+:$PYTHONPATH}"

data=target/bench-images
echo "writing the datasets into $data (once)" >&2
python3 benches/images_torchvision.py generate "$data" \
    --jpegs "$jpegs" --pngs "$pngs" --many "$many"

results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores" >&2
for r in $(seq 1 "$repeat"); do
    for set in "jpeg 224" "png32 32"; do
        read -r name size <<<"$set"
        target/release/examples/bench_images "$data/$name" --size "$size" --repeat 1 2>/dev/null \
            | sed "s/^result /result $name /" | tee -a "$results" >&2
        python3 benches/images_torchvision.py measure "$data/$name" --size "$size" \
            | sed "s/^result /result $name /" | tee -a "$results" >&2
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    _, name, impl, size, images, seconds, rate = line.split()
    rows.setdefault((name, size, images), {}).setdefault(impl, []).append(float(rate))
print("| images | model input | implementation | min img/s | median img/s | min / torchvision min | median / torchvision median |")
print("|---|---|---|---|---|---|---|")
for (name, size, images), impls in rows.items():
    base = impls["torchvision"]
    for impl in ("torchvision", "ldam-onnx"):
        rates = impls[impl]
        print(f"| {images} {name} | 3x{size}x{size} | {impl} | {min(rates):,.0f} | "
              f"{statistics.median(rates):,.0f} | {min(rates) / min(base):.2f}x | "
              f"{statistics.median(rates) / statistics.median(base):.2f}x |")
EOF

# Peak resident memory while streaming over 10,000 and 100,000 images.
echo
echo "| images streamed (3x32x32, batch 128) | implementation | seconds | peak RSS |"
echo "|---|---|---|---|"
for name in png32 png32-many; do
    log=$(mktemp)
    /usr/bin/time -v target/release/examples/bench_images "$data/$name" --size 32 --repeat 1 \
        2>"$log" >"$log.out"
    read -r _ _ _ images seconds _ <"$log.out"
    kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    echo "| $images | ldam-onnx | $seconds | $((kib / 1024)) MiB |"
    rm -f "$log" "$log.out"
done

# The same with training: one epoch of the CNN (models/cnn.onnx, 1x28x28: the
# PNGs converted to grey and cropped) patched for the folder's counts, so that
# the whole trainer streams over 10,000 and 100,000 images.
source .ci/deps-torch.sh >/dev/null
cargo build --quiet --release --locked --bin ldam-onnx
for name in png32 png32-many; do
    images=$(find "$data/$name" -name '*.png' | wc -l)
    per_class=$((images / 10))
    counts=$(printf "$per_class,%.0s" $(seq 1 10))
    target/release/ldam-onnx patch models/cnn.onnx --class-counts "${counts%,}" \
        -o "$data/cnn-$name.ldam.onnx" --force >/dev/null 2>&1
    log=$(mktemp)
    /usr/bin/time -v target/release/ldam-onnx train "$data/cnn-$name.ldam.onnx" \
        --train "$data/$name" --test "$data/png32" --epochs 1 \
        --out "$data/run-$name" --force >"$log" 2>&1
    kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    seconds=$(awk -F, 'NR == 2 {printf "%.1f", $10}' "$data/run-$name/metrics.csv")
    echo "| $images | \`ldam-onnx train\`, CNN, 1 epoch | $seconds | $((kib / 1024)) MiB |"
    rm -f "$log"
done
