"""The course's full-mode runs over seeds: the figures behind its takeaways, one row per cache.

    make test-course-full COURSE_SEED=2 COURSE_THREADS=1      # fills runs/course-full-seed2-...
    python benchmarks/bench_course_seeds.py runs/course-full-*   # one row per run cache

Each argument is a run cache (``MOIT_COURSE_RUNS``) that the six notebooks trained in full mode
(the ``cpu-demo`` preset, the course's noise draw). The table gives, per cache (seed and torch
threads from its config and folder name): kNN accuracy against the true labels (votes with the
given labels, the run's k) of SupCon's and ICL's final embeddings at 0 / 40 / 80 % symmetric
noise (notebook 2); MOIT's detection F1 after the first and the last epoch and its last recall
and AUROC at 40 % symmetric (notebook 4), CE's detection on its encoder features after the last
epoch; last-epoch test accuracy of CE and MOIT+ at 40 % (notebook 5); on notebook 6's demo
image folder (written again, as the notebook writes it), how many of the 8 misfiled images the
label issues hold and how many the top 32 rows of the table hold.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from moit_explore.analysis import collapse, label_issues
from moit_explore.course import notebook_runs
from moit_explore.training import datasets, runs

N_MISFILED = 8  # notebook 6's demo folder: 200 images a class, 8 misfiled (seed 0)


def demo_folder_misfiled() -> tuple[np.ndarray, np.ndarray]:
    """Notebook 6's demo folder, written again: its given labels and which images are misfiled,
    in the order a run trained on it holds them."""
    with tempfile.TemporaryDirectory(prefix="moit-folder-") as tmp:
        misfiled = notebook_runs.write_demo_imagefolder(tmp, per_class=200,
                                                        n_misfiled=N_MISFILED, seed=0)
        bundle = datasets.load_dataset(f"imagefolder:{tmp}", image_size=28, channels=1)
        return (np.asarray(bundle.train_labels),
                np.isin(np.asarray(bundle.train_paths), misfiled["path"].to_numpy()))


def course_runs(cache: Path, dataset: str) -> dict[tuple[str, str, int], Path]:
    """(method, noise, rate in %) -> run directory of ``dataset``, from each run's config.json
    (a cache may hold the smoke mode's digits runs too)."""
    found = {}
    for cfg_path in sorted(cache.glob("*/config.json")):
        # a run in training is a hidden folder until its last epoch (final.npz) is written
        if cfg_path.parent.name.startswith(".") or not runs.is_finished(cfg_path.parent):
            continue
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("dataset") != dataset:
            continue
        found[(cfg["method"], cfg["noise"], round(float(cfg["rate"]) * 100))] = cfg_path.parent
    return found


def folder_figures(cache: Path, demo: tuple[np.ndarray, np.ndarray]) -> dict:
    """Notebook 6: the misfiled images among the label issues and in the top rows."""
    given, misfiled = demo
    for path in sorted((cache / "folders").glob("cpu-demo-*")):
        run = runs.load_run(path)
        if not np.array_equal(run.final()["labels_given"], given):
            continue  # trained on another folder
        issues, _ = label_issues.examine_run(run)
        top = issues.ranked()[:4 * N_MISFILED]
        return {"folder run k": run.k,
                f"misfiled among the label issues (of {N_MISFILED})":
                    int((issues.is_label_issue & misfiled).sum()),
                "label issues": int(issues.is_label_issue.sum()),
                f"misfiled in the top {4 * N_MISFILED} rows": int(misfiled[top].sum())}
    return {}


def cache_row(cache: Path, dataset: str, demo: tuple[np.ndarray, np.ndarray] | None) -> dict:
    """The figures of one run cache (missing runs are left out)."""
    found = {key: runs.load_run(path) for key, path in course_runs(cache, dataset).items()}
    threads = re.search(r"threads(\d+)", cache.name)
    row: dict = {"cache": cache.name,
                 "seed": next((r.config.get("seed") for r in found.values()), None),
                 "torch threads": int(threads.group(1)) if threads else "?"}
    for method in ("supcon", "icl"):
        for rate in (0, 40, 80):
            if (run := found.get((method, "symmetric", rate))) is not None:
                row[f"{method} kNN acc {rate}%"] = collapse.run_collapse_metrics(
                    run, run.final())["knn_acc_true"]
    for method in ("moit", "ce"):
        if (run := found.get((method, "symmetric", 40))) is None:
            continue
        first, last = run.metrics.iloc[0], run.metrics.iloc[-1]
        row[f"{method} det F1 epoch 1"] = float(first["det_f1"])
        row[f"{method} det F1 last"] = float(last["det_f1"])
        row[f"{method} det recall last"] = float(last["det_recall"])
        row[f"{method} det AUROC last"] = float(last["det_auroc"])
        row[f"{method} test acc last"] = float(last["test_acc"])
        if method == "moit" and (run.path / "finetune" / "metrics.jsonl").is_file():
            plus = runs.load_run(run.path / "finetune")
            row["moit+ test acc last"] = float(plus.metrics.iloc[-1]["test_acc"])
    return {**row, **(folder_figures(cache, demo) if demo is not None else {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("caches", nargs="+", type=Path, help="run caches (MOIT_COURSE_RUNS folders)")
    ap.add_argument("--dataset", default="fashion-mnist",
                    help="the runs' data set (default: full mode's; digits: smoke mode's)")
    args = ap.parse_args(argv)
    missing = [str(c) for c in args.caches if not c.is_dir()]
    if missing:
        ap.error(f"not a folder: {', '.join(missing)}")
    demo = demo_folder_misfiled() if args.dataset == "fashion-mnist" else None
    table = pd.DataFrame([cache_row(c, args.dataset, demo) for c in args.caches],
                         dtype=object).set_index("cache").T
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    print("| | " + " | ".join(table.columns) + " |")
    print("|---" * (len(table.columns) + 1) + "|")
    for name, values in table.iterrows():
        print(f"| {name} | " + " | ".join(fmt(v) for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
