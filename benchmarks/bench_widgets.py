"""Time one KSliderPanel.update(k) (a k-slider move) at N = 60,000, k_max = 250.

Target: under 200 ms per change. The features are random clustered points (10 classes, 32-D,
40 % symmetric label noise); the neighbour search runs once, outside the timed part.

    .venv/bin/python benchmarks/bench_widgets.py [--n 60000] [--k-max 250] [--repeats 3]

Prints the median time per update for several k: the panel's computation alone (what the
tests call), detection.detect_from_neighbors alone with torch's default threads and with one
thread, and the update with the ipywidgets UI built (adds the HTML text and the PNG histogram).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from moit_explore.course.widgets import KSliderPanel
from moit_explore.maths import detection, neighbors


def clustered(n: int, num_classes: int, dim: int, rate: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, num_classes, n)
    centers = rng.normal(size=(num_classes, dim)) * 2.0
    feats = (centers[true] + rng.normal(size=(n, dim))).astype(np.float32)
    given = true.copy()
    flip = rng.random(n) < rate
    given[flip] = (true[flip] + rng.integers(1, num_classes, flip.sum())) % num_classes
    return feats, given, given != true


def median_ms(fn, ks: list[int], repeats: int) -> dict[int, float]:
    out = {}
    for k in ks:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(k)
            times.append(time.perf_counter() - t0)
        out[k] = 1000 * statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--k-max", type=int, default=250)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load {os.getloadavg()[0]:.2f}")
    feats, given, is_noisy = clustered(args.n, args.classes, 32, 0.4)
    t0 = time.perf_counter()
    nb = neighbors.knn_search(feats, args.k_max)
    print(f"knn_search N={args.n:,} k_max={args.k_max}: {time.perf_counter() - t0:.1f} s "
          "(once, not part of a slider move)")

    ks = sorted({1, 10, 50, 100, 150, 200, args.k_max} & set(range(1, args.k_max + 1)))
    c = args.classes

    panel = KSliderPanel(nb, given, c, is_noisy=is_noisy, k=args.k_max)
    rows = {"KSliderPanel.update (torch 1 thread, default)": median_ms(panel.update, ks,
                                                                       args.repeats)}
    default_threads = torch.get_num_threads()
    rows[f"detect_from_neighbors, torch {default_threads} threads"] = median_ms(
        lambda k: detection.detect_from_neighbors(nb, given, c, k=k), ks, args.repeats)
    torch.set_num_threads(1)
    rows["detect_from_neighbors, torch 1 thread"] = median_ms(
        lambda k: detection.detect_from_neighbors(nb, given, c, k=k), ks, args.repeats)
    torch.set_num_threads(default_threads)
    panel_default = KSliderPanel(nb, given, c, is_noisy=is_noisy, k=args.k_max,
                                 torch_threads=None)
    rows[f"KSliderPanel.update (torch {default_threads} threads)"] = median_ms(
        panel_default.update, ks, args.repeats)
    try:
        panel.widget()
        rows["KSliderPanel.update with UI (HTML + PNG)"] = median_ms(panel.update, ks,
                                                                     args.repeats)
    except ImportError as err:
        print(f"(UI timing skipped: {err})")

    print(f"\nmedian ms per call over {args.repeats} repeats, N={args.n:,}, "
          f"k_max={args.k_max}, target < 200 ms")
    width = max(len(name) for name in rows)
    print(" " * width + "".join(f"{'k=' + str(k):>9}" for k in ks))
    for name, times in rows.items():
        print(f"{name:<{width}}" + "".join(f"{times[k]:9.1f}" for k in ks))
    worst = max(rows["KSliderPanel.update (torch 1 thread, default)"].values())
    print(f"\nworst panel update: {worst:.0f} ms -> "
          f"{'within' if worst < 200 else 'OVER'} the 200 ms target")


if __name__ == "__main__":
    main()
