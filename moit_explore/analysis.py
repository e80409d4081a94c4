"""Analysis of runs and detections: NumPy arrays / pandas DataFrames in and out.

Four groups, one per question the course asks:

* embedding collapse -- does the embedding memorise the noisy labels?
  (:func:`knn_accuracy`, :func:`noisy_neighbourhood`, :func:`class_distance_ratio`,
  :func:`collapse_metrics`, :func:`collapse_over_epochs`, :func:`knn_accuracy_table`);
* soft-label disagreement -- which labels do the neighbours contradict?
  (:func:`sample_table`, :func:`disagreement_confusion`);
* detection quality -- how well does the clean selection split clean from noisy?
  (:func:`detection_report`, :func:`pr_curve`, :func:`roc_curve`, :func:`per_class_detection`,
  :func:`detection_over_epochs`, :func:`summarize_runs`);
* label issues in a user's own data, cleanlab ``find_label_issues`` style
  (:func:`find_label_issues`, :func:`label_issues_table`, :func:`export_label_issues`),
  plus :func:`embedding_projection` for 2-D pictures of an embedding.

True labels are optional everywhere: on a user's own image folder nobody knows them, and the
functions then return only what the given labels support.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moit_explore import detection as det_mod

__all__ = [
    "Projection",
    "class_distance_ratio",
    "collapse_metrics",
    "collapse_over_epochs",
    "continued_metrics",
    "default_k",
    "detection_over_epochs",
    "detection_report",
    "disagreement_confusion",
    "embedding_projection",
    "export_label_issues",
    "find_label_issues",
    "knn_accuracy",
    "knn_accuracy_table",
    "knn_predict",
    "label_issues_table",
    "noisy_neighbourhood",
    "per_class_detection",
    "pr_curve",
    "roc_curve",
    "sample_table",
    "summarize_runs",
]

DEFAULT_COLLAPSE_K = 20
DETECTION_KEYS = ("precision", "recall", "f1", "auroc", "selected_frac", "selected_noise_rate")
RANKINGS = ("discrepancy", "label_quality")
# a (chunk x N_train) float32 similarity block of at most this many bytes in query searches
_BLOCK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------- validation


def _features(x: Any, name: str = "features") -> np.ndarray:
    """Features as a C-contiguous float32 (N, D) array (float16 snapshots are widened)."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or inf; drop or repair those rows first")
    return a


def _labels(y: Any, n: int | None = None, name: str = "labels") -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries but the data has {n}; pass one per "
                         "sample, in the same order")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {a.dtype}; map class "
                         "names to 0..C-1 first")
    a = a.astype(np.int64, copy=True)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {a.min()}")
    return a


def _bool(x: Any, n: int | None = None, name: str = "mask") -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries, expected {n}")
    if a.dtype != np.bool_:
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (True/False), got values other than 0/1")
        a = a.astype(bool)
    return a


def _num_classes(num_classes: int | None, *labels: np.ndarray | None) -> int:
    top = max((int(y.max()) + 1 for y in labels if y is not None and y.size), default=1)
    if num_classes is None:
        return top
    c = int(num_classes)
    if c < top:
        raise ValueError(f"labels go up to {top - 1} but num_classes={c}; pass num_classes>={top}")
    return c


def _normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def default_k(labels: Any, cap: int = 250) -> int:
    """A kNN size for detection when none is given: half the median class size, in [1, cap].

    The paper's k=250 is 5 % of a CIFAR-10 class (5000 images); on small data sets a k larger
    than a class would vote with other classes, so it shrinks with the classes. Also <= N-1.
    """
    y = _labels(labels)
    if y.size < 2:
        raise ValueError("label-noise detection needs at least 2 samples")
    sizes = np.bincount(y)
    sizes = sizes[sizes > 0]
    return int(max(1, min(cap, int(np.median(sizes)) // 2, y.size - 1)))


# --------------------------------------------------------------------------- kNN


def _vote(neighbor_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Majority label of each row of (Q, k) labels; ties go to the lowest class index."""
    q, _ = neighbor_labels.shape
    flat = neighbor_labels + (np.arange(q, dtype=np.int64) * num_classes)[:, None]
    counts = np.bincount(flat.ravel(), minlength=q * num_classes).reshape(q, num_classes)
    return counts.argmax(axis=1)


def _query_neighbors(queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    """Indices (Q, k) of the k most cosine-similar rows of ``base`` for each query row."""
    q, b = _normalize(queries), _normalize(base)
    k = min(k, b.shape[0])
    out = np.empty((q.shape[0], k), dtype=np.int64)
    chunk = max(1, _BLOCK_BYTES // (4 * max(1, b.shape[0])))
    for lo in range(0, q.shape[0], chunk):
        sims = q[lo:lo + chunk] @ b.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[lo:lo + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def _check_k(k: Any, n_base: int, self_excluded: bool) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    limit = n_base - 1 if self_excluded else n_base
    if not 1 <= int(k) <= limit:
        raise ValueError(f"k={k} is out of range for {n_base} reference samples; pass "
                         f"1 <= k <= {limit}")
    return int(k)


def knn_predict(
    train_feats: Any,
    train_labels: Any,
    query_feats: Any = None,
    k: int = DEFAULT_COLLAPSE_K,
    *,
    num_classes: int | None = None,
    neighbors: det_mod.Neighbors | None = None,
) -> np.ndarray:
    """Majority vote of the k most cosine-similar training samples: -> int64 (Q,).

    query_feats None: leave-one-out on the training set (each sample's own index excluded;
    ``neighbors`` from :func:`detection.knn_search` may be passed to skip the search).
    Plain (unweighted) votes; ties go to the lowest class index.
    """
    x = _features(train_feats, "train_feats")
    y = _labels(train_labels, x.shape[0], "train_labels")
    c = _num_classes(num_classes, y)
    if query_feats is None:
        k = _check_k(k, x.shape[0], self_excluded=True)
        if neighbors is None or neighbors.indices.shape[1] < k:
            neighbors = det_mod.knn_search(x, k, backend="torch")
        idx = neighbors.indices[:, :k]
    else:
        q = _features(query_feats, "test_feats")
        if q.shape[1] != x.shape[1]:
            raise ValueError(f"test_feats have {q.shape[1]} dimensions but train_feats "
                             f"{x.shape[1]}; embed both with the same model")
        k = _check_k(k, x.shape[0], self_excluded=False)
        idx = _query_neighbors(q, x, k)
    return _vote(y[idx], c)


def knn_accuracy(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any = None,
    test_labels: Any = None,
    k: int = DEFAULT_COLLAPSE_K,
    *,
    target: Any = None,
) -> float:
    """Accuracy of a cosine kNN classifier (majority vote of ``train_labels``).

    With test data: predictions for ``test_feats`` scored against ``test_labels``. Without:
    leave-one-out on the training set (self excluded), scored against ``target`` (e.g. the
    TRUE labels while voting with the noisy given ones) or else ``train_labels`` themselves.
    """
    if (test_feats is None) != (test_labels is None):
        raise ValueError("pass test_feats and test_labels together (or neither for a "
                         "leave-one-out accuracy on the training set)")
    if test_feats is None:
        pred = knn_predict(train_feats, train_labels, None, k)
        ref = _labels(train_labels if target is None else target, pred.shape[0], "target")
    else:
        pred = knn_predict(train_feats, train_labels, test_feats, k)
        ref = _labels(test_labels, pred.shape[0], "test_labels")
    return float(np.mean(pred == ref)) if ref.size else float("nan")


# --------------------------------------------------------------------------- collapse


def class_distance_ratio(features: Any, labels: Any) -> float:
    """Mean within-class over mean between-class cosine distance (1 - cosine similarity).

    Averages over all pairs of distinct samples, computed from per-class sums of the
    normalised features in O(N D + C D) instead of O(N^2 D). Small = tight, separated classes;
    1 = no class structure. NaN when there is no within- or between-class pair.
    """
    x = _normalize(_features(features).astype(np.float64))
    y = _labels(labels, x.shape[0])
    c = _num_classes(None, y)
    sums = np.zeros((c, x.shape[1]))
    np.add.at(sums, y, x)
    sizes = np.bincount(y, minlength=c).astype(np.float64)
    self_sim = np.bincount(y, weights=np.einsum("ij,ij->i", x, x), minlength=c)
    within_pairs = float(np.sum(sizes * (sizes - 1)))
    total = sums.sum(axis=0)
    between_pairs = float(sizes.sum() ** 2 - np.sum(sizes**2))
    if within_pairs == 0 or between_pairs == 0:
        return float("nan")
    class_sq = np.einsum("ij,ij->i", sums, sums)
    within_sim = float(np.sum(class_sq - self_sim)) / within_pairs
    between_sim = float(total @ total - class_sq.sum()) / between_pairs
    within, between = 1.0 - within_sim, 1.0 - between_sim
    return within / between if between > 0 else float("nan")


def noisy_neighbourhood(
    features: Any,
    given: Any,
    true: Any,
    k: int = DEFAULT_COLLAPSE_K,
    *,
    neighbors: det_mod.Neighbors | None = None,
) -> dict[str, float]:
    """Where do the NOISY samples sit? The memorisation (collapse) signal.

    For every noisy sample (given != true), the majority GIVEN label among its k nearest other
    samples. Returns agree_given (fraction whose neighbourhood backs the wrong given label:
    the embedding memorised it), agree_true (fraction whose neighbourhood says the true class:
    the embedding is robust) and n_noisy. Fractions are NaN without noisy samples.
    """
    x = _features(features)
    g = _labels(given, x.shape[0], "given")
    t = _labels(true, x.shape[0], "true")
    pred = knn_predict(x, g, None, k, num_classes=_num_classes(None, g, t), neighbors=neighbors)
    noisy = g != t
    n = int(noisy.sum())
    return {
        "agree_given": float(np.mean(pred[noisy] == g[noisy])) if n else float("nan"),
        "agree_true": float(np.mean(pred[noisy] == t[noisy])) if n else float("nan"),
        "n_noisy": n,
    }


def collapse_metrics(
    features: Any, given: Any, true: Any = None, k: int = DEFAULT_COLLAPSE_K
) -> dict[str, float]:
    """Embedding-collapse numbers from one kNN search (leave-one-out, votes of given labels).

    knn_acc_given: kNN prediction == given label; distance_ratio_given: class_distance_ratio
    by given labels. With ``true``: knn_acc_true (prediction == true label),
    noisy_agree_given / noisy_agree_true (:func:`noisy_neighbourhood`), noise_rate and
    distance_ratio_true.
    """
    x = _features(features)
    g = _labels(given, x.shape[0], "given")
    k = _check_k(k, x.shape[0], self_excluded=True)
    nb = det_mod.knn_search(x, k, backend="torch")
    t = None if true is None else _labels(true, x.shape[0], "true")
    pred = knn_predict(x, g, None, k, num_classes=_num_classes(None, g, t), neighbors=nb)
    out: dict[str, float] = {
        "knn_acc_given": float(np.mean(pred == g)),
        "distance_ratio_given": class_distance_ratio(x, g),
    }
    if t is not None:
        noisy = g != t
        n = int(noisy.sum())
        out.update(
            knn_acc_true=float(np.mean(pred == t)),
            noisy_agree_given=float(np.mean(pred[noisy] == g[noisy])) if n else float("nan"),
            noisy_agree_true=float(np.mean(pred[noisy] == t[noisy])) if n else float("nan"),
            noise_rate=float(noisy.mean()),
            distance_ratio_true=class_distance_ratio(x, t),
        )
    return out


def _true_known(run: Any) -> bool:
    cfg = getattr(run, "config", None) or {}
    return bool(cfg.get("true_labels_known", True))


def _load_run(run: Any) -> Any:
    if isinstance(run, (str, Path)):
        from moit_explore import runs  # noqa: PLC0415 -- only for paths

        return runs.load_run(run)
    return run


def collapse_over_epochs(
    run: Any, k: int = DEFAULT_COLLAPSE_K, *, progress: bool = False
) -> pd.DataFrame:
    """:func:`collapse_metrics` of every embedding snapshot of a run: one row per epoch.

    run: a runs.Run or its directory. Needs snapshots (``embeddings/epoch_XXXX.npz``).
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    run = _load_run(run)
    epochs = list(getattr(run, "snapshot_epochs", []))
    if not epochs:
        raise ValueError(f"run {getattr(run, 'path', run)} has no embedding snapshots; train with "
                         "--snapshot-epochs (e.g. every epoch) to follow collapse over training")
    known = _true_known(run)
    rows = []
    for epoch in tqdm(epochs, disable=not progress, desc="collapse metrics"):
        snap = run.snapshot(epoch)
        true = snap.get("labels_true") if known else None
        rows.append({"epoch": int(epoch),
                     **collapse_metrics(snap["features"], snap["labels_given"], true, k)})
    return pd.DataFrame(rows)


def knn_accuracy_table(runs: Mapping[Any, Any], k: int = DEFAULT_COLLAPSE_K) -> pd.DataFrame:
    """:func:`collapse_metrics` of each run's final embedding, one row per key of ``runs``.

    Tuple keys (e.g. ``(method, rate)``) give a MultiIndex, so ``table.loc[(m, r), col]`` works.
    """
    rows = {}
    for key, run in runs.items():
        run = _load_run(run)
        final = run.final()
        true = final.get("labels_true") if _true_known(run) else None
        rows[key] = collapse_metrics(final["features"], final["labels_given"], true, k)
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------- soft labels


def _detection_arrays(det: Any) -> dict[str, np.ndarray]:
    """soft_labels, corrected_labels, discrepancy, clean from a Detection or a dict of arrays."""
    keys = ("soft_labels", "corrected_labels", "discrepancy", "clean")
    if isinstance(det, Mapping):
        missing = [key for key in keys if key not in det]
        if missing:
            raise ValueError(f"detection arrays lack {missing}; pass a detection.Detection or a "
                             "run's final() arrays from a run with detection switched on")
        return {key: np.asarray(det[key]) for key in keys}
    if all(hasattr(det, key) for key in keys):
        return {key: np.asarray(getattr(det, key)) for key in keys}
    raise ValueError(f"expected a detection.Detection or a dict with {keys}, got "
                     f"{type(det).__name__}")


def sample_table(
    detection_or_arrays: Any,
    given: Any,
    true: Any = None,
    classes: list[str] | None = None,
) -> pd.DataFrame:
    """One row per sample: what the neighbours say about its label.

    Columns: given_label, p_given (pass-2 soft-label probability of the given label),
    corrected_label, discrepancy, clean_selected, and with ``true``: true_label, is_noisy;
    with ``classes``: given_name, corrected_name (and true_name). Index: sample index.
    """
    d = _detection_arrays(detection_or_arrays)
    soft = np.asarray(d["soft_labels"], dtype=np.float64)
    n = soft.shape[0]
    g = _labels(given, n, "given")
    if g.size and g.max() >= soft.shape[1]:
        raise ValueError(f"given labels reach {g.max()} but the soft labels have "
                         f"{soft.shape[1]} classes")
    table = pd.DataFrame({
        "given_label": g,
        "p_given": soft[np.arange(n), g],
        "corrected_label": _labels(d["corrected_labels"], n, "corrected_labels"),
        "discrepancy": np.asarray(d["discrepancy"], dtype=np.float64),
        "clean_selected": _bool(d["clean"], n, "clean"),
    })
    if true is not None:
        t = _labels(true, n, "true")
        table.insert(1, "true_label", t)
        table["is_noisy"] = g != t
    if classes is not None:
        names = np.asarray(list(classes), dtype=object)
        for col in ("given", "corrected", "true"):
            if f"{col}_label" in table:
                table[f"{col}_name"] = names[table[f"{col}_label"].to_numpy()]
    table.index.name = "sample"
    return table


def disagreement_confusion(
    given: Any, corrected: Any, num_classes: int | None = None
) -> np.ndarray:
    """Counts M[g, c] of samples with given label g whose neighbours' corrected label is c.

    (N,), (N,) -> int64 (C, C); off-diagonal mass = labels the neighbours contradict.
    """
    g = _labels(given, None, "given")
    c_ = _labels(corrected, g.shape[0], "corrected")
    c = _num_classes(num_classes, g, c_)
    return np.bincount(g * c + c_, minlength=c * c).reshape(c, c)


# --------------------------------------------------------------------------- detection quality


def detection_report(clean_pred: Any, is_noisy: Any, discrepancy: Any = None) -> dict[str, float]:
    """Quality of a clean/noisy split, the NOISY class being the positive one.

    detection.detection_metrics (precision, recall, f1, auroc, selected_frac,
    selected_noise_rate) plus average_precision of ``discrepancy`` as a noise score,
    n_selected, n_noisy and noise_rate.
    """
    from sklearn.metrics import average_precision_score  # noqa: PLC0415

    clean = _bool(clean_pred, None, "clean_pred")
    noisy = _bool(is_noisy, clean.shape[0], "is_noisy")
    report = dict(det_mod.detection_metrics(clean, noisy, discrepancy))
    ap = float("nan")
    if discrepancy is not None and 0 < noisy.sum() < noisy.size:
        ap = float(average_precision_score(noisy, np.asarray(discrepancy, dtype=np.float64)))
    report.update(average_precision=ap, n_selected=int(clean.sum()), n_noisy=int(noisy.sum()),
                  noise_rate=float(noisy.mean()) if noisy.size else float("nan"))
    return report


def _score_inputs(is_noisy: Any, discrepancy: Any) -> tuple[np.ndarray, np.ndarray]:
    noisy = _bool(is_noisy, None, "is_noisy")
    score = np.asarray(discrepancy, dtype=np.float64)
    if score.shape != noisy.shape:
        raise ValueError(f"discrepancy must have shape {noisy.shape}, got {score.shape}")
    if not 0 < noisy.sum() < noisy.size:
        raise ValueError("curves need both noisy and clean samples; is_noisy is all one value")
    return noisy, score


def pr_curve(is_noisy: Any, discrepancy: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve of ``discrepancy`` as a noise score.

    Returns (precision, recall, thresholds) as sklearn.metrics.precision_recall_curve.
    """
    from sklearn.metrics import precision_recall_curve  # noqa: PLC0415

    noisy, score = _score_inputs(is_noisy, discrepancy)
    precision, recall, thresholds = precision_recall_curve(noisy, score)
    return precision, recall, thresholds


def roc_curve(is_noisy: Any, discrepancy: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of ``discrepancy`` as a noise score: (fpr, tpr, thresholds)."""
    from sklearn.metrics import roc_curve as sk_roc_curve  # noqa: PLC0415

    noisy, score = _score_inputs(is_noisy, discrepancy)
    fpr, tpr, thresholds = sk_roc_curve(noisy, score)
    return fpr, tpr, thresholds


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, ...]:
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return precision, recall, f1


def per_class_detection(
    clean_pred: Any, is_noisy: Any, given: Any, num_classes: int | None = None
) -> pd.DataFrame:
    """Detection quality per GIVEN class: one row per class.

    Columns n, n_noisy, n_selected (marked clean), n_flagged, precision, recall, f1 (of the
    noisy class, NaN where undefined), selected_noise_rate.
    """
    clean = _bool(clean_pred, None, "clean_pred")
    noisy = _bool(is_noisy, clean.shape[0], "is_noisy")
    g = _labels(given, clean.shape[0], "given")
    c = _num_classes(num_classes, g)
    flagged = ~clean

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(g[mask], minlength=c)

    tp, fp, fn = count(flagged & noisy), count(flagged & ~noisy), count(clean & noisy)
    precision, recall, f1 = _prf(tp, fp, fn)
    n_sel = count(clean)
    with np.errstate(invalid="ignore", divide="ignore"):
        sel_noise = np.where(n_sel > 0, count(clean & noisy) / n_sel, np.nan)
    table = pd.DataFrame({
        "n": np.bincount(g, minlength=c), "n_noisy": count(noisy), "n_selected": n_sel,
        "n_flagged": count(flagged), "precision": precision, "recall": recall, "f1": f1,
        "selected_noise_rate": sel_noise,
    })
    table.index.name = "class"
    return table


def _metrics_frame(run_or_metrics: Any) -> pd.DataFrame:
    if isinstance(run_or_metrics, pd.DataFrame):
        return run_or_metrics
    run = _load_run(run_or_metrics)
    if not isinstance(getattr(run, "metrics", None), pd.DataFrame):
        raise ValueError(f"expected a runs.Run, a run directory or a metrics DataFrame, got "
                         f"{type(run_or_metrics).__name__}")
    return run.metrics


def detection_over_epochs(run: Any) -> pd.DataFrame:
    """Per-epoch detection metrics from a run's metrics.jsonl (det_* columns, prefix dropped).

    run: a runs.Run, its directory or its metrics DataFrame. Epochs without detection are left
    out (e.g. warm-up epochs before the first selection).
    """
    m = _metrics_frame(run)
    cols = [f"det_{key}" for key in DETECTION_KEYS if f"det_{key}" in m]
    if not cols:
        raise ValueError("these metrics hold no det_* columns: the run trained without detection "
                         "(detection runs for method 'moit'); train with it to see these curves")
    out = m[["epoch", *cols]].dropna(subset=cols, how="all")
    return out.rename(columns={c: c[4:] for c in cols}).reset_index(drop=True)


def continued_metrics(runs: Mapping[Any, Any]) -> dict[Any, pd.DataFrame]:
    """name -> a copy of each run's metrics, on one epoch axis: a MOIT+ run's epochs are shifted
    to continue after the last epoch of its base MOIT run, when that run is in ``runs`` too.

    runs: name -> runs.Run or run directory (a bare metrics DataFrame is taken as it is).
    """
    loaded = {name: (r if isinstance(r, pd.DataFrame) else _load_run(r))
              for name, r in runs.items()}
    last_epoch: dict[Path, int] = {}
    for r in loaded.values():
        m = getattr(r, "metrics", None)
        if getattr(r, "path", None) is not None and isinstance(m, pd.DataFrame) and len(m):
            last_epoch[Path(r.path).resolve()] = int(m["epoch"].max())
    out = {}
    for name, r in loaded.items():
        m = _metrics_frame(r).copy()
        config = getattr(r, "config", None) or {}
        if config.get("method") == "moit+" and len(m) and getattr(r, "path", None):
            # train.finetune always writes MOIT+ into a folder inside its base run
            m["epoch"] += last_epoch.get(Path(r.path).resolve().parent, 0)
        out[name] = m
    return out


def summarize_runs(runs: Mapping[Any, Any]) -> pd.DataFrame:
    """One row per run: method, epochs, last/best test accuracy, last train accuracies and
    detection numbers (when present), realised noise rate and total training time."""
    rows = {}
    for name, run in runs.items():
        run = _load_run(run)
        m = _metrics_frame(run)
        row: dict[str, Any] = {
            "method": getattr(run, "method", None),
            "epochs": len(m),
        }
        for col in ("test_acc", "train_acc_given", "train_acc_true", "det_precision",
                    "det_recall", "det_f1", "det_selected_noise_rate"):
            if col in m and m[col].notna().any():
                row[f"{col}_last"] = float(m[col].dropna().iloc[-1])
        if "test_acc" in m and m["test_acc"].notna().any():
            row["test_acc_best"] = float(m["test_acc"].max())
        noise = getattr(run, "noise", None)
        if noise is not None:
            row["noise_rate"] = float(np.mean(noise.is_noisy))
        if "time_s" in m:
            row["time_s"] = float(m["time_s"].sum())
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------- label issues


def _swap_if_features_first(labels: Any, features: Any) -> tuple[Any, Any]:
    """Accept ``(features, labels)`` as well as cleanlab's ``(labels, ...)`` order: the arrays'
    dimensions tell them apart (labels are 1-D, features 2-D)."""
    if labels is not None and features is not None:
        if np.ndim(labels) == 2 and np.ndim(features) == 1:
            return features, labels
    return labels, features


def _issue_arrays(
    labels: Any,
    features: Any,
    num_classes: int | None,
    run: Any,
    detection: Any,
    k: int | None,
    balance: str,
) -> dict[str, Any]:
    """Given/suggested labels, label quality, discrepancy, flags (and true labels if known)."""
    labels, features = _swap_if_features_first(labels, features)
    true = None
    if run is not None:
        run = _load_run(run)
        final = run.final()
        if "soft_labels" not in final:
            raise ValueError(f"run {getattr(run, 'path', '')} has no detection in final.npz "
                             "(trained without detection); pass its features and labels instead: "
                             "find_label_issues(labels, features)")
        detection = final
        if labels is None:
            labels = final["labels_given"]
        if _true_known(run) and "labels_true" in final:
            true = _labels(final["labels_true"], None, "labels_true")
    if detection is None:
        if labels is None or features is None:
            raise ValueError("find_label_issues needs labels and features (N, D), or run=, or "
                             "detection= (a detection.Detection with its labels)")
        x = _features(features)
        y = _labels(labels, x.shape[0])
        c = _num_classes(num_classes, y)
        k = default_k(y) if k is None else k
        detection = det_mod.detect_noise(x, y, c, k=k, balance=balance)
    d = _detection_arrays(detection)
    soft = np.asarray(d["soft_labels"], dtype=np.float64)
    n, c = soft.shape
    if labels is None:
        raise ValueError("pass the given labels (N,) that the detection was computed with")
    y = _labels(labels, n)
    if num_classes is not None and int(num_classes) != c:
        raise ValueError(f"num_classes={num_classes} but the detection has {c} classes")
    if y.size and y.max() >= c:
        raise ValueError(f"labels reach {y.max()} but the detection has {c} classes")
    return {
        "given": y,
        "suggested": _labels(d["corrected_labels"], n, "corrected_labels"),
        "quality": soft[np.arange(n), y],
        "discrepancy": np.asarray(d["discrepancy"], dtype=np.float64),
        "flagged": ~_bool(d["clean"], n, "clean"),
        "true": true,
        "num_classes": c,
    }


def _severity_order(quality: np.ndarray, discrepancy: np.ndarray, by: str) -> np.ndarray:
    """All indices, worst first. Ties: the other score, then the sample index (deterministic)."""
    idx = np.arange(quality.shape[0])
    if by == "label_quality":
        return np.lexsort((idx, -discrepancy, quality))
    return np.lexsort((idx, quality, -discrepancy))


def find_label_issues(
    labels: Any = None,
    features: Any = None,
    num_classes: int | None = None,
    *,
    run: Any = None,
    detection: Any = None,
    k: int | None = None,
    balance: str = "median",
    return_indices_ranked_by: str | None = None,
    class_names: list[str] | None = None,
    paths: list[str] | None = None,
) -> np.ndarray:
    """Samples whose given label the embedding's neighbourhood contradicts (cleanlab style).

    Sources, in order of precedence: ``run`` (a runs.Run or its directory: its final
    detection), ``detection`` (a detection.Detection or dict of arrays, with ``labels``), or
    ``labels`` (N,) + ``features`` (N, D): detection.detect_noise runs here with ``k``
    (None: :func:`default_k`, 250 for large classes) and ``balance``. ``features`` first
    (``find_label_issues(features, labels, C)``) is accepted too. A label issue is a sample
    NOT selected as clean.

    Returns a bool mask (N,), or with ``return_indices_ranked_by`` ("label_quality":
    ascending pass-2 probability of the given label; "discrepancy": descending) the indices of
    the issues only, worst first, ties broken by the other score and then by index.
    ``class_names`` and ``paths`` are only used by :func:`label_issues_table`.
    """
    del class_names, paths  # same signature as label_issues_table
    if return_indices_ranked_by is not None and return_indices_ranked_by not in RANKINGS:
        raise ValueError(f"return_indices_ranked_by={return_indices_ranked_by!r} is not valid; "
                         f"choose None, {RANKINGS[0]!r} or {RANKINGS[1]!r}")
    a = _issue_arrays(labels, features, num_classes, run, detection, k, balance)
    if return_indices_ranked_by is None:
        return a["flagged"]
    order = _severity_order(a["quality"], a["discrepancy"], return_indices_ranked_by)
    return order[a["flagged"][order]]


def label_issues_table(
    labels: Any = None,
    features: Any = None,
    num_classes: int | None = None,
    *,
    run: Any = None,
    detection: Any = None,
    k: int | None = None,
    balance: str = "median",
    class_names: list[str] | None = None,
    paths: list[str] | None = None,
    bundle: Any = None,
    sort: bool = True,
) -> pd.DataFrame:
    """Per-sample label-issue table, worst first (``sort``), indexed by sample index.

    Columns: is_label_issue, label_quality (in [0, 1], lower is worse: pass-2 soft-label
    probability of the given label), given_label, suggested_label (the neighbours' corrected
    label), discrepancy; given_name / suggested_name with ``class_names``; path with ``paths``;
    true_label / is_noisy when true labels are known (a run on a benchmark data set).
    ``bundle`` (a datasets.DatasetBundle) supplies labels, class names and paths when not given.
    Same sources as :func:`find_label_issues`.
    """
    if bundle is not None:
        if labels is None and run is None:
            labels = bundle.train_labels
        class_names = class_names if class_names is not None else list(bundle.classes)
        paths = paths if paths is not None else getattr(bundle, "train_paths", None)
    a = _issue_arrays(labels, features, num_classes, run, detection, k, balance)
    n = a["given"].shape[0]
    table = pd.DataFrame({
        "is_label_issue": a["flagged"],
        "label_quality": a["quality"],
        "given_label": a["given"],
        "suggested_label": a["suggested"],
    })
    if class_names is not None:
        names = np.asarray(list(class_names), dtype=object)
        if len(names) < a["num_classes"]:
            raise ValueError(f"class_names has {len(names)} names for {a['num_classes']} classes")
        table["given_name"] = names[a["given"]]
        table["suggested_name"] = names[a["suggested"]]
    if paths is not None:
        if len(paths) != n:
            raise ValueError(f"paths has {len(paths)} entries for {n} samples; pass one per sample")
        table["path"] = [str(p) for p in paths]
    table["discrepancy"] = a["discrepancy"]
    if a["true"] is not None:
        table["true_label"] = a["true"]
        table["is_noisy"] = a["given"] != a["true"]
    table.index.name = "sample"
    if sort:
        table = table.iloc[_severity_order(a["quality"], a["discrepancy"], "label_quality")]
    return table


def export_label_issues(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a :func:`label_issues_table` to CSV (sample index as the first column).

    Read it back with ``pandas.read_csv(path, index_col="sample")``.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"expected the DataFrame of label_issues_table, got {type(df).__name__}")
    path = Path(path).expanduser()
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    out = df.copy()
    out.index.name = out.index.name or "sample"
    out.to_csv(path, index=True)
    return path


# --------------------------------------------------------------------------- projection


@dataclass
class Projection:
    """2-D picture of an embedding.

    coords: float32 (n, 2); method: "umap" or "pca" (what was actually used: "pca" when
    umap-learn is missing); indices: int64 (n,) rows of the features shown (a subsample), or
    None when all N rows are.
    """

    coords: np.ndarray
    method: str
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.coords.shape[0])


def _pca2(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA  # noqa: PLC0415

    if x.shape[0] < 3 or x.shape[1] < 2:  # too little for PCA: centred raw coordinates
        out = np.zeros((x.shape[0], 2), dtype=np.float32)
        d = min(2, x.shape[1])
        out[:, :d] = (x - x.mean(axis=0))[:, :d]
        return out
    return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)


def _umap2(x: np.ndarray, seed: int, n_neighbors: int) -> np.ndarray:
    import umap  # noqa: PLC0415 -- optional, slow to import (numba)

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, x.shape[0] - 1),
                        metric="cosine", random_state=seed, init="spectral", n_jobs=1)
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def _cache_key(x: np.ndarray, method: str, seed: int, n_neighbors: int,
               indices: np.ndarray | None) -> str:
    h = hashlib.sha1()
    h.update(f"{method}|{seed}|{n_neighbors}|{x.shape}|{x.dtype}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    if indices is not None:
        h.update(indices.tobytes())
    return h.hexdigest()[:20]


def embedding_projection(
    features: Any,
    method: str = "umap",
    cache_path: str | Path | None = None,
    seed: int = 0,
    *,
    subsample: int | None = None,
    n_neighbors: int = 15,
) -> Projection:
    """Project features (N, D) to 2-D for a scatter plot: -> :class:`Projection`.

    method: "umap" (umap-learn, cosine metric; imported lazily) or "pca" (rows L2-normalised,
    then scikit-learn PCA). Without umap-learn "umap" falls back to PCA with a warning, and
    the returned ``method`` says "pca". subsample: project a seeded random subset of that many
    rows (``indices`` says which). cache_path: a folder (or a ``.npz`` file) where the result is
    stored, keyed by a hash of the features and settings; a later call with the same inputs
    loads it instead of recomputing.
    """
    if method not in ("umap", "pca"):
        raise ValueError(f"method={method!r} is not valid; choose 'umap' or 'pca'")
    x = _features(features)
    indices = None
    if subsample is not None and subsample < x.shape[0]:
        if subsample < 2:
            raise ValueError(f"subsample must be >= 2 (or None for all rows), got {subsample}")
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(x.shape[0], size=subsample, replace=False)).astype(np.int64)
        x = x[indices]
    if method == "umap":
        try:
            import umap  # noqa: F401, PLC0415
        except ImportError:
            warnings.warn("umap-learn is not installed, so the projection uses PCA instead "
                          "(`pip install umap-learn` for UMAP)", RuntimeWarning, stacklevel=2)
            method = "pca"
    key = _cache_key(x, method, seed, n_neighbors, indices)
    cache_file = None
    if cache_path is not None:
        cache_path = Path(cache_path).expanduser()
        if cache_path.suffix == ".npz":
            cache_file = cache_path
        else:
            cache_file = cache_path / f"projection_{method}_{key}.npz"
        if cache_file.is_file():
            with np.load(cache_file, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    idx = z["indices"] if z["indices"].size or indices is not None else None
                    return Projection(z["coords"], str(z["method"]), idx)
    xn = _normalize(x)
    coords = _umap2(xn, seed, n_neighbors) if method == "umap" else _pca2(xn, seed)
    proj = Projection(coords, method, indices)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + ".tmp.npz")
        np.savez(tmp, coords=coords, method=np.array(method), key=np.array(key),
                 indices=indices if indices is not None else np.zeros(0, dtype=np.int64))
        tmp.replace(cache_file)
    return proj
