"""Synthetic image folders and torchvision's decode + augment throughput on them.

    python3 benches/images_torchvision.py generate ROOT [--jpegs 2000] [--pngs 10000] [--many 100000]
    python3 benches/images_torchvision.py measure DIR --size 224|32 [--repeat 1] [--workers 2] [--batch 128]

`generate` writes, once, in torchvision's ImageFolder layout (10 classes):
  ROOT/jpeg/<class>/*.jpg     photo-like JPEGs (quality 90) of 200-400 px a side
  ROOT/png32/<class>/*.png    32x32 RGB PNGs
  ROOT/png32-many/<class>/*.png  `--many` 32x32 PNGs, hard links to 500 distinct
                              files (for the memory measurement: file count only)

`measure` times `ImageFolder` + `DataLoader(num_workers, batch_size, shuffle)`
with the training transforms the trainer applies to such a folder:
  size > 32: RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))
             + RandomHorizontalFlip + ToTensor + Normalize(ImageNet)
  size 32:   RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor
             + Normalize(ImageNet)
and prints per repetition (one epoch each, DataLoader start included)
`result torchvision SIZE IMAGES SECONDS IMG_PER_S`.
"""

import argparse
import os
import random
import sys
import time

CLASSES = 10


def smooth_image(rng, width, height):
    """A photo-like RGB image: a coarse random grid upsampled, plus mild noise."""
    from PIL import Image, ImageFilter

    grid = Image.frombytes(
        "RGB", (8, 8), bytes(rng.randrange(256) for _ in range(8 * 8 * 3))
    )
    image = grid.resize((width, height), Image.BICUBIC)
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(image, noise, 0.15)
    return image.filter(ImageFilter.DETAIL)


def generate(root, jpegs, pngs, many):
    rng = random.Random(0)
    jpeg_dir = os.path.join(root, "jpeg")
    if not os.path.isdir(jpeg_dir):
        tmp = jpeg_dir + ".tmp"
        for i in range(jpegs):
            folder = os.path.join(tmp, f"class{i % CLASSES}")
            os.makedirs(folder, exist_ok=True)
            w, h = rng.randint(200, 400), rng.randint(200, 400)
            smooth_image(rng, w, h).save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)
        os.rename(tmp, jpeg_dir)
    png_dir = os.path.join(root, "png32")
    if not os.path.isdir(png_dir):
        tmp = png_dir + ".tmp"
        for i in range(pngs):
            folder = os.path.join(tmp, f"class{i % CLASSES}")
            os.makedirs(folder, exist_ok=True)
            smooth_image(rng, 32, 32).save(os.path.join(folder, f"{i:06d}.png"))
        os.rename(tmp, png_dir)
    many_dir = os.path.join(root, "png32-many")
    if many and not os.path.isdir(many_dir):
        tmp = many_dir + ".tmp"
        sources = sorted(
            os.path.join(png_dir, c, f)
            for c in os.listdir(png_dir)
            for f in os.listdir(os.path.join(png_dir, c))
        )[:500]
        for c in range(CLASSES):
            os.makedirs(os.path.join(tmp, f"class{c}"), exist_ok=True)
        for i in range(many):
            target = os.path.join(tmp, f"class{i % CLASSES}", f"{i:06d}.png")
            os.link(sources[i % len(sources)], target)
        os.rename(tmp, many_dir)


def measure(data, size, repeat, workers, batch):
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.set_num_threads(1)
    normalize = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if size > 32:
        augment = [
            transforms.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
            transforms.RandomHorizontalFlip(),
        ]
    else:
        augment = [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()]
    transform = transforms.Compose(augment + [transforms.ToTensor(), normalize])
    dataset = datasets.ImageFolder(data, transform=transform)
    for _ in range(repeat):
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)
        started = time.perf_counter()
        seen = 0
        for images, labels in loader:
            seen += labels.shape[0]
        seconds = time.perf_counter() - started
        print(f"result torchvision {size} {seen} {seconds:.3f} {seen / seconds:.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("root")
    g.add_argument("--jpegs", type=int, default=2000)
    g.add_argument("--pngs", type=int, default=10000)
    g.add_argument("--many", type=int, default=100000)
    m = sub.add_parser("measure")
    m.add_argument("data")
    m.add_argument("--size", type=int, required=True)
    m.add_argument("--repeat", type=int, default=1)
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.root, args.jpegs, args.pngs, args.many)
    else:
        measure(args.data, args.size, args.repeat, args.workers, args.batch)


if __name__ == "__main__":
    sys.exit(main())
