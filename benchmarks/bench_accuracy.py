"""Test accuracy under label noise on Fashion-MNIST: CE, mixup, SupCon, MOIT, MOIT+.

    python benchmarks/bench_accuracy.py            # "fmnist" preset on CUDA, else "cpu-demo"
    python benchmarks/bench_accuracy.py --quick    # 40% symmetric only, CE / MOIT / MOIT+
    python benchmarks/bench_accuracy.py --preset cpu-demo --epochs 10 --out results.md

Settings: symmetric 20 / 40 / 80 % and asymmetric 40 %, plus CE on the clean labels as the
reference. Reports the LAST epoch's test accuracy (the paper's figure) and the best epoch's
(optimistic: chosen on the test set), and the final detection's precision / recall for MOIT.
Writes a markdown table (``--out``, default ``benchmarks/results/accuracy-<preset>.md``) and
keeps every run under ``--runs-root`` for inspection.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from moit_explore import config, runs, train

SETTINGS = [("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.8), ("asymmetric", 0.4)]
METHODS = ["ce", "mixup", "supcon", "moit", "moit+"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default=None, help="default: fmnist on CUDA, else cpu-demo")
    ap.add_argument("--quick", action="store_true", help="40%% symmetric; CE, MOIT, MOIT+")
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs "
                    "(milestones and correction start are scaled with it)")
    ap.add_argument("--methods", default=None, help="comma list (default: all)")
    ap.add_argument("--runs-root", default="runs/bench-accuracy")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    name = args.preset or ("fmnist" if torch.cuda.is_available() else "cpu-demo")
    base = config.preset(name, progress=False)
    overrides = {}
    if args.epochs:
        f = args.epochs / base.epochs
        overrides = dict(epochs=args.epochs,
                         lr_milestones=tuple(max(1, round(m * f)) for m in base.lr_milestones),
                         correction_start=max(1, round(base.correction_start * f)),
                         snapshot_epochs=())
    settings = [("symmetric", 0.4)] if args.quick else SETTINGS
    methods = args.methods.split(",") if args.methods else (
        ["ce", "moit", "moit+"] if args.quick else METHODS)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(args.runs_root) / f"{name}-{stamp}"
    print(f"preset {name} ({base.dataset}, n_train={base.n_train}, {base.arch}, "
          f"{overrides.get('epochs', base.epochs)} epochs) on "
          f"{train.resolve_device(base.device)}; runs under {root}")

    rows = []

    def record(label: str, kind: str, rate: float, run_dir: Path) -> None:
        m = runs.load_run(run_dir).metrics
        last = m.iloc[-1]
        rows.append((label, kind, rate, last["test_acc"], m["test_acc"].max(),
                     last.get("det_precision", float("nan")), last.get("det_recall",
                                                                       float("nan"))))
        print(f"  {label:6s} {kind} {rate:.0%}: last {last['test_acc']:.4f} best "
              f"{m['test_acc'].max():.4f}", flush=True)

    t0 = time.perf_counter()
    clean_dir = train.train(base.replace(method="ce", noise="none", rate=0.0,
                                         runs_root=str(root), name="ce-clean", **overrides))
    record("ce", "clean", 0.0, clean_dir)
    for kind, rate in settings:
        moit_dir = None
        for method in methods:
            if method == "moit+":
                if moit_dir is None:
                    continue
                record("moit+", kind, rate, train.finetune(moit_dir, progress=False))
                continue
            run_dir = train.train(base.replace(method=method, noise=kind, rate=rate,
                                               runs_root=str(root),
                                               name=f"{method}-{kind}-{round(rate * 100)}",
                                               **overrides))
            if method == "moit":
                moit_dir = run_dir
            record(method, kind, rate, run_dir)
    elapsed = time.perf_counter() - t0

    lines = [f"# Fashion-MNIST accuracy under label noise ({name} preset)", "",
             f"{train.resolve_device(base.device)}, "
             f"{overrides.get('epochs', base.epochs)} epochs, {elapsed / 60:.1f} min. "
             "Last = the last epoch (the paper's figure); best = best epoch on the test set "
             "(optimistic). Detection = the final kNN detection's precision / recall of the "
             "noisy samples.", "",
             "| method | noise | rate | test acc last | test acc best | det precision | "
             "det recall |", "|---|---|---|---|---|---|---|"]
    for label, kind, rate, last, best, p, r in rows:
        lines.append(f"| {label} | {kind} | {rate:.0%} | {last:.4f} | {best:.4f} | "
                     f"{p:.3f} | {r:.3f} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out or f"benchmarks/results/accuracy-{name}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print("\n" + text + f"\nwrote {out}")


if __name__ == "__main__":
    main()
