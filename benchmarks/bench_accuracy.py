"""Accuracy, memorisation, embedding quality and detection under label noise, over seeds.

    python benchmarks/bench_accuracy.py --seeds 3          # cpu-demo on a CPU, fmnist on CUDA
    python benchmarks/bench_accuracy.py --seeds 3 --methods ce,moit,moit+ --settings symmetric:0.4
    python benchmarks/bench_accuracy.py --table-only --trials cpu-demo,r1   # from runs made

Trains CE, SupCon, ICL, MOIT and MOIT+ (fine-tuned from that MOIT run) at 40 % and 80 %
symmetric and 40 % asymmetric noise, each seed seeding both the network and the noise
(benchmarks/regime_search.py does the training and logs one JSON line per run to ``--log``),
then prints and writes (``--out``) a table of mean +- standard deviation over the seeds
(sample standard deviation, n - 1) and the issue's four targets, each with its verdict:

1. CE memorises: last-epoch accuracy on the given training labels > the share of right labels,
   and last-epoch test accuracy clearly below its best (by more than 2 points);
2. MOIT+ beats CE's last epoch by >= 5 points at 40 % symmetric, >= 10 points at 80 %
   symmetric; MOIT at least level with CE at 40 % symmetric;
3. ICL's embedding keeps better neighbourhoods than SupCon's (leave-one-out kNN accuracy
   against the TRUE labels, votes with the given labels, k of the run) at 40 % and 80 %;
4. detection on MOIT's embedding beats the same detector on CE's embedding: AUROC of the
   discrepancy, and precision at the recall MOIT's clean selection reaches (each detector's
   discrepancy ranking cut at that recall).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import precision_recall_curve, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import regime_search  # noqa: E402

from moit_explore.maths import detection, models
from moit_explore.training import datasets, engine, pipelines, runs  # noqa: E402
from moit_explore.training.config import TrainConfig  # noqa: E402

SETTINGS = "symmetric:0.4,symmetric:0.8,asymmetric:0.4"
METHODS = "ce,supcon,icl,moit,moit+"
COLUMNS = {"test_last": "test acc (last)", "test_best": "test acc (best)",
           "train_acc_given": "fit to given labels", "knn_true": "kNN acc (true labels)",
           "det_auroc": "det AUROC", "det_precision": "det precision",
           "det_recall": "det recall"}


def precision_at_recall(noisy: np.ndarray, discrepancy: np.ndarray, recall: float) -> float:
    """Precision of a discrepancy ranking cut where it first reaches ``recall`` of the truly
    mislabelled samples."""
    precision, rec, _ = precision_recall_curve(noisy, discrepancy)
    ok = rec >= recall
    return float(precision[ok].max()) if ok.any() else float("nan")


def detection_scores(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The final detection's discrepancy on the features the run detected with, and the same
    detector (k of the run, median balancing) on the final model's encoder features h,
    recomputed from the checkpoint; with the truly-noisy mask."""
    run = runs.load_run(run_dir)
    fin = run.final()
    noisy = fin["labels_given"] != fin["labels_true"]
    cfg = TrainConfig.from_dict(run.config)
    bundle, noise = datasets.load_data(cfg)
    model = models.build_model(cfg.arch, bundle.num_classes, bundle.image_shape[2],
                               width=cfg.width, projection=cfg.projection,
                               embed_dim=cfg.embed_dim, shortcut=cfg.shortcut)
    model.load_state_dict(runs.load_checkpoint(Path(run_dir) / runs.CHECKPOINT_FILE)["model"])
    images, _, given, _, _, normalize = pipelines.device_data(bundle, noise, torch.device("cpu"))
    _, h, _ = engine.embed(model, images, normalize, cfg.eval_batch_size)
    det_h = detection.detect_noise(h.numpy(), given.numpy(), bundle.num_classes, k=cfg.k,
                                   balance=cfg.balance)
    return {"noisy": noisy, "run": fin["discrepancy"], "h": det_h.discrepancy}


def _ms(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def _mean(df: pd.DataFrame, method: str, col: str) -> float:
    v = df.loc[df.method == method, col].dropna()
    return float(v.mean()) if len(v) else float("nan")


def table(df: pd.DataFrame) -> tuple[str, list[str]]:
    """Markdown table of mean ± std per setting and method, and the targets' verdicts."""
    lines = ["| noise | method | seeds | " + " | ".join(COLUMNS.values())
             + " | precision at MOIT's recall | det AUROC on h | precision at MOIT's recall"
             " on h |", "|---" * (len(COLUMNS) + 6) + "|"]
    verdicts = []
    for (kind, rate), part in df.groupby(["noise", "rate"], sort=False):
        moit = part[part.method == "moit"].set_index("seed")
        prec_at, auroc_h, prec_h = {}, {}, {}
        for method in ("ce", "supcon", "icl", "moit"):
            rows = part[part.method == method].set_index("seed")
            p_run, a_h, p_h = {}, {}, {}
            for s in rows.index:
                sc = detection_scores(rows.loc[s, "run_dir"])
                a_h[s] = roc_auc_score(sc["noisy"], sc["h"])
                if s in moit.index:
                    r = moit.loc[s, "det_recall"]
                    p_run[s] = precision_at_recall(sc["noisy"], sc["run"], r)
                    p_h[s] = precision_at_recall(sc["noisy"], sc["h"], r)
            prec_at[method] = pd.Series(p_run, dtype=float)
            auroc_h[method] = pd.Series(a_h, dtype=float)
            prec_h[method] = pd.Series(p_h, dtype=float)
        for method, rows in part.groupby("method", sort=False):
            cells = [f"{kind} {rate:.0%}", method, str(rows.seed.nunique())]
            cells += [_ms(rows[c]) if c in rows else "n/a" for c in COLUMNS]
            for d in (prec_at, auroc_h, prec_h):
                cells.append(_ms(d[method]) if method in d and len(d[method]) else "")
            lines.append("| " + " | ".join(cells) + " |")
        tag = f"{kind} {rate:.0%}"
        ce_last, ce_best = _mean(part, "ce", "test_last"), _mean(part, "ce", "test_best")
        ce_fit, clean = _mean(part, "ce", "train_acc_given"), _mean(part, "ce", "clean_share")
        memorises = ce_fit > clean and ce_best - ce_last > 0.02
        verdicts.append(f"{tag}: 1. CE fits {ce_fit:.3f} of the given labels, {clean:.3f} are "
                        f"right; test last {ce_last:.3f} vs best {ce_best:.3f} -> "
                        f"{'memorises' if memorises else 'NOT met'}")
        plus, moit_last = _mean(part, "moit+", "test_last"), _mean(part, "moit", "test_last")
        need = {0.4: 0.05, 0.8: 0.10}.get(rate) if kind == "symmetric" else None
        if need is not None and not np.isnan(plus):
            gap = plus - ce_last
            ok = gap >= need and (rate != 0.4 or moit_last >= ce_last)
            verdicts.append(f"{tag}: 2. MOIT+ {plus:.3f} - CE {ce_last:.3f} = {gap:+.3f} "
                            f"(target >= {need:+.2f}); MOIT {moit_last:.3f} -> "
                            f"{'met' if ok else 'NOT met'}")
        icl, sup = _mean(part, "icl", "knn_true"), _mean(part, "supcon", "knn_true")
        if kind == "symmetric" and not (np.isnan(icl) or np.isnan(sup)):
            verdicts.append(f"{tag}: 3. kNN accuracy (true labels) ICL {icl:.3f} vs SupCon "
                            f"{sup:.3f} -> {'met' if icl > sup else 'NOT met'}")
        a_m, a_c = _mean(part, "moit", "det_auroc"), _mean(part, "ce", "det_auroc")
        p_m, p_c = prec_at["moit"].mean(), prec_at["ce"].mean()
        if not (np.isnan(a_m) or np.isnan(a_c)):
            verdicts.append(f"{tag}: 4. detection AUROC MOIT (z, as trained) {a_m:.3f} vs CE "
                            f"(h) {a_c:.3f}; precision at MOIT's recall {p_m:.3f} vs {p_c:.3f} "
                            f"-> {'met' if a_m > a_c and p_m > p_c else 'NOT met'}")
            a_m, a_c = auroc_h["moit"].mean(), auroc_h["ce"].mean()
            p_m, p_c = prec_h["moit"].mean(), prec_h["ce"].mean()
            verdicts.append(f"{tag}: 4'. the same detector on both encoders' h: AUROC MOIT "
                            f"{a_m:.3f} vs CE {a_c:.3f}; precision at MOIT's recall {p_m:.3f} "
                            f"vs {p_c:.3f} -> {'met' if a_m > a_c and p_m > p_c else 'NOT met'}")
    return "\n".join(lines), verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--preset", default=None, help="default: fmnist on CUDA, else cpu-demo")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--settings", default=SETTINGS)
    ap.add_argument("--trial", default=None, help="run-name prefix (default: bench-<preset>)")
    ap.add_argument("--table-only", action="store_true",
                    help="train nothing: tabulate the logged runs of --trials")
    ap.add_argument("--trials", default=None, help="comma list of trials to tabulate")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--runs-root", default="runs/regime")
    ap.add_argument("--log", default="benchmarks/results/regime.jsonl")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = args.preset or ("fmnist" if torch.cuda.is_available() else "cpu-demo")
    trial = args.trial or f"bench-{preset}"
    log = Path(args.log)
    t0 = time.perf_counter()
    if not args.table_only:
        regime_search.run_trial(trial, preset, args.methods.split(","),
                                regime_search.parse_settings(args.settings),
                                list(range(1, args.seeds + 1)), {}, {}, args.runs_root, log)
    trials = (args.trials or trial).split(",")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    df = pd.DataFrame([r for r in rows if r["trial"] in trials])
    if df.empty:
        raise SystemExit(f"no runs of trial(s) {trials} in {log}")
    if "run_dir" not in df:
        df["run_dir"] = None
    missing = df.run_dir.isna()
    df.loc[missing, "run_dir"] = [
        str(regime_search.run_dir_of(args.runs_root, r.trial, r.method, r.noise, r.rate, r.seed))
        for r in df[missing].itertuples()]
    # a trial re-run replaces its earlier rows
    df = df.drop_duplicates(["trial", "method", "noise", "rate", "seed"], keep="last")
    order = {m: i for i, m in enumerate(METHODS.split(","))}
    df = df.sort_values(["noise", "rate", "method"], key=lambda s: s.map(order)
                        if s.name == "method" else s, kind="stable")
    text, verdicts = table(df)
    head = (f"# Accuracy under label noise ({preset} preset), mean ± std over seeds\n\n"
            f"trials {', '.join(trials)}; {len(df)} runs; "
            f"{'tabulated' if args.table_only else 'trained'} in "
            f"{(time.perf_counter() - t0) / 60:.1f} min\n")
    out_text = head + "\n" + text + "\n\nTargets:\n" + "\n".join(f"- {v}" for v in verdicts) + "\n"
    out = Path(args.out or f"benchmarks/results/accuracy-{preset}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(out_text)
    print(out_text + f"\nwrote {out}")


if __name__ == "__main__":
    main()
