#!/usr/bin/env python3
"""PyTorch eager reference for `benches/speed.sh`, and the table it prints.

    python3 benches/speed_pytorch.py measure --model resnet32|resnetD|cnn [--batch 128] [--steps 10] [--threads 2]
    python3 benches/speed_pytorch.py export --model resnetD --out FILE.onnx
    python3 benches/speed_pytorch.py table RESULTS_FILE

`measure` trains the network of models/resnet32.onnx or models/cnn.onnx, written
here in PyTorch, with the recipe the patched graph computes: cosine head
(NormedLinear: normalize(features) @ normalize(weight), no bias), LDAM loss
(max_m 0.5, s 30, DRW weights off at epoch 0), SGD momentum 0.9, weight decay
2e-4, on one fixed random batch (no data loading). It prints one line
`result pytorch MODEL BATCH IMG_PER_S` for the timed steps after two warm-up steps.

`export` writes a CIFAR ResNet of another depth D = 6n + 2 (resnet20, resnet56,
...) as models/export.py writes resnet32.onnx (TorchScript exporter, opset 17,
training mode, symbolic batch; needs the onnx package), for the depth figures.

`table` reads the `result IMPL MODEL BATCH IMG_PER_S` lines of every run and
prints a Markdown table of min and median img/s per implementation and their
ratios to PyTorch (min to min, median to median), with the peak resident memory
of the measuring process (`rss IMPL MODEL BATCH KB` lines, the largest seen).
"""
import argparse, math, statistics, sys, time

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def build(model, head='cosine'):
    import torch, torch.nn as nn, torch.nn.functional as F

    class NormedLinear(nn.Module):
        def __init__(self, fin, fout):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(fout, fin).uniform_(-1, 1))

        def forward(self, x):
            return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    class Shortcut(nn.Module):  # option A: subsample, zero-pad the channels
        def __init__(self, planes):
            super().__init__()
            self.pad = planes // 4

        def forward(self, x):
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    class Block(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = Shortcut(planes) if stride != 1 or cin != planes else nn.Identity()

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet(nn.Module):  # kaidic/LDAM-DRW resnet_cifar.resnet32(use_norm=True) at depth 6n + 2
        def __init__(self, blocks, head):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            layers, cin = [], 16
            for planes, stride in [(16, 1), (32, 2), (64, 2)]:
                for i in range(blocks):
                    layers.append(Block(cin, planes, stride if i == 0 else 1))
                    cin = planes
            self.layers = nn.Sequential(*layers)
            self.linear = NormedLinear(64, 10) if head == 'cosine' else nn.Linear(64, 10)

        def forward(self, x):
            out = self.layers(F.relu(self.bn1(self.conv1(x))))
            out = F.avg_pool2d(out, out.size(3)).flatten(1)
            return self.linear(out)

    torch.manual_seed(0)
    if model.startswith('resnet'):
        depth = int(model[len('resnet'):])
        if depth < 8 or (depth - 2) % 6:
            raise SystemExit(f"{model}: a CIFAR ResNet's depth is 6n + 2")
        return ResNet((depth - 2) // 6, head), (3, 32, 32)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), NormedLinear(32 * 7 * 7, 10))
    return net, (1, 28, 28)


def measure(args):
    import torch, torch.nn.functional as F
    torch.set_num_threads(args.threads)
    net, shape = build(args.model)
    net.train()
    m = [1.0 / c ** 0.25 for c in COUNTS]
    margins = torch.tensor([v * 0.5 / max(m) for v in m])
    g = torch.Generator().manual_seed(7)
    x = torch.rand((args.batch,) + shape, generator=g) * 2 - 1
    y = torch.randint(0, 10, (args.batch,), generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)

    def step():
        logits = net(x)
        onehot = F.one_hot(y, 10).to(logits.dtype)
        scores = 30.0 * (logits - onehot * margins)
        loss = F.cross_entropy(scores, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - started
    print(f"result pytorch {args.model} {args.batch} {args.batch * args.steps / seconds:.1f}", flush=True)


def export(args):
    import torch
    net, shape = build(args.model, head='linear')  # as exported; the patch adds the cosine head
    net.train()
    x = torch.randn((2,) + shape)
    torch.onnx.export(net, (x,), args.out, dynamo=False, export_params=True, opset_version=17,
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                      input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'N'}, 'logits': {0: 'N'}})


def table(args):
    rates, rss = {}, {}
    order = ['pytorch', 'torch-backend', 'tch-direct', 'compiled']
    with open(args.results) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 5 and parts[0] == 'rss' and parts[4].isdigit():
                key = (parts[1], parts[2], int(parts[3]))
                rss[key] = max(rss.get(key, 0), int(parts[4]))
            if len(parts) != 5 or parts[0] != 'result':
                continue
            key = (parts[2], int(parts[3]))
            rates.setdefault(key, {}).setdefault(parts[1], []).append(float(parts[4]))

    names = {
        'pytorch': 'PyTorch 2.13 eager (Python)',
        'torch-backend': '`--backend torch` (interpreter)',
        'tch-direct': 'same ops as direct tch calls',
        'compiled': 'compiled step, ONNX Runtime',
    }
    print('| network | batch | implementation | runs | min img/s | median img/s | min / PyTorch min | median / PyTorch median | peak RSS of the process |')
    print('|---|---|---|---|---|---|---|---|---|')
    for (model, batch), by_impl in sorted(rates.items()):
        base = by_impl.get('pytorch')
        for impl in order:
            if impl not in by_impl:
                continue
            v = by_impl[impl]
            lo, med = min(v), statistics.median(v)
            if base:
                ratio = f"{lo / min(base):.2f}x | {med / statistics.median(base):.2f}x"
            else:
                ratio = "- | -"
            kb = rss.get((impl, model, batch))
            memory = f"{kb / 1024:,.0f} MiB" if kb else "-"
            print(f"| {model} | {batch} | {names.get(impl, impl)} | {len(v)} | {lo:,.0f} | {med:,.0f} | {ratio} | {memory} |")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest='cmd', required=True)
    m = sub.add_parser('measure')
    m.add_argument('--model', required=True, help='resnet32, resnetD (D = 6n + 2) or cnn')
    m.add_argument('--batch', type=int, default=128)
    m.add_argument('--steps', type=int, default=10)
    m.add_argument('--threads', type=int, default=2)
    e = sub.add_parser('export')
    e.add_argument('--model', required=True)
    e.add_argument('--out', required=True)
    t = sub.add_parser('table')
    t.add_argument('results')
    args = p.parse_args()
    {'measure': measure, 'export': export, 'table': table}[args.cmd](args)


if __name__ == '__main__':
    sys.exit(main())
