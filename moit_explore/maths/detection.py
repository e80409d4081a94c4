"""Label-noise detection by kNN soft labels (spec §3).

For every sample the ``k`` most cosine-similar OTHER samples vote with their labels:

1. pass 1: ``p1_i(c)`` = fraction of the neighbours whose GIVEN label is ``c``;
   corrected label ``c1_i = argmax_c p1_i(c)`` (ties: the lowest class index);
2. pass 2: ``p2_i(c)`` = fraction of the same neighbours whose CORRECTED label ``c1_j`` is ``c``;
3. discrepancy ``d_i = -log(clip(p2_i(y_i), 0.01, 0.99))``;
4. class-balanced selection (:func:`select_clean`): agreeing samples (``argmax p2_i == y_i``)
   are counted per class, ``n_sel`` = the (lower) median of those counts, and per class the
   ``n_sel`` samples with the smallest ``d`` are marked clean.

Inputs and outputs are NumPy arrays. Features may also be a torch tensor; a CUDA tensor is
searched and scored on its GPU and only the results come back as NumPy. The given labels are
never written to (the release could overwrite them through a tensor sharing NumPy memory).

The neighbour search itself (exact or approximate, torch or faiss) is
:mod:`moit_explore.maths.neighbors`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

# knn_tensors is the search on already-checked arguments
from moit_explore.maths.neighbors import Neighbors, knn_tensors
from moit_explore.maths.validation import (
    BACKEND_CHOICES,
    BALANCE_CHOICES,
    DEFAULT_BALANCE,
    check_choice,
    check_features,
    check_k,
    check_labels,
    check_mask,
    check_num_classes,
    resolve_k,
)

__all__ = [
    "Detection",
    "detect_from_neighbors",
    "detect_noise",
    "detection_counts",
    "detection_metrics",
    "majority_vote",
    "prf",
    "select_clean",
    "soft_labels_from_neighbors",
]

CLIP_LOW, CLIP_HIGH = 0.01, 0.99


@dataclass
class Detection:
    """Result of the two-pass detection for one ``k`` and balance criterion.

    soft_labels: float32 (N, C), pass-2 soft labels p2.
    corrected_labels: int64 (N,), argmax of pass 1 (c1).
    discrepancy: float32 (N,), -log(clip(p2[i, y_i], 0.01, 0.99)).
    clean: bool (N,), the selected clean samples.
    first_pass_soft_labels: float32 (N, C), p1.
    agree: bool (N,), argmax p2 == given label (the candidates counted by the balancing).
    """

    soft_labels: np.ndarray
    corrected_labels: np.ndarray
    discrepancy: np.ndarray
    clean: np.ndarray
    k: int
    balance: str
    first_pass_soft_labels: np.ndarray
    agree: np.ndarray | None = None


# --------------------------------------------------------------------------- checks


def _check_neighbor_indices(indices: Any) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"neighbor_indices must be a 2-D integer array (N, k_max), got {idx.dtype} {idx.shape}"
        )
    return idx.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- soft labels


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _count_numpy(
    idx: np.ndarray, labels: np.ndarray, num_classes: int, k: int
) -> np.ndarray:
    """Per-row label counts of the first k neighbours: (N, k_max) -> (N, C).

    One bincount over ``row * C + label`` per block of rows. Blocks keep the gathered labels
    in cache and run on a few threads (NumPy releases the GIL in take/bincount): at N=60,000,
    k=250 this is several times faster than a single whole-array bincount.
    """
    n = idx.shape[0]
    c = num_classes
    out = np.empty((n, c), dtype=np.int64)
    if n == 0:
        return out
    n_labels = labels.shape[0]
    rows_per_block = max(64, 2**18 // k)
    starts = range(0, n, rows_per_block)

    def block(lo: int) -> None:
        hi = min(n, lo + rows_per_block)
        nb = idx[lo:hi, :k]
        if nb.min() < 0 or nb.max() >= n_labels:
            raise ValueError(
                f"neighbour indices must lie in [0, {n_labels - 1}] (one per labelled sample); "
                f"found values in [{nb.min()}, {nb.max()}]"
            )
        flat = np.take(labels, nb)
        flat += (np.arange(hi - lo, dtype=np.int64) * c)[:, None]
        out[lo:hi] = np.bincount(flat.ravel(), minlength=(hi - lo) * c).reshape(-1, c)

    if len(starts) == 1:
        block(0)
    else:
        with ThreadPoolExecutor(min(_workers(), len(starts))) as pool:
            list(pool.map(block, starts))
    return out


def _label_counts(
    idx: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    k: int,
) -> torch.Tensor:
    """Counts (int64) of the first k neighbours' labels, (N, k_max) -> (N, C)."""
    if idx.device.type == "cpu":
        return torch.from_numpy(_count_numpy(idx.numpy(), labels.numpy(), num_classes, k))
    lab = labels[idx[:, :k]]
    out = torch.zeros(idx.shape[0], num_classes, dtype=torch.int64, device=idx.device)
    return out.scatter_add_(1, lab, torch.ones_like(lab))


def soft_labels_from_neighbors(
    neighbor_indices: Any,
    labels: Any,
    num_classes: int,
    k: int | None = None,
) -> np.ndarray:
    """Fraction of the first ``k`` neighbours carrying each label: (N, k_max), (N,) -> (N, C).

    k: defaults to all k_max columns. Returns float32 rows summing to 1.
    """
    idx = _check_neighbor_indices(neighbor_indices)
    c = check_num_classes(num_classes)
    n, k_max = idx.shape
    k = k_max if k is None else check_k(k, n, k_max=k_max)
    y = check_labels(labels, n, c)
    counts = _label_counts(torch.from_numpy(idx), torch.from_numpy(y), c, k)
    return (counts.float() / k).numpy()



def majority_vote(
    neighbor_indices: Any, labels: Any, num_classes: int, k: int | None = None
) -> np.ndarray:
    """The most frequent label among each row's first ``k`` neighbours (default: all k_max):
    (Q, k_max) indices into ``labels`` (N,) -> int64 (Q,). Ties go to the lowest class index
    (the pass-1 corrected label of the detection is this vote)."""
    idx = _check_neighbor_indices(neighbor_indices)
    c = check_num_classes(num_classes)
    k = idx.shape[1] if k is None else check_k(k, idx.shape[0], k_max=idx.shape[1])
    y = check_labels(labels, None, c)
    return _label_counts(torch.from_numpy(idx), torch.from_numpy(y), c, k).argmax(dim=1).numpy()


# --------------------------------------------------------------------------- selection


def _select_clean_torch(
    discrepancy: torch.Tensor,
    labels: torch.Tensor,
    agree: torch.Tensor,
    num_classes: int,
    balance: str,
) -> torch.Tensor:
    """The class-balanced selection on tensors of any device (the one implementation)."""
    if balance == "none":
        return agree.clone()
    n_agree = torch.bincount(labels[agree], minlength=num_classes)  # over ALL classes
    if balance == "median":
        # torch.median semantics: for an even count the LOWER of the two middle values
        n_sel = torch.sort(n_agree).values[(num_classes - 1) // 2]
    elif balance == "min":
        n_sel = n_agree.min()
    else:
        n_sel = n_agree.max()
    # order by (label, d, index): stable sort by d, then stable sort by label
    by_d = torch.sort(discrepancy, stable=True).indices
    order = by_d[torch.sort(labels[by_d], stable=True).indices]
    class_size = torch.bincount(labels, minlength=num_classes)
    class_start = torch.cumsum(class_size, 0) - class_size
    rank = torch.arange(labels.shape[0], device=labels.device) - class_start[labels[order]]
    clean = torch.zeros_like(agree)
    clean[order] = rank < n_sel  # the rank caps n_sel at the class size by itself
    return clean


def select_clean(
    discrepancy: Any, labels: Any, agree: Any, num_classes: int, balance: str = DEFAULT_BALANCE
) -> np.ndarray:
    """Class-balanced clean selection (spec §3.6): (N,), (N,), bool (N,) -> bool (N,).

    n_c = number of agreeing samples with given label c, over all ``num_classes`` classes
    (a class without samples counts as 0). n_sel = lower median of n_c ("median", as
    torch.median), min ("min") or max ("max"); each class keeps its min(n_sel, |class|)
    samples of smallest discrepancy, ties broken by dataset index. "none": clean = agree.
    """
    balance = check_choice("balance", balance, BALANCE_CHOICES)
    c = check_num_classes(num_classes)
    d = np.asarray(discrepancy, dtype=np.float32)
    if d.ndim != 1:
        raise ValueError(f"discrepancy must be 1-D (N,), got shape {d.shape}")
    n = d.shape[0]
    y = check_labels(labels, n, c)
    a = np.asarray(agree)
    if a.shape != (n,) or a.dtype != np.bool_:
        raise ValueError(f"agree must be a bool array of shape ({n},), got {a.dtype} {a.shape}")
    clean = _select_clean_torch(
        torch.from_numpy(d), torch.from_numpy(y), torch.from_numpy(a.copy()), c, balance
    )
    return clean.numpy()


# --------------------------------------------------------------------------- detection


def _two_pass(
    idx: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    k: int,
    balance: str,
) -> Detection:
    """Both passes and the selection on ``idx``'s device; returns NumPy arrays."""
    counts1 = _label_counts(idx, labels, num_classes, k)
    corrected = counts1.argmax(dim=1)  # first maximum: ties go to the lowest class index
    counts2 = _label_counts(idx, corrected, num_classes, k)
    p1 = counts1.float() / k
    p2 = counts2.float() / k
    p_given = p2.gather(1, labels[:, None]).squeeze(1)
    discrepancy = -torch.log(p_given.clamp(CLIP_LOW, CLIP_HIGH))
    agree = counts2.argmax(dim=1) == labels
    clean = _select_clean_torch(discrepancy, labels, agree, num_classes, balance)
    return Detection(
        soft_labels=p2.cpu().numpy(),
        corrected_labels=corrected.cpu().numpy(),
        discrepancy=discrepancy.cpu().numpy(),
        clean=clean.cpu().numpy(),
        k=k,
        balance=balance,
        first_pass_soft_labels=p1.cpu().numpy(),
        agree=agree.cpu().numpy(),
    )


def _checked_detection_args(
    labels: Any, n: int, num_classes: Any, k: Any, balance: Any, k_max: int | None = None,
) -> tuple[np.ndarray, int, int]:
    """The checks both detection entry points share: (labels copy, num_classes, k)."""
    check_choice("balance", balance, BALANCE_CHOICES)
    c = check_num_classes(num_classes)
    y = check_labels(labels, n, c)
    return y, c, resolve_k(k, y, n, k_max=k_max)


def detect_from_neighbors(
    neighbors: Neighbors, labels: Any, num_classes: int, k: int | None = None,
    balance: str = DEFAULT_BALANCE,
) -> Detection:
    """Two-pass detection from precomputed neighbours, using their first ``k`` columns.

    Cheap enough to re-run per ``k`` (a k slider): one search at k_max, then this for any
    k <= k_max (None: validation.default_k of the labels, within k_max). The given labels are
    read, never modified.
    """
    idx = _check_neighbor_indices(neighbors.indices)
    y, c, k = _checked_detection_args(labels, idx.shape[0], num_classes, k, balance,
                                      k_max=idx.shape[1])
    return _two_pass(torch.from_numpy(idx), torch.from_numpy(y), c, k, balance)


def detect_noise(
    features: Any, labels: Any, num_classes: int, *,
    k: int | None = None,
    balance: str = DEFAULT_BALANCE,
    backend: str = "auto",
    progress: bool = False,
) -> Detection:
    """Spec §3 detection: kNN search on ``features`` (N, d), then the two passes and the
    selection (as :func:`detect_from_neighbors`, which skips the search).

    k: neighbours (None: validation.default_k of the labels; a run's detection uses its
    config's k). A CUDA tensor of features is searched and scored entirely on its GPU. Labels
    (N,) in [0, num_classes) are never modified.
    """
    x = check_features(features, keep_tensor=True)
    n = int(x.shape[0])
    y, c, k = _checked_detection_args(labels, n, num_classes, k, balance)
    check_choice("backend", backend, BACKEND_CHOICES)
    idx, _ = knn_tensors(x, k, backend, None, progress)
    return _two_pass(idx, torch.from_numpy(y).to(idx.device), c, k, balance)


# --------------------------------------------------------------------------- evaluation


def prf(tp: Any, fp: Any, fn: Any) -> tuple[Any, Any, Any]:
    """Precision, recall and F1 from true-positive, false-positive and false-negative counts
    (scalars or arrays, e.g. per class); NaN where a ratio is undefined (0 / 0)."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    if precision.ndim == 0:
        return float(precision), float(recall), float(f1)
    return precision, recall, f1


def detection_counts(clean: Any, is_noisy: Any) -> dict[str, int]:
    """The confusion counts of a clean selection as a detector of the NOISY samples (a sample
    not selected as clean is predicted noisy): tp, fp, fn, tn."""
    c = check_mask(clean, None, "clean")
    noisy = check_mask(is_noisy, c.shape[0], "is_noisy")
    issue = ~c
    tp = int(np.count_nonzero(issue & noisy))
    fp = int(np.count_nonzero(issue)) - tp
    fn = int(np.count_nonzero(noisy)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": c.size - tp - fp - fn}


def detection_metrics(clean: Any, is_noisy: Any, discrepancy: Any = None) -> dict[str, float]:
    """How well a clean selection finds the NOISY samples (predicted noisy = ~clean).

    Returns precision, recall, f1 (noisy class, :func:`prf`; NaN when undefined),
    selected_frac (fraction selected as clean), selected_noise_rate (fraction of noisy among
    those selected as clean) and auroc of ``discrepancy`` as a noise score (NaN without it or
    when only one class is present).
    """
    counts = detection_counts(clean, is_noisy)
    noisy = np.asarray(is_noisy, dtype=bool)
    precision, recall, f1 = prf(counts["tp"], counts["fp"], counts["fn"])
    auroc = float("nan")
    if discrepancy is not None:
        score = np.asarray(discrepancy, dtype=np.float64)
        if score.shape != noisy.shape:
            raise ValueError(f"discrepancy must have shape {noisy.shape}, got {score.shape}")
        if 0 < noisy.sum() < noisy.size:
            auroc = float(roc_auc_score(noisy, score))
    n = noisy.size
    n_sel = counts["fn"] + counts["tn"]
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": auroc,
        "selected_frac": n_sel / n if n else float("nan"),
        "selected_noise_rate": counts["fn"] / n_sel if n_sel else float("nan"),
    }
