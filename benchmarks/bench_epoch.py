"""Epoch time of a MOIT epoch: the "gpu" pipeline vs the "reference" pipeline, side by side.

    python benchmarks/bench_epoch.py                          # 50,000 x 32x32x3, preact_resnet18
    python benchmarks/bench_epoch.py --device cpu --n 1024 --arch small_cnn --width 16

Data: random uint8 images of CIFAR's shape with random labels (speed does not depend on the
content). Each pipeline trains ``--epochs`` epochs of the full MOIT step (two complex views,
interpolation, memory, the semi-supervised term with the non-augmented pass) followed by the
per-epoch embedding of the training set and the kNN detection; the LAST epoch is reported
(the first one includes warm-up).

- gpu: uint8 tensors on the device, batched augmentation there, bf16 autocast on CUDA,
  channels_last (the trainer's default);
- reference: torchvision transforms on PIL images in DataLoader workers, fp32 (the usual way).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from moit_explore.maths import noise
from moit_explore.training import config, datasets, presets, runs, train


def random_data(n: int, size: int, channels: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n).astype(np.int64)
    test = rng.integers(0, 256, (min(n, 1000), size, size, channels), dtype=np.uint8)
    test_labels = rng.integers(0, num_classes, len(test)).astype(np.int64)
    mean, std = datasets.channel_stats(images)
    bundle = datasets.DatasetBundle("random", images, labels, test, test_labels,
                                    [str(c) for c in range(num_classes)], mean, std)
    return bundle, noise.inject_noise(labels, "symmetric", 0.4, num_classes, seed=42)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--n", type=int, default=50_000, help="training images")
    for flag, default in (("--size", 32), ("--channels", 3), ("--classes", 10), ("--width", 64),
                          ("--batch-size", 128)):
        ap.add_argument(flag, type=int, default=default)
    ap.add_argument("--arch", default="preact_resnet18", choices=config.ARCH_CHOICES)
    for flag, default in (("--device", "auto"), ("--pipelines", "gpu,reference")):
        ap.add_argument(flag, default=default)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per pipeline (last reported)")
    ap.add_argument("--workers", type=int, default=None,
                    help="reference DataLoader workers (default: CPU count)")
    ap.add_argument("--compile", action="store_true", help="torch.compile (gpu pipeline)")
    args = ap.parse_args()

    import os

    device = train.resolve_device(args.device)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    bundle, noisy = random_data(args.n, args.size, args.channels, args.classes)
    k = min(250, max(1, args.n // 20))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"MOIT epoch on {device} ({name}, "
          f"{torch.get_num_threads()} threads): n={args.n} x {args.size}x{args.size}x"
          f"{args.channels}, {args.arch} width {args.width}, batch {args.batch_size}, k={k}, "
          f"{args.epochs} epochs per pipeline, last one reported")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pipe in args.pipelines.split(","):
            cfg = presets.preset(
                None, method="moit", dataset="digits", arch=args.arch, width=args.width,
                epochs=args.epochs, batch_size=args.batch_size, lr_milestones=(),
                xbm_begin=0, correction_start=1, k=k, device=str(device), pipeline=pipe,
                workers=workers, amp="auto", channels_last=True,
                compile=args.compile and pipe == "gpu", runs_root=tmp, name=pipe,
                progress=False, eval_batch_size=1024,
            )
            t0 = time.perf_counter()
            run_dir = train.train(cfg, data=(bundle, noisy))
            wall = time.perf_counter() - t0
            last = runs.load_run(run_dir).metrics.iloc[-1]
            rows.append((pipe, cfg.amp_dtype(device.type), last, wall))
    print("\n| pipeline | amp | train s | images/s | embed+test s | detect s | epoch s |")
    print("|---|---|---|---|---|---|---|")
    for pipe, amp, last, _ in rows:
        print(f"| {pipe} | {amp} | {last['time_s']:.2f} | {last['images_per_s']:.0f} | "
              f"{last['eval_time_s']:.2f} | {last['detect_time_s']:.2f} | "
              f"{last['epoch_time_s']:.2f} |")
    if len(rows) == 2:
        a, b = rows[0][2], rows[1][2]
        print(f"\n{rows[0][0]} vs {rows[1][0]}: {b['epoch_time_s'] / a['epoch_time_s']:.2f}x "
              f"faster per epoch ({b['time_s'] / a['time_s']:.2f}x in the training pass)")


if __name__ == "__main__":
    main()
