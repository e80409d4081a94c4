"""Embedding collapse: does the embedding memorise the noisy labels?

kNN accuracy (:func:`knn_predict`, :func:`knn_accuracy`), where the noisy samples sit
(:func:`noisy_neighbourhood`), how tight the classes are (:func:`class_distance_ratio`), all of
them from one neighbour search (:func:`collapse_metrics`), over a run's snapshots
(:func:`collapse_over_epochs`) and across runs (:func:`knn_accuracy_table`).

The neighbour search and the vote are the detection's
(:func:`~moit_explore.maths.neighbors.knn_search`, :func:`detection.majority_vote`). k: a run's
own k where a run is at hand, else
:func:`validation.default_k` of the labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import normalize
from tqdm.auto import tqdm

from moit_explore.maths import detection
from moit_explore.maths.neighbors import Neighbors, knn_search
from moit_explore.maths.validation import (
    check_features,
    check_labels,
    check_num_classes,
    resolve_k,
)
from moit_explore.training import runs

__all__ = [
    "class_distance_ratio",
    "collapse_metrics",
    "collapse_over_epochs",
    "knn_accuracy",
    "knn_accuracy_table",
    "knn_predict",
    "noisy_neighbourhood",
    "run_collapse_metrics",
]


def _vote(x: np.ndarray, y: np.ndarray, c: int, k: int | None, queries: np.ndarray | None,
          neighbors: Neighbors | None = None) -> np.ndarray:
    """Majority given label of the k nearest rows of ``x`` (checked arrays): leave-one-out
    without ``queries``; ``neighbors`` (of ``x`` itself) skips the search when wide enough."""
    n = x.shape[0]
    k = resolve_k(k, y, n, self_excluded=queries is None, samples="training samples")
    if queries is not None:
        neighbors = knn_search(x, k, queries=queries, backend="torch")
    elif neighbors is None or neighbors.k_max < k:
        neighbors = knn_search(x, k, backend="torch")
    return detection.majority_vote(neighbors.indices, y, c, k)


def knn_predict(
    train_feats: Any,
    train_labels: Any,
    query_feats: Any = None,
    k: int | None = None,
    *,
    num_classes: int | None = None,
) -> np.ndarray:
    """Majority vote of the k most cosine-similar training samples: -> int64 (Q,).

    query_feats None: leave-one-out on the training set (each sample's own index excluded).
    Plain (unweighted) votes; ties go to the lowest class index. k None:
    validation.default_k of the labels.
    """
    x = check_features(train_feats, "train_feats")
    y = check_labels(train_labels, x.shape[0], name="train_labels")
    q = None if query_feats is None else check_features(query_feats, "test_feats")
    if q is not None and q.shape[1] != x.shape[1]:
        raise ValueError(f"test_feats have {q.shape[1]} dimensions but train_feats "
                         f"{x.shape[1]}; embed both with the same model")
    return _vote(x, y, check_num_classes(num_classes, y), k, q)


def knn_accuracy(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any = None,
    test_labels: Any = None,
    k: int | None = None,
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
    pred = knn_predict(train_feats, train_labels, test_feats, k)
    if test_feats is None:
        ref = check_labels(train_labels if target is None else target, pred.shape[0],
                           name="target")
    else:
        ref = check_labels(test_labels, pred.shape[0], name="test_labels")
    return float(np.mean(pred == ref)) if ref.size else float("nan")


def class_distance_ratio(features: Any, labels: Any) -> float:
    """Mean within-class over mean between-class cosine distance (1 - cosine similarity).

    Averages over all pairs of distinct samples, computed from per-class sums of the
    normalised features in O(N D + C D) instead of O(N^2 D). Small = tight, separated classes;
    1 = no class structure. NaN when there is no within- or between-class pair.
    """
    x = normalize(check_features(features).astype(np.float64))
    y = check_labels(labels, x.shape[0])
    c = check_num_classes(None, y)
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


def _noisy_agreement(pred: np.ndarray, given: np.ndarray, true: np.ndarray) -> dict[str, float]:
    noisy = given != true
    n = int(noisy.sum())
    nan = float("nan")
    return {
        "noisy_agree_given": float(np.mean(pred[noisy] == given[noisy])) if n else nan,
        "noisy_agree_true": float(np.mean(pred[noisy] == true[noisy])) if n else nan,
        "n_noisy": n,
    }


def noisy_neighbourhood(
    features: Any,
    given: Any,
    true: Any,
    k: int | None = None,
    *,
    neighbors: Neighbors | None = None,
) -> dict[str, float]:
    """Where do the NOISY samples sit? The memorisation (collapse) signal.

    For every noisy sample (given != true), the majority GIVEN label among its k nearest other
    samples. Returns agree_given (fraction whose neighbourhood backs the wrong given label:
    the embedding memorised it), agree_true (fraction whose neighbourhood says the true class:
    the embedding is robust) and n_noisy. Fractions are NaN without noisy samples.
    ``neighbors`` (knn_search of ``features``) skips the search.
    """
    x = check_features(features)
    g = check_labels(given, x.shape[0], name="given")
    t = check_labels(true, x.shape[0], name="true")
    pred = _vote(x, g, check_num_classes(None, g, t), k, None, neighbors)
    out = _noisy_agreement(pred, g, t)
    return {"agree_given": out["noisy_agree_given"], "agree_true": out["noisy_agree_true"],
            "n_noisy": out["n_noisy"]}


def collapse_metrics(
    features: Any, given: Any, true: Any = None, k: int | None = None
) -> dict[str, float]:
    """Embedding-collapse numbers from one kNN search (leave-one-out, votes of given labels).

    knn_acc_given: kNN prediction == given label; distance_ratio_given: class_distance_ratio
    by given labels. With ``true``: knn_acc_true (prediction == true label),
    noisy_agree_given / noisy_agree_true (:func:`noisy_neighbourhood`), noise_rate and
    distance_ratio_true. k None: validation.default_k of the given labels.
    """
    x = check_features(features)
    g = check_labels(given, x.shape[0], name="given")
    t = None if true is None else check_labels(true, x.shape[0], name="true")
    pred = _vote(x, g, check_num_classes(None, g, t), k, None)
    out: dict[str, float] = {
        "knn_acc_given": float(np.mean(pred == g)),
        "distance_ratio_given": class_distance_ratio(x, g),
    }
    if t is not None:
        agreement = _noisy_agreement(pred, g, t)
        out.update(
            knn_acc_true=float(np.mean(pred == t)),
            noisy_agree_given=agreement["noisy_agree_given"],
            noisy_agree_true=agreement["noisy_agree_true"],
            noise_rate=float(np.mean(g != t)),
            distance_ratio_true=class_distance_ratio(x, t),
        )
    return out


def run_collapse_metrics(
    run: runs.Run, arrays: Mapping[str, np.ndarray], k: int | None = None
) -> dict[str, float]:
    """:func:`collapse_metrics` of a run's embedding ``arrays`` (``run.snapshot(epoch)`` or
    ``run.final()``): with the run's k unless ``k`` is given (at most N - 1 of a small
    snapshot), and its true labels when they are known."""
    true = arrays.get("labels_true") if run.true_labels_known else None
    k = run.k if k is None else k
    if k is not None:  # a small snapshot cannot hold more neighbours than its samples
        k = min(k, len(arrays["labels_given"]) - 1)
    return collapse_metrics(arrays["features"], arrays["labels_given"], true, k)


def collapse_over_epochs(
    run: Any, k: int | None = None, *, progress: bool = False
) -> pd.DataFrame:
    """:func:`collapse_metrics` of every embedding snapshot of a run: one row per epoch.

    run: a runs.Run or its directory. Needs snapshots (``embeddings/epoch_XXXX.npz``).
    k None: the run's own k.
    """
    run = runs.load_run(run)
    epochs = list(run.snapshot_epochs)
    if not epochs:
        raise ValueError(f"run {run.path} has no embedding snapshots; train with "
                         "--snapshot-epochs (e.g. every epoch) to follow collapse over training")
    rows = [{"epoch": int(epoch), **run_collapse_metrics(run, run.snapshot(epoch), k)}
            for epoch in tqdm(epochs, disable=not progress, desc="collapse metrics")]
    return pd.DataFrame(rows)


def knn_accuracy_table(runs_by_key: Mapping[Any, Any], k: int | None = None) -> pd.DataFrame:
    """:func:`collapse_metrics` of each run's final embedding, one row per key of
    ``runs_by_key`` (runs.Run or run directories). k None: each run's own k.

    Tuple keys (e.g. ``(method, rate)``) give a MultiIndex, so ``table.loc[(m, r), col]`` works.
    """
    rows = {}
    for key, run in runs_by_key.items():
        run = runs.load_run(run)
        rows[key] = run_collapse_metrics(run, run.final(), k)
    return pd.DataFrame.from_dict(rows, orient="index")
