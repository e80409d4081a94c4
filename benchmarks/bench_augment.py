"""Time of the batched augmenters per batch, on CPU and on CUDA when available.

ComplexAugment (MOIT, spec §2) and SimpleAugment (MOIT+, spec §4) on uint8 batches of
B = 128 and 512 images of 1x28x28 (Fashion-MNIST) and 3x32x32 (CIFAR). Prints the median over
repeats in ms per batch and images per second.

    .venv/bin/python benchmarks/bench_augment.py [--device cpu|cuda|all] [--repeats 20]
                                                 [--threads N] [--batch-sizes 128 512]
"""

from __future__ import annotations

import argparse

import torch
from _timing import devices as pick_devices
from _timing import median_ms

from moit_explore.maths.augment import ComplexAugment, Normalize, SimpleAugment

SHAPES = ((1, 28, 28), (3, 32, 32))


def bench(device: torch.device, batch_sizes: list[int], repeats: int) -> list[dict]:
    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    for shape in SHAPES:
        c = shape[0]
        mean, std = (0.5,) * c, (0.25,) * c
        augs = {"complex": ComplexAugment(mean, std), "simple": SimpleAugment(mean, std),
                "none": Normalize(mean, std)}
        for B in batch_sizes:
            x = torch.randint(0, 256, (B, *shape), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(B)).to(device)
            for name, aug in augs.items():
                ms = median_ms(lambda aug=aug, x=x: aug(x, generator=g), device, repeats)
                rows.append({"device": str(device), "augment": name,
                             "shape": "x".join(map(str, shape)), "batch": B, "ms": ms,
                             "images_per_s": B / ms * 1e3})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = pick_devices(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"{'device':<7} {'augment':<8} {'shape':<8} {'batch':>5} {'ms/batch':>9} "
          f"{'images/s':>11}")
    for dev in devices:
        for r in bench(dev, args.batch_sizes, args.repeats):
            print(f"{r['device']:<7} {r['augment']:<8} {r['shape']:<8} {r['batch']:>5} "
                  f"{r['ms']:>9.2f} {r['images_per_s']:>11,.0f}")


if __name__ == "__main__":
    main()
