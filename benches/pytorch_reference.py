#!/usr/bin/env python3
"""The LDAM-DRW recipe (kaidic/LDAM-DRW's CIFAR recipe) written directly in PyTorch,
on Fashion-MNIST-LT: an independent reference for `examples/demo.sh`'s table.

Needs a Python with torch and numpy, and Fashion-MNIST in /usr/share/datasets
(`bash .ci/deps.sh`). One run prints per-epoch lines and a JSON summary (also
appended to --out):

    python3 benches/pytorch_reference.py --model mlp --method erm      --epochs 20 --steps 16,18 --drw 16
    python3 benches/pytorch_reference.py --model mlp --method ldam-drw --epochs 20 --steps 16,18 --drw 16
    python3 benches/pytorch_reference.py --model mlp --method la       --epochs 20 --steps 16,18
    python3 benches/pytorch_reference.py --model mlp --method ldam-drw --epochs 20 --steps 16,18 --drw 16 --sam 0.05

`--method la` is logit-adjusted cross-entropy CE(z + tau log pi, y) (Menon et al.),
`vs` the VS loss CE(Delta z + tau log pi, y), Delta_j = (n_j/n_max)^gamma (Kini et
al.); `--sam RHO` trains with SAM as Rangwani et al. apply it: e = RHO g/(||g|| +
1e-12) from the gradient without weight decay, the gradient at w + e with the
BatchNorm running statistics kept from the first pass, then SGD of w.

The long-tailed subset is drawn with numpy's generator, so it holds other
examples than the tool's (same counts); the cosine head is the reference's
NormedLinear with its own initialisation.
"""
import argparse, gzip, json, math, time
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F

D = '/usr/share/datasets/fashion-mnist/'
MEAN, STD = 0.2860406, 0.35302424


def idx(path):
    with gzip.open(path, 'rb') as f:
        b = f.read()
    magic = int.from_bytes(b[0:4], 'big')
    nd = magic & 0xff
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], 'big') for i in range(nd)]
    return np.frombuffer(b, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def counts_for(profile, ratio, nmax=6000, C=10):
    if profile == 'exp':
        return [int(math.floor(nmax * ratio ** (-i / (C - 1)))) for i in range(C)]
    return [nmax if i < C // 2 else int(math.floor(nmax / ratio)) for i in range(C)]


def lt_subset(y, counts, seed):
    rs = np.random.RandomState(seed)
    keep = []
    for c, n in enumerate(counts):
        ix = np.nonzero(y == c)[0]
        keep.append(ix[rs.permutation(len(ix))[:n]])
    return np.sort(np.concatenate(keep))


class NormedLinear(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.Tensor(i, o))
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x):
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


def build(model, normed):
    torch.manual_seed(0)
    if model == 'cnn':
        m = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
        fin = 32 * 7 * 7
    else:
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10))
        fin = 64
    if normed:
        m[-1] = NormedLinear(fin, 10)
    return m


def augment(x, g):
    # x: [B,1,28,28] in [0,1]; RandomCrop(28, padding=4) (zero pad) + RandomHorizontalFlip
    B = x.shape[0]
    xp = F.pad(x, (4, 4, 4, 4))
    ox = torch.randint(0, 9, (B,), generator=g)
    oy = torch.randint(0, 9, (B,), generator=g)
    ar = torch.arange(28)
    rows = (oy[:, None] + ar[None, :])  # B,28
    cols = (ox[:, None] + ar[None, :])
    flip = torch.rand(B, generator=g) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(B)[:, None, None]
    out = xp[bi, 0, rows[:, :, None], cols[:, None, :]]
    return out[:, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--method', default='erm', choices=['erm', 'ldam-drw', 'ldam', 'erm-drw', 'la', 'vs'])
    ap.add_argument('--model', default='cnn', choices=['cnn', 'mlp'])
    ap.add_argument('--profile', default='exp')
    ap.add_argument('--ratio', type=float, default=100)
    ap.add_argument('--epochs', type=int, default=20)
    ap.add_argument('--steps', default='16,18')
    ap.add_argument('--drw', type=int, default=16)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--lr', type=float, default=0.1)
    ap.add_argument('--wd', type=float, default=2e-4)
    ap.add_argument('--bs', type=int, default=128)
    ap.add_argument('--max-m', type=float, default=0.5)
    ap.add_argument('--s', type=float, default=30)
    ap.add_argument('--beta', type=float, default=0.9999)
    ap.add_argument('--la-tau', type=float, default=1.0)
    ap.add_argument('--vs-gamma', type=float, default=0.2)
    ap.add_argument('--vs-tau', type=float, default=1.2)
    ap.add_argument('--sam', type=float, default=0.0, help='SAM radius rho (0: plain SGD)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--no-aug', action='store_true')
    ap.add_argument('--eval-every', type=int, default=0)
    ap.add_argument('--out', default='pytorch_reference.jsonl')
    ap.add_argument('--tag', default='')
    ap.add_argument('--perm', default='')
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    xtr = idx(D + 'train-images-idx3-ubyte.gz'); ytr = idx(D + 'train-labels-idx1-ubyte.gz').astype(np.int64)
    xte = idx(D + 't10k-images-idx3-ubyte.gz'); yte = idx(D + 't10k-labels-idx1-ubyte.gz').astype(np.int64)
    counts = counts_for(a.profile, a.ratio)
    if a.perm:  # rank i of the profile goes to original class perm[i]
        p = [int(v) for v in a.perm.split(',')]
        c2 = [0] * 10
        for i, c in enumerate(p):
            c2[c] = counts[i]
        counts = c2
    keep = lt_subset(ytr, counts, a.seed)
    Xtr = torch.from_numpy(xtr[keep].astype(np.float32) / 255.)[:, None]
    Ytr = torch.from_numpy(ytr[keep])
    Xte = ((torch.from_numpy(xte.astype(np.float32) / 255.)[:, None]) - MEAN) / STD
    Yte = torch.from_numpy(yte)
    assert np.bincount(Ytr.numpy(), minlength=10).tolist() == counts
    N = len(Ytr)

    ldam = a.method.startswith('ldam')
    model = build(a.model, ldam)
    opt = torch.optim.SGD(model.parameters(), a.lr, momentum=0.9, weight_decay=a.wd)
    cls = torch.tensor(counts, dtype=torch.float64)
    m_list = 1.0 / cls.sqrt().sqrt()
    m_list = (m_list * (a.max_m / m_list.max())).float()
    log_pi = torch.log(cls / cls.sum()).float()
    vs_delta = ((cls / cls.max()) ** a.vs_gamma).float()
    steps = [int(s) for s in a.steps.split(',')]
    g = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)

    def lr_at(epoch):
        e = epoch + 1
        if e <= a.warmup:
            return a.lr * e / a.warmup
        if e > steps[1]:
            return a.lr * 0.0001
        if e > steps[0]:
            return a.lr * 0.01
        return a.lr

    def weights_at(epoch):
        beta = a.beta if (a.method in ('ldam-drw', 'erm-drw') and epoch >= a.drw) else 0.0
        eff = 1.0 - np.power(beta, np.array(counts, dtype=np.float64))
        w = (1.0 - beta) / eff
        w = w / w.sum() * 10
        return torch.tensor(w, dtype=torch.float32)

    def evaluate():
        model.eval()
        preds = []
        with torch.no_grad():
            for i in range(0, len(Yte), 1000):
                preds.append(model(Xte[i:i + 1000]).argmax(1))
        model.train()
        p = torch.cat(preds)
        err = 100.0 * (p != Yte).float().mean().item()
        pc = [100.0 * ((p == c) & (Yte == c)).sum().item() / (Yte == c).sum().item() for c in range(10)]
        return err, pc

    hist = []
    t_train = 0.0
    for epoch in range(a.epochs):
        lr = lr_at(epoch)
        for gr in opt.param_groups:
            gr['lr'] = lr
        w = weights_at(epoch)
        t0 = time.time()
        perm = torch.randperm(N, generator=g)
        tot = 0.0
        for i in range(0, N, a.bs):
            b = perm[i:i + a.bs]
            x = Xtr[b]
            if not a.no_aug:
                x = augment(x, g)
            x = (x - MEAN) / STD
            y = Ytr[b]
            def loss_of(out):
                if ldam:
                    onehot = F.one_hot(y, 10).float()
                    out = a.s * (out - onehot * m_list[None, :])
                elif a.method == 'la':
                    out = out + a.la_tau * log_pi[None, :]
                elif a.method == 'vs':
                    out = vs_delta[None, :] * out + a.vs_tau * log_pi[None, :]
                return F.cross_entropy(out, y, weight=w)
            loss = loss_of(model(x))
            opt.zero_grad()
            loss.backward()
            if a.sam:
                params = [p for p in model.parameters() if p.grad is not None]
                norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
                scale = a.sam / (norm + 1e-12)
                old = [p.detach().clone() for p in params]
                running = {k: v.clone() for k, v in model.state_dict().items()
                           if 'running_' in k or 'num_batches_tracked' in k}
                with torch.no_grad():
                    for p in params:
                        p.add_(p.grad * scale)
                opt.zero_grad()
                loss_of(model(x)).backward()
                model.load_state_dict(running, strict=False)
                with torch.no_grad():
                    for p, o in zip(params, old):
                        p.copy_(o)
            opt.step()
            tot += loss.item() * len(b)
        t_train += time.time() - t0
        if a.eval_every and ((epoch + 1) % a.eval_every == 0) or epoch + 1 == a.epochs:
            err, pc = evaluate()
            hist.append((epoch + 1, round(err, 2)))
            print(f'epoch {epoch+1} lr {lr:.5f} loss {tot/N:.4f} err {err:.2f}', flush=True)
    err, pc = evaluate()
    many = [c for c in range(10) if counts[c] > 100]
    med = [c for c in range(10) if 20 <= counts[c] <= 100]
    few = [c for c in range(10) if counts[c] < 20]
    grp = lambda cs: round(float(np.mean([pc[c] for c in cs])), 2) if cs else None
    res = dict(tag=a.tag, method=a.method, sam=a.sam, model=a.model, profile=a.profile, ratio=a.ratio, perm=a.perm, counts=counts,
               epochs=a.epochs, steps=steps, drw=a.drw, max_m=a.max_m, s=a.s, seed=a.seed, aug=not a.no_aug,
               err=round(err, 2), per_class=[round(v, 1) for v in pc], many=grp(many), medium=grp(med),
               few=grp(few), sec_per_epoch=round(t_train / a.epochs, 2), hist=hist)
    print(json.dumps(res), flush=True)
    with open(a.out, 'a') as f:
        f.write(json.dumps(res) + '\n')


if __name__ == '__main__':
    main()
