"""Review and fix: test accuracy regained per 100 images reviewed, for CE and MOIT.

    python benchmarks/bench_review.py                       # digits, 3 seeds, minutes
    python benchmarks/bench_review.py --reviewed 0 100 200 400 --seeds 1 2 3

For each noise seed: MOIT trains on the noisy labels (the "digits" preset: the scikit-learn
digits, 1,437 training images, 40 % symmetric noise); its final embedding gives the label
issues (``label_issues.examine_run``); a simulated reviewer goes through the top N issues worst
first and gives each its TRUE label (a reviewer who never errs: an upper bound on what a review
regains); the corrected labels are exported (``Review.export_labels``) and CE and MOIT train
again on them with ``noise_file`` (``train --noise-file``). Per method and N: test accuracy at
the last epoch, the share of wrong labels left, and the accuracy regained per 100 images
reviewed against N = 0 (the noisy labels); mean and standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from moit_explore.analysis import label_issues, review
from moit_explore.training import presets, runs, train

METHODS = ("ce", "moit")


def last_test_acc(path: Path) -> float:
    return float(runs.load_run(path).metrics["test_acc"].iloc[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="noise seeds")
    ap.add_argument("--reviewed", type=int, nargs="+", default=[0, 100, 200, 400])
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-review-"))
    acc: dict[tuple[str, int], list[float]] = {}
    wrong: dict[int, list[float]] = {}
    for seed in args.seeds:
        base = presets.preset(args.preset, noise="symmetric", rate=args.rate, noise_seed=seed,
                              runs_root=str(root))
        moit_dir = train.train(base.replace(method="moit", name=f"moit-s{seed}"), progress=False)
        issues, run = label_issues.examine_run(moit_dir)
        final = run.final()
        true = final["labels_true"]
        full, positions = review.run_label_positions(run)
        for n in args.reviewed:
            if n == 0:
                dirs = {"moit": moit_dir,
                        "ce": train.train(base.replace(method="ce", name=f"ce-s{seed}"),
                                          progress=False)}
                labels = issues.labels
            else:
                with review.Review(issues, root / f"log-s{seed}-n{n}.jsonl") as rev:
                    for i in rev.pending()[:n]:
                        rev.decide(int(i), int(true[i]))  # the reviewer knows the truth
                    labels = rev.corrected_labels()
                    label_file = rev.export_labels(root / f"labels-s{seed}-n{n}.npy",
                                                   full_labels=full, positions=positions)
                dirs = {m: train.train(base.replace(method=m, noise_file=str(label_file),
                                                    name=f"{m}-s{seed}-n{n}"), progress=False)
                        for m in METHODS}
            wrong.setdefault(n, []).append(float(np.mean(labels != true)))
            for m in METHODS:
                acc.setdefault((m, n), []).append(last_test_acc(dirs[m]))
            print(f"  seed {seed}, {n} reviewed: wrong labels {wrong[n][-1]:.3f}, CE "
                  f"{acc['ce', n][-1]:.4f}, MOIT {acc['moit', n][-1]:.4f}", flush=True)
    print(f"\n{args.preset}, {args.rate:.0%} symmetric noise, noise seeds {args.seeds}; the "
          f"review queue: label issues of MOIT's final embedding; {platform.machine()}, torch "
          f"{torch.__version__}, 1 thread\n")
    print("| reviewed | wrong labels left | method | test acc (last epoch) | regained per 100 "
          "reviewed (points) |")
    print("| --- | --- | --- | --- | --- |")
    for n in args.reviewed:
        for m in METHODS:
            a = np.asarray(acc[m, n])
            gain = ("" if n == 0 else
                    f"{np.mean((a - np.asarray(acc[m, 0])) * 100 / (n / 100)):.2f} ± "
                    f"{np.std((a - np.asarray(acc[m, 0])) * 100 / (n / 100)):.2f}")
            print(f"| {n} | {np.mean(wrong[n]):.3f} | {m.upper()} | {a.mean():.4f} ± "
                  f"{a.std():.4f} | {gain} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; runs in {root}")


if __name__ == "__main__":
    main()
