"""Time the label-noise detection (spec §3): full detect_noise per backend, and the k-slider path.

    python benchmarks/bench_detection.py                       # N = 10k, 50k (CPU), 200k on CUDA
    python benchmarks/bench_detection.py --sizes 10000 50000 200000 --max-cpu-size 0

Data: d=128 unit vectors around C random class centres, 20% of the labels flipped.
The k-slider figure is detect_from_neighbors at N=60,000, k<=250 on precomputed neighbours
(target: < 200 ms on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from moit_explore.maths.detection import (
    detect_from_neighbors,
    detect_noise,
    detection_metrics,
)
from moit_explore.maths.neighbors import Neighbors, faiss_available, knn_search


def clustered(n: int, num_classes: int, dim: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    true = rng.integers(0, num_classes, n)
    x = centers[true] + 1.2 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    given = true.copy()
    flip = rng.random(n) < 0.2
    given[flip] = (true[flip] + rng.integers(1, num_classes, flip.sum())) % num_classes
    return x.astype(np.float32), true, given


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_detect(args) -> None:
    devices = [("torch", "cpu"), ("faiss", "cpu"), ("torch", "cuda")]
    devices = [(b, d) for b, d in devices if f"{b}-{d}" in args.backends]
    if not torch.cuda.is_available():
        devices = [(b, d) for b, d in devices if d != "cuda"]
    print(
        f"detect_noise, k={args.k}, balance=median, d=128 "
        f"(torch threads: {torch.get_num_threads()})"
    )
    print(f"{'N':>8} {'C':>4} {'backend':>8} {'device':>6} {'seconds':>9}  f1   auroc")
    for n in args.sizes:
        for c in args.classes:
            x, true, given = clustered(n, c)
            for backend, device in devices:
                if backend == "faiss" and not faiss_available():
                    print(f"{n:>8} {c:>4} {backend:>8} {device:>6}  skipped (faiss not installed)")
                    continue
                if device == "cpu" and args.max_cpu_size and n > args.max_cpu_size:
                    print(
                        f"{n:>8} {c:>4} {backend:>8} {device:>6}  skipped (N > --max-cpu-size "
                        f"{args.max_cpu_size}; pass --max-cpu-size 0 to run it)"
                    )
                    continue
                feats = torch.from_numpy(x).cuda() if device == "cuda" else x
                if device == "cuda":  # warm-up: CUDA context and kernels
                    detect_noise(feats[:1000], given[:1000], c, k=min(args.k, 999))
                run = partial(detect_noise, feats, given, c, k=args.k, backend=backend)
                sec, det = timed(run)
                m = detection_metrics(det.clean, given != true, det.discrepancy)
                print(
                    f"{n:>8} {c:>4} {backend:>8} {device:>6} {sec:>9.2f}  "
                    f"{m['f1']:.3f} {m['auroc']:.3f}",
                    flush=True,
                )


def bench_slider(args) -> None:
    n, c = args.slider_n, 10
    x, _, given = clustered(n, c, seed=1)
    if args.slider_random:
        rng = np.random.default_rng(0)
        idx = rng.integers(0, n, (n, args.k))
        nb_kind = "random neighbour lists"
        nb = Neighbors(idx, np.ones((n, args.k), dtype=np.float32))
    else:
        t, nb = timed(lambda: knn_search(x, args.k))
        nb_kind = f"one knn_search(k={args.k}, backend=auto) took {t:.1f} s"
    print(f"\ndetect_from_neighbors (k-slider path), N={n}, C={c}; {nb_kind}")
    for k in sorted({10, 50, 100, args.k}):
        if k > args.k:
            continue
        sec, _ = timed(lambda kk=k: detect_from_neighbors(nb, given, c, k=kk), repeat=5)
        print(f"  k={k:>4}: {sec * 1e3:7.1f} ms (best of 5)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    p.add_argument("--k", type=int, default=250)
    p.add_argument(
        "--backends",
        nargs="+",
        default=["torch-cpu", "faiss-cpu", "torch-cuda"],
        choices=["torch-cpu", "faiss-cpu", "torch-cuda"],
        help="torch-cuda runs only when a GPU is present",
    )
    p.add_argument(
        "--max-cpu-size",
        type=int,
        default=60_000,
        help="skip CPU runs above this N (0: no limit); 200k on CPU takes minutes",
    )
    p.add_argument("--slider-n", type=int, default=60_000)
    p.add_argument(
        "--slider-random",
        action="store_true",
        help="time the slider on random neighbour lists instead of a real search",
    )
    p.add_argument("--skip-detect", action="store_true")
    p.add_argument("--skip-slider", action="store_true")
    args = p.parse_args()
    if not args.skip_detect:
        bench_detect(args)
    if not args.skip_slider:
        bench_slider(args)


if __name__ == "__main__":
    main()
