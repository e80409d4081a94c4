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

``--seed-network``: each seed seeds the network too (``seed`` = ``noise_seed``, as
benchmarks/regime_search.py trains); without it every run keeps the preset's network seed.
``--baseline-runs-root DIR``: take the N = 0 runs (CE and MOIT on the noisy labels) from DIR
instead of training them, where a finished run there has exactly the configuration this script
would train (every TrainConfig field but name / runs_root / overwrite / progress, the data root
resolved) and the same given labels; a run that differs is refused (its differences printed)
and the baseline is trained as without the option. The runs found are only read.
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
from moit_explore.training import config, datasets, presets, rundir, runs, train

METHODS = ("ce", "moit")


def last_test_acc(path: Path) -> float:
    return float(runs.load_run(path).metrics["test_acc"].iloc[-1])


def find_baseline(root: Path, cfg: config.TrainConfig) -> Path | None:
    """The finished run under ``root`` trained with exactly ``cfg`` (place fields aside) on the
    same given labels, or None; prints why each run of the same method was refused."""
    expected = cfg.to_dict()
    data_root = str(Path(cfg.data_root).expanduser().resolve())
    given = None
    for path in sorted(p for p in root.iterdir() if rundir.is_run_dir(p)):
        saved = runs.read_json(path / rundir.CONFIG_FILE)
        if saved.get("method") != cfg.method:
            continue
        diff = config.config_differences(saved, expected)
        if str(Path(saved.get("data_root", "")).expanduser().resolve()) != data_root:
            diff.append("data_root")
        run = runs.load_run(path) if not diff else None
        if run is not None and not runs.is_finished(path):
            diff.append("(not finished)")
        if not diff:
            if given is None:
                given = datasets.load_data(cfg, download=False)[1].noisy
            if run.noise is None or not np.array_equal(run.noise.noisy, given):
                diff.append("(given labels)")
        if not diff:
            print(f"  reusing {path} as the {cfg.method.upper()} baseline", flush=True)
            return path
        shown = ", ".join(f"{k}={saved.get(k)!r} (here {expected.get(k)!r})"
                          if k in expected else k for k in diff[:4])
        print(f"  refused {path.name}: {shown}", flush=True)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="noise seeds")
    ap.add_argument("--reviewed", type=int, nargs="+", default=[0, 100, 200, 400])
    ap.add_argument("--seed-network", action="store_true",
                    help="each seed seeds the network too (seed = noise_seed)")
    ap.add_argument("--baseline-runs-root", type=Path, default=None, metavar="DIR",
                    help="reuse matching finished CE / MOIT runs in DIR as the N = 0 runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-review-"))
    acc: dict[tuple[str, int], list[float]] = {}
    wrong: dict[int, list[float]] = {}

    def baseline(cfg: config.TrainConfig) -> Path:
        found = (find_baseline(args.baseline_runs_root, cfg) if args.baseline_runs_root
                 else None)
        return found or train.train(cfg, progress=False)

    for seed in args.seeds:
        net = {"seed": seed} if args.seed_network else {}
        base = presets.preset(args.preset, noise="symmetric", rate=args.rate, noise_seed=seed,
                              runs_root=str(root), **net)
        moit_dir = baseline(base.replace(method="moit", name=f"moit-s{seed}"))
        issues, run = label_issues.examine_run(moit_dir)
        final = run.final()
        true = final["labels_true"]
        full, positions = review.run_label_positions(run)
        for n in args.reviewed:
            if n == 0:
                dirs = {"moit": moit_dir,
                        "ce": baseline(base.replace(method="ce", name=f"ce-s{seed}"))}
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
    net_seed = "= the noise seed" if args.seed_network else "the preset's"
    print(f"\n{args.preset}, {args.rate:.0%} symmetric noise, noise seeds {args.seeds} "
          f"(network seed {net_seed}); the "
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
