#!/usr/bin/env bash
# The paper's comparison on real data, end to end: ERM (plain cross-entropy)
# against LDAM-DRW on Fashion-MNIST-LT (imbalance ratio 100, exponential
# profile), each network trained both ways with the same seed and epochs.
#
#   bash examples/demo.sh           # quick (~10 minutes on 2 cores): the MLP for the
#                                   # reference's 200 epochs, the CNN for 20
#   bash examples/demo.sh --full    # both networks for 200 epochs (DRW from 160)
#   bash examples/demo.sh --epochs N  # both networks for N epochs
#   bash examples/demo.sh --methods erm,ldam-drw,la,vs,ldam-drw-sam
#       # the methods to compare (default erm,ldam-drw): la is logit-adjusted
#       # cross-entropy (Menon et al., tau 1 = Balanced Softmax), vs the VS loss
#       # (Kini et al., gamma 0.2, tau 1.2), ldam-drw-sam LDAM-DRW trained with
#       # SAM (Rangwani et al.; rho 0.05, Foret et al.'s default); --all-methods
#       # for all five (about 2.5 times the time of the default)
#
# Installs what it needs when missing (ONNX Runtime from PyPI, Fashion-MNIST from
# Debian's dataset-fashion-mnist), builds the tool, and writes runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

mlp_epochs=200
cnn_epochs=20
methods=erm,ldam-drw
while [ $# -gt 0 ]; do
    case "$1" in
        --full) cnn_epochs=200; shift ;;
        --epochs) mlp_epochs=${2:?--epochs needs a number}; cnn_epochs=$mlp_epochs; shift 2 ;;
        --methods) methods=${2:?--methods needs a list}; shift 2 ;;
        --all-methods) methods=erm,ldam-drw,la,vs,ldam-drw-sam; shift ;;
        *) echo "usage: bash examples/demo.sh [--full | --epochs N] [--methods LIST | --all-methods]" >&2; exit 2 ;;
    esac
done
sam_rho=0.05

bash .ci/deps.sh
cargo build --quiet --bin ldam-onnx
tool=target/debug/ldam-onnx
data=/usr/share/datasets/fashion-mnist
out=runs/demo
mkdir -p "$out"

# Fashion-MNIST-LT: 6000 * 100^(-i/9) training images of class i. `train`
# builds the same subset from --imbalance-ratio and checks it against these.
counts=6000,3596,2156,1292,774,464,278,166,100,60

for network in mlp cnn; do
    epochs_var=${network}_epochs
    epochs=${!epochs_var}
    # DRW (and the LR steps) at 80% of the run, as the reference's 160 of 200.
    drw_epoch=$((epochs * 4 / 5))
    for method in ${methods//,/ }; do
        sam=()
        case "$method" in
            erm) loss=(--loss ce --reweight none --head keep) ;;
            ldam-drw) loss=(--loss ldam --reweight drw --drw-epoch "$drw_epoch") ;;
            la) loss=(--loss la --la-tau 1 --reweight none --head keep) ;;
            vs) loss=(--loss vs --vs-gamma 0.2 --vs-tau 1.2 --reweight none --head keep) ;;
            ldam-drw-sam) loss=(--loss ldam --reweight drw --drw-epoch "$drw_epoch"); sam=(--sam "$sam_rho") ;;
            *) echo "unknown method '$method' (erm, ldam-drw, la, vs, ldam-drw-sam)" >&2; exit 2 ;;
        esac
        "$tool" patch "models/$network.onnx" --class-counts "$counts" \
            "${loss[@]}" -o "$out/$network.$method.onnx" --force
        echo "== $network, $method: $epochs epochs on Fashion-MNIST-LT (ratio 100)" >&2
        "$tool" train "$out/$network.$method.onnx" --train "$data" \
            --imbalance-ratio 100 --imbalance-profile exp "${sam[@]}" \
            --epochs "$epochs" --seed 0 --out "$out/$network-$method" --force
    done
done

# The deployable model, evaluated on its own, gives the reported accuracy.
last=${methods##*,}
"$tool" eval "$out/cnn-$last/model.onnx" --test "$data"

python3 - "$out" "$mlp_epochs" "$cnn_epochs" "$methods" <<'PY'
import json, sys
out, epochs = sys.argv[1], {"mlp": sys.argv[2], "cnn": sys.argv[3]}
methods = sys.argv[4].split(",")
labels = {"erm": "ERM", "ldam-drw": "LDAM-DRW", "la": "LA", "vs": "VS", "ldam-drw-sam": "LDAM-DRW+SAM"}
def cell(v):
    return "-" if v is None else f"{100 - v:.2f}"
print()
print("Fashion-MNIST-LT, ratio 100 (exp), seed 0: top-1 error (%) on the balanced test set,")
print("and the error of the many- (>100 images) / medium- (20-100) / few-shot (<20) classes")
print(f"{'network':<9} {'epochs':>6}  {'method':<12} {'top-1':>7} {'many':>7} {'medium':>7} {'few':>7}")
for network in ["mlp", "cnn"]:
    for method in methods:
        r = json.load(open(f"{out}/{network}-{method}/report.json"))
        g = r["groups"]
        print(f"{network:<9} {epochs[network]:>6}  {labels[method]:<12} {r['top1_error']:7.2f} "
              f"{cell(g['many']):>7} {cell(g['medium']):>7} {cell(g['few']):>7}")
print()
print(f"plots: {out}/*/curves.png, {out}/*/per_class.png; reports: {out}/*/report.json")
PY
