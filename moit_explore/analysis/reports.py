"""Reports on detections and runs: how well does the clean selection split clean from noisy,
and what came out of a training run?

- one detection: :func:`detection_report`,
  :func:`per_class_detection` (precision / recall / F1 are detection.prf everywhere);
- runs: :func:`metrics_frame`, :func:`detection_over_epochs`, :func:`continued_metrics` (MOIT+
  after MOIT on one epoch axis), :func:`summarize_runs` (the one run summary table, used by
  ``report``, the demo and the notebooks) and :func:`memorisation` (does a method memorise
  the noise?).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from moit_explore.maths import detection
from moit_explore.maths.validation import check_labels, check_mask, check_num_classes
from moit_explore.training import runs
from moit_explore.training.methods import get_method

__all__ = [
    "DETECTION_KEYS",
    "Memorisation",
    "continued_metrics",
    "detection_over_epochs",
    "detection_report",
    "memorisation",
    "metrics_frame",
    "per_class_detection",
    "summarize_runs",
]

DETECTION_KEYS = ("precision", "recall", "f1", "auroc", "selected_frac", "selected_noise_rate")


# --------------------------------------------------------------------------- one detection


def detection_report(clean: Any, is_noisy: Any, discrepancy: Any = None) -> dict[str, float]:
    """Quality of a clean/noisy split, the NOISY class being the positive one.

    detection.detection_metrics (precision, recall, f1, auroc, selected_frac,
    selected_noise_rate) plus average_precision of ``discrepancy`` as a noise score,
    n_selected (selected as clean), n_noisy and noise_rate.
    """
    c = check_mask(clean, None, "clean")
    noisy = check_mask(is_noisy, c.shape[0], "is_noisy")
    report = dict(detection.detection_metrics(c, noisy, discrepancy))
    ap = float("nan")
    if discrepancy is not None and 0 < noisy.sum() < noisy.size:
        ap = float(average_precision_score(noisy, np.asarray(discrepancy, dtype=np.float64)))
    report.update(average_precision=ap, n_selected=int(c.sum()), n_noisy=int(noisy.sum()),
                  noise_rate=float(noisy.mean()) if noisy.size else float("nan"))
    return report


def per_class_detection(
    clean: Any, is_noisy: Any, given: Any, num_classes: int | None = None
) -> pd.DataFrame:
    """Detection quality per GIVEN class: one row per class.

    Columns n, n_noisy, n_selected, n_not_selected (selected for training or not: the
    training selection, not the label-issue verdict of analysis.label_issues),
    precision, recall, f1 (of the noisy class, NaN where undefined), selected_noise_rate.
    """
    c_mask = check_mask(clean, None, "clean")
    noisy = check_mask(is_noisy, c_mask.shape[0], "is_noisy")
    g = check_labels(given, c_mask.shape[0], name="given")
    c = check_num_classes(num_classes, g)
    issue = ~c_mask

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(g[mask], minlength=c)

    tp, fp, fn = count(issue & noisy), count(issue & ~noisy), count(c_mask & noisy)
    precision, recall, f1 = detection.prf(tp, fp, fn)
    n_sel = count(c_mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        sel_noise = np.where(n_sel > 0, fn / n_sel, np.nan)
    table = pd.DataFrame({
        "n": np.bincount(g, minlength=c), "n_noisy": count(noisy), "n_selected": n_sel,
        "n_not_selected": count(issue), "precision": precision, "recall": recall, "f1": f1,
        "selected_noise_rate": sel_noise,
    })
    table.index.name = "class"
    return table


# --------------------------------------------------------------------------- runs


def metrics_frame(run_or_metrics: Any) -> pd.DataFrame:
    """A run's metrics.jsonl as a DataFrame: from a runs.Run, its directory, or the DataFrame
    itself."""
    if isinstance(run_or_metrics, pd.DataFrame):
        return run_or_metrics
    if isinstance(run_or_metrics, (runs.Run, str, Path)):
        return runs.load_run(run_or_metrics).metrics
    raise TypeError(f"expected a runs.Run, a run directory or a metrics DataFrame, got "
                    f"{type(run_or_metrics).__name__}")


def detection_over_epochs(run: Any) -> pd.DataFrame:
    """Per-epoch detection metrics from a run's metrics.jsonl (det_* columns, prefix dropped).

    run: a runs.Run, its directory or its metrics DataFrame. Epochs without detection are left
    out (e.g. warm-up epochs before the first selection).
    """
    m = metrics_frame(run)
    cols = [f"det_{key}" for key in DETECTION_KEYS if f"det_{key}" in m]
    if not cols:
        raise ValueError("these metrics hold no det_* columns: the run trained without detection "
                         "(detection runs for method 'moit'); train with it to see these curves")
    out = m[["epoch", *cols]].dropna(subset=cols, how="all")
    return out.rename(columns={c: c[4:] for c in cols}).reset_index(drop=True)


def continued_metrics(runs_by_name: Mapping[Any, Any]) -> dict[Any, pd.DataFrame]:
    """name -> a copy of each run's metrics, on one epoch axis: a MOIT+ run's epochs are shifted
    to continue after the last epoch of its base MOIT run, when that run is in the mapping too.

    runs_by_name: name -> runs.Run or run directory (a bare metrics DataFrame is taken as it is).
    """
    loaded = {name: (r if isinstance(r, pd.DataFrame) else runs.load_run(r))
              for name, r in runs_by_name.items()}
    last_epoch = {r.path.resolve(): int(r.metrics["epoch"].max())
                  for r in loaded.values() if isinstance(r, runs.Run) and len(r.metrics)}
    out = {}
    for name, r in loaded.items():
        m = metrics_frame(r).copy()
        if isinstance(r, runs.Run) and get_method(r.method).is_fine_tuning and len(m):
            # train.finetune always writes MOIT+ into a folder inside its base run
            m["epoch"] += last_epoch.get(r.path.resolve().parent, 0)
        out[name] = m
    return out


def _last(m: pd.DataFrame, col: str) -> float | None:
    return float(m[col].dropna().iloc[-1]) if col in m and m[col].notna().any() else None


def summarize_runs(runs_by_name: Mapping[Any, Any]) -> pd.DataFrame:
    """The run summary table: one row per run, indexed by the mapping's names.

    runs_by_name: name -> runs.Run or run directory. Columns: run (its folder), method, noise,
    rate, epochs, test_acc_last, test_acc_best (an optimistic figure: the best epoch seen on
    the test set), the last train_acc_given / train_acc_true and det_precision / det_recall /
    det_f1 / det_selected_frac / det_selected_noise_rate (``_last``; where the run has them),
    noise_rate (the realised fraction of wrong labels) and time_s (wall time of all epochs).
    """
    rows = {}
    for name, run in runs_by_name.items():
        run = runs.load_run(run)
        m = run.metrics
        # a label file (--noise-file) gives the labels: no synthetic noise, rate unknown
        from_file = bool(run.config.get("noise_file"))
        row: dict[str, Any] = {"run": str(run.path), "method": run.method,
                               "noise": "file" if from_file else run.config.get("noise"),
                               "rate": None if from_file else run.config.get("rate"),
                               "epochs": len(m)}
        for col in ("test_acc", "train_acc_given", "train_acc_true", "det_precision",
                    "det_recall", "det_f1", "det_selected_frac", "det_selected_noise_rate"):
            value = _last(m, col)
            if value is not None:
                row[f"{col}_last"] = value
        if _last(m, "test_acc") is not None:
            row["test_acc_best"] = float(m["test_acc"].max())
        if run.noise is not None:
            row["noise_rate"] = float(run.noise.actual_rate)
        time_col = "epoch_time_s" if "epoch_time_s" in m else "time_s"
        if time_col in m:
            row["time_s"] = float(m[time_col].sum())
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass
class Memorisation:
    """Does a method memorise the noise? It does when it fits more of the given training labels
    than are right (train_acc_given > clean_share): then it has learnt wrong labels.

    train_acc_given: last-epoch accuracy on the GIVEN (noisy) training labels; clean_share:
    the share of given labels that are right (1 - realised noise rate); test_acc_last /
    test_acc_best: test accuracy at the last and at the best epoch.
    """

    train_acc_given: float
    clean_share: float
    test_acc_last: float
    test_acc_best: float

    @property
    def memorises(self) -> bool:
        return self.train_acc_given > self.clean_share

    @property
    def min_wrong_fitted(self) -> float:
        """A lower bound on the share of training images predicted as their WRONG given label:
        train_acc_given - clean_share (0 when the method does not memorise)."""
        return max(0.0, self.train_acc_given - self.clean_share)

    @property
    def test_drop(self) -> float:
        """How much test accuracy the last epoch lost against the best one."""
        return self.test_acc_best - self.test_acc_last


def memorisation(summary_row: Mapping[str, Any]) -> Memorisation:
    """:class:`Memorisation` of one row of :func:`summarize_runs` (e.g. ``summary.loc[name]``)."""
    need = ("train_acc_given_last", "noise_rate", "test_acc_last", "test_acc_best")
    missing = [key for key in need if key not in summary_row or pd.isna(summary_row[key])]
    if missing:
        raise ValueError(f"the summary row lacks {missing}: pass a row of summarize_runs of a run "
                         "with training accuracy and known noise")
    return Memorisation(train_acc_given=float(summary_row["train_acc_given_last"]),
                        clean_share=1.0 - float(summary_row["noise_rate"]),
                        test_acc_last=float(summary_row["test_acc_last"]),
                        test_acc_best=float(summary_row["test_acc_best"]))
