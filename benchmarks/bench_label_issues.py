"""How well ``is_label_issue`` finds the flipped labels, next to the training selection.

    python benchmarks/bench_label_issues.py                 # 10,000 images, about a minute
    python benchmarks/bench_label_issues.py --n-train 60000

Features: PCA (50 components, fitted on the images themselves) of the raw pixels of a
stratified Fashion-MNIST training subset; no model is trained, so the figures measure the
verdict and the selection on one fixed, modest embedding (a trained MOIT embedding separates
the classes better). Detection: ``validation.default_k`` neighbours, cosine kNN (torch),
the selection balanced to the median class (spec §3).

Settings: 20 % and 40 % symmetric noise, 40 % asymmetric noise (Fashion-MNIST's flip map, about
20 % of the labels flipped), and a class-imbalanced subset (T-shirt/top kept at 10 % of its
images, the other classes whole) with 20 % and 40 % symmetric noise. Each row: precision, recall
and F1 against the true flips of

- ``is_label_issue`` (label_issues.label_verdict: another class better supported by the
  neighbours than the given label, each class's vote relative to its share of the labels);
- "not selected for training" (``~clean``, what is_label_issue meant before issue 12);

and, on the imbalanced subset, the same for the samples GIVEN the small class, with the share
of its correctly labelled samples flagged.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.decomposition import PCA

from moit_explore.analysis import label_issues
from moit_explore.maths import detection, noise, validation
from moit_explore.training import datasets

SMALL_CLASS = 0  # T-shirt/top


def scores(flagged: np.ndarray, noisy: np.ndarray) -> tuple[float, float, float]:
    tp = int(np.count_nonzero(flagged & noisy))
    fp = int(np.count_nonzero(flagged & ~noisy))
    fn = int(np.count_nonzero(~flagged & noisy))
    return detection.prf(tp, fp, fn)


def fmt(v: float) -> str:
    return "  n/a" if v != v else f"{v:.3f}"


def evaluate(name: str, feats: np.ndarray, clean: np.ndarray, kind: str, rate: float,
             seed: int, small: int | None = None) -> list[str]:
    nz = noise.inject_noise(clean, kind, rate, 10, seed=seed, dataset="fashion-mnist")
    k = validation.default_k(nz.noisy)
    det = detection.detect_noise(feats, nz.noisy, 10, k=k, backend="torch")
    issue, _ = label_issues.label_verdict(det.first_pass_soft_labels, nz.noisy)
    rows = []
    for what, flagged in (("is_label_issue", issue), ("not selected for training", ~det.clean)):
        p, r, f = scores(flagged, nz.is_noisy)
        line = (f"| {name} | {kind} {rate:.0%} ({nz.actual_rate:.1%} flipped) | {k} | {what} | "
                f"{flagged.mean():.3f} | {fmt(p)} | {fmt(r)} | {fmt(f)} |")
        if small is not None:
            given_small = nz.noisy == small
            p, r, _ = scores(flagged[given_small], nz.is_noisy[given_small])
            right_small = given_small & ~nz.is_noisy
            line += (f" {fmt(p)} / {fmt(r)} / {flagged[right_small].mean():.3f} |")
        else:
            line += " |"
        rows.append(line)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--components", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1, help="noise seed")
    args = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    t0 = time.perf_counter()
    full = datasets.load_dataset("fashion-mnist", download=False)
    data = datasets.subset(full, n_train=args.n_train, n_test=0, seed=0)
    pixels = data.train_images.reshape(len(data.train_labels), -1).astype(np.float32) / 255.0
    feats = PCA(args.components, random_state=0).fit_transform(pixels).astype(np.float32)
    y = data.train_labels
    rng = np.random.default_rng(0)
    small_idx = np.flatnonzero(y == SMALL_CLASS)
    drop = rng.choice(small_idx, len(small_idx) - len(small_idx) // 10, replace=False)
    keep = np.setdiff1d(np.arange(len(y)), drop)
    print(f"Fashion-MNIST, {len(y)} training images (stratified subset), features: PCA "
          f"{args.components} of the pixels; imbalanced: class {SMALL_CLASS} "
          f"({full.classes[SMALL_CLASS]}) at {len(small_idx) // 10} of {len(small_idx)} images, "
          f"{len(keep)} in all; noise seed {args.seed}; {platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| data | noise | k | flagged by | flagged frac | precision | recall | F1 | "
          "small class: precision / recall / right labels flagged |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, rate in (("symmetric", 0.2), ("symmetric", 0.4), ("asymmetric", 0.4)):
        print("\n".join(evaluate("balanced", feats, y, kind, rate, args.seed)))
    for rate in (0.2, 0.4):
        print("\n".join(evaluate("imbalanced", feats[keep], y[keep], "symmetric", rate,
                                 args.seed, small=SMALL_CLASS)))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
