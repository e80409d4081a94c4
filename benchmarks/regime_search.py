"""Search for a CPU regime in which the paper's phenomena appear (issue: MOIT must beat CE).

One trial = one set of TrainConfig overrides on top of a preset, run for some methods, noise
settings and seeds. Each finished run appends one JSON line to ``--log`` (default
``benchmarks/results/regime.jsonl``) with the figures the regime is judged on:

- last / best test accuracy; accuracy on the given training labels at the last epoch and the
  share of given labels that are right (CE memorises when the first exceeds the second);
- the final detection's AUROC, precision and recall against the true flips;
- leave-one-out kNN accuracy of the final embedding against the TRUE labels (votes with the
  given labels, k = the run's k).

    python benchmarks/regime_search.py --trial probe --preset cpu-demo --methods ce,moit \
        --set n_train=3000 epochs=60 lr_milestones=30,45 augment=none k=30 correction_start=30

MOIT+ ("moit+") fine-tunes the trial's MOIT run with the preset's fine-tuning settings
(``--ft-set`` overrides them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from moit_explore.analysis import collapse
from moit_explore.training import config, presets, runs, train


def _parse_sets(items: list[str], cls: type) -> dict:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown {cls.__name__} field {key!r}")
        tp = hints[key]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = args[0] if args and typing.get_origin(tp) is not tuple else tp
        if text.lower() == "none" and type(None) in typing.get_args(tp):
            out[key] = None
        elif typing.get_origin(base) is tuple or base is tuple:
            out[key] = tuple(int(v) for v in text.split(",") if v)
        elif base is bool:
            out[key] = text.lower() in ("1", "true", "yes")
        elif base is int:
            out[key] = int(text)
        elif base is float:
            out[key] = float(text)
        else:
            out[key] = text
    return out


def figures(run_dir: Path) -> dict:
    run = runs.load_run(run_dir)
    m = run.metrics
    last = m.iloc[-1]
    fin = run.final()
    given, true = fin["labels_given"], fin["labels_true"]
    k = int(run.config.get("k", 20))
    row = dict(
        test_last=float(last["test_acc"]), test_best=float(m["test_acc"].max()),
        best_epoch=int(m["epoch"][m["test_acc"].idxmax()]),
        train_acc_given=float(last["train_acc_given"]),
        clean_share=float(np.mean(given == true)),
        knn_true=collapse.knn_accuracy(fin["features"], given, k=min(k, len(given) - 1),
                                       target=true),
        time_s=float(m["epoch_time_s"].sum()),
    )
    for key in ("det_auroc", "det_precision", "det_recall", "det_f1"):
        if key in m:
            row[key] = float(last[key])
    return row


def run_dir_of(runs_root: str | Path, trial: str, method: str, kind: str, rate: float,
               seed: int) -> Path:
    """The run directory a trial's run is written to (MOIT+: inside its MOIT run)."""
    tag = lambda m: f"{trial}-{m}-{kind}-{round(float(rate) * 100)}-s{seed}"  # noqa: E731
    if method == "moit+":
        return Path(runs_root) / tag("moit") / "finetune"
    return Path(runs_root) / tag(method)


def run_trial(trial: str, preset: str, methods: list[str], settings: list[tuple[str, float]],
              seeds: list[int], overrides: dict, ft_overrides: dict, runs_root: str,
              log: Path, set_text: list[str] = (), ft_text: list[str] = ()) -> list[dict]:
    """Train every (setting, seed, method) of a trial, appending one JSON line per run to log.

    Each seed seeds both the network and the noise. A run directory of the same name is
    overwritten (a trial is re-run as a whole)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind, rate in settings:
        for seed in seeds:
            moit_dir = None
            for method in methods:
                t0 = time.perf_counter()
                if method == "moit+":
                    # after this trial's MOIT run, or on one made earlier
                    earlier = run_dir_of(runs_root, trial, "moit", kind, rate, seed)
                    moit_dir = moit_dir or (earlier if earlier.is_dir() else None)
                    if moit_dir is None:
                        continue
                    run_dir = train.finetune(moit_dir, progress=False, overwrite=True,
                                             **ft_overrides)
                else:
                    target = run_dir_of(runs_root, trial, method, kind, rate, seed)
                    cfg = presets.preset(preset, **{**overrides, "method": method,
                                        "noise": kind, "rate": float(rate), "seed": seed,
                                        "noise_seed": seed, "runs_root": runs_root,
                                        "name": target.name, "overwrite": True,
                                        "progress": False})
                    run_dir = train.train(cfg)
                    if method == "moit":
                        moit_dir = run_dir
                row = dict(trial=trial, preset=preset, method=method, noise=kind,
                           rate=float(rate), seed=seed, set=list(set_text),
                           ft_set=list(ft_text), run_dir=str(run_dir),
                           wall_s=round(time.perf_counter() - t0, 1), **figures(run_dir))
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items() if k not in ("set", "ft_set")),
                      flush=True)
                rows.append(row)
    return rows


def parse_settings(text: str) -> list[tuple[str, float]]:
    """"symmetric:0.4,asymmetric:0.4" -> [("symmetric", 0.4), ("asymmetric", 0.4)]."""
    out = []
    for item in text.split(","):
        kind, _, rate = item.partition(":")
        out.append((kind, float(rate)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--trial", required=True)
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--methods", default="ce,moit")
    ap.add_argument("--settings", default="symmetric:0.4",
                    help="comma list of noise:rate, e.g. symmetric:0.4,symmetric:0.8")
    ap.add_argument("--seeds", default="1", help="comma list; each seeds network and noise")
    ap.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides field=value")
    ap.add_argument("--ft-set", nargs="*", default=[], help="FinetuneConfig overrides")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--runs-root", default="runs/regime")
    ap.add_argument("--log", default="benchmarks/results/regime.jsonl")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_trial(args.trial, args.preset, args.methods.split(","), parse_settings(args.settings),
              [int(s) for s in args.seeds.split(",")],
              _parse_sets(args.set, config.TrainConfig),
              _parse_sets(args.ft_set, config.FinetuneConfig), args.runs_root, Path(args.log),
              args.set, args.ft_set)


if __name__ == "__main__":
    main()
