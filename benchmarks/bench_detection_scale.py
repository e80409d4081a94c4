"""Noise detection at scale: the approximate "faiss-ivf" backend against exact search.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_detection_scale.py --n 200000
    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_detection_scale.py --n 1000000

Data: N unit vectors, d = 128, around 500 random unit cluster centres (cluster j has class
j % 10; each point is its centre plus Gaussian noise of norm ~``--spread``, then normalised),
20 % of the labels flipped to another class at random (symmetric noise). k = 250. With the
default spread 1 the clusters are tight (a point's 250 neighbours lie in its cluster); spread 3
makes the neighbourhoods diffuse, the harder case for an inverted-file index.

Printed, per stage: wall time and the process's peak resident memory so far
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``; the stages run in order, so each figure is the
peak up to that stage):

1. faiss-ivf: index build (k-means on a sample + adding every vector) and the search of all N
   queries (``knn_search(backend="faiss-ivf")``), then the two passes
   (``detect_from_neighbors``);
2. neighbour recall@k of faiss-ivf against exact search on ``--queries`` random queries (exact
   search of those queries among all N: faiss IndexFlatIP), not all N;
3. detection F1 against the exact backend: the exact detection of all N
   (``detect_noise(backend="faiss")``), where it is affordable (``--full-exact``; default: N <=
   300,000; its cost grows as N^2 d). The noisy-flagged sets (not clean) of the two backends are
   compared: F1 of faiss-ivf's flags with exact's flags as the reference. Without it, only each
   backend's own F1 against the true noise is printed (faiss-ivf's).
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import faiss
import numpy as np

from moit_explore.maths import detection as det
from moit_explore.maths import neighbors
from moit_explore.maths.neighbors import IVF_NPROBE, ivf_settings, knn_search


def clustered(n: int, dim: int = 128, n_clusters: int = 500, num_classes: int = 10,
              rate: float = 0.2, spread: float = 1.0, seed: int = 0):
    """(features float32 (n, dim), given labels, is_noisy) of clustered synthetic data."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    cluster = rng.integers(0, n_clusters, n)
    true = cluster % num_classes
    x = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):  # in blocks: no float64 (n, dim) temporary
        hi = min(n, lo + 100_000)
        x[lo:hi] = centers[cluster[lo:hi]] + spread * rng.normal(
            size=(hi - lo, dim)).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    noisy = rng.random(n) < rate
    given = true.copy()
    given[noisy] = (true[noisy] + rng.integers(1, num_classes, noisy.sum())) % num_classes
    return x, given, noisy


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def flag_f1(flags: np.ndarray, reference: np.ndarray) -> float:
    tp = np.count_nonzero(flags & reference)
    return det.prf(tp, np.count_nonzero(flags) - tp, np.count_nonzero(reference) - tp)[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--k", type=int, default=250)
    p.add_argument("--queries", type=int, default=2000, help="queries of the recall estimate")
    p.add_argument("--nprobe", type=int, default=None, help=f"default {IVF_NPROBE}")
    p.add_argument("--spread", type=float, default=1.0, help="cluster noise (see above)")
    p.add_argument("--full-exact", choices=("auto", "yes", "no"), default="auto",
                   help="exact detection of all N for the F1 (auto: N <= 300,000)")
    a = p.parse_args()
    n, k, c = a.n, a.k, 10
    nlist, nprobe, n_train = ivf_settings(n)
    nprobe = a.nprobe or nprobe
    print(f"machine: {platform.machine()}, faiss {faiss.__version__}")
    print(f"N={n:,} d={a.d} k={k} spread={a.spread}; faiss-ivf: nlist={nlist}, nprobe={nprobe}, "
          f"k-means on {n_train:,} vectors")
    t = time.perf_counter()
    x, given, noisy = clustered(n, a.d, spread=a.spread)
    print(f"data: {time.perf_counter() - t:.1f} s, features {x.nbytes / 2**30:.2f} GiB, "
          f"peak RSS {peak_gib():.2f} GiB")

    t = time.perf_counter()
    nb = knn_search(x, k, backend="faiss-ivf", nprobe=nprobe)
    idx, sims = nb.indices, nb.similarities
    t_search = time.perf_counter() - t
    t = time.perf_counter()
    ivf = det.detect_from_neighbors(neighbors.Neighbors(idx, sims), given, c, k)
    t_passes = time.perf_counter() - t
    m = det.detection_metrics(ivf.clean, noisy)
    print(f"faiss-ivf: build + search {t_search:.1f} s, two passes {t_passes:.1f} s; "
          f"F1 vs true noise {m['f1']:.4f}; peak RSS {peak_gib():.2f} GiB")

    rng = np.random.default_rng(1)
    q = np.sort(rng.choice(n, min(a.queries, n), replace=False))
    t = time.perf_counter()
    exact = knn_search(x, k + 1, queries=x[q], backend="faiss").indices
    t_exact_q = time.perf_counter() - t
    recall = np.mean([np.intersect1d(row[row != i][:k], idx[i]).size / k
                      for i, row in zip(q, exact, strict=True)])
    print(f"recall@{k} vs exact on {len(q):,} random queries: {recall:.4f} "
          f"(exact search of those queries {t_exact_q:.1f} s)")

    full = a.full_exact == "yes" or (a.full_exact == "auto" and n <= 300_000)
    if not full:
        print("exact detection of all N: not run (cost ~N^2 d); F1 vs the exact backend not "
              "computed, see the recall above")
        return
    del idx, sims
    t = time.perf_counter()
    ex = det.detect_noise(x, given, c, k=k, backend="faiss", progress=True)
    t_full = time.perf_counter() - t
    me = det.detection_metrics(ex.clean, noisy)
    print(f"exact (faiss flat): search + two passes {t_full:.1f} s; F1 vs true noise "
          f"{me['f1']:.4f}; peak RSS {peak_gib():.2f} GiB")
    print(f"detection, faiss-ivf vs exact: flagged-noisy F1 {flag_f1(~ivf.clean, ~ex.clean):.4f}, "
          f"clean masks agree on {np.mean(ivf.clean == ex.clean):.4%} of samples; "
          f"speed-up {t_full / (t_search + t_passes):.1f}x")


if __name__ == "__main__":
    main()
