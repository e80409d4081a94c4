"""Argument checks of the package's public functions, and the one default of the kNN size k.

Public functions check what a caller hands them once, on entry, with these functions; the
internal helpers they call trust their arguments. Each check returns the value in the form the
code uses (an int, an int64 copy of labels, a float32 feature array), or raises ValueError
naming the argument and the fix.

k (the neighbours of the kNN detection and of the collapse measures): where a run is at hand,
its own ``k`` (``runs.Run.k``, from its config.json); otherwise :func:`default_k`.

Light on purpose: NumPy only, so that ``config`` can use it without importing torch; a torch
tensor is recognised by its methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "BACKEND_CHOICES",
    "BALANCE_CHOICES",
    "DEFAULT_BALANCE",
    "DEFAULT_K",
    "check_choice",
    "check_features",
    "check_float",
    "check_int",
    "check_k",
    "check_labels",
    "check_mask",
    "check_num_classes",
    "default_k",
    "k_within_classes",
    "median_class_size",
    "resolve_k",
]

BALANCE_CHOICES = ("median", "min", "max", "none")
# the spec's class balancing of the clean selection (§3.6): the median class count
DEFAULT_BALANCE = "median"
BACKEND_CHOICES = ("auto", "torch", "faiss", "faiss-ivf")
# the paper's k (spec §5): 5 % of a CIFAR-10 class of 5000 images
DEFAULT_K = 250


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "is_floating_point")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return value


def check_int(name: str, value: Any, low: int | None = None, *,
              allow_none: bool = False) -> int | None:
    """An integer (not a bool) >= ``low``; None passes when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite number in the interval given by ``low`` / ``high`` (open ends when asked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if math.isinf(value):  # no setting of this package means anything at infinity
        raise ValueError(f"{name} must be a finite number, got {value}")
    lo_bad = low is not None and (value <= low if low_open else value < low)
    hi_bad = high is not None and (value >= high if high_open else value > high)
    if lo_bad or hi_bad or math.isnan(value):
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}, {hi}; got {value}")
    return float(value)


def check_k(k: Any, n: int, *, k_max: int | None = None, self_excluded: bool = True,
            name: str = "k", samples: str = "samples") -> int:
    """k for a kNN among ``n`` samples.

    self_excluded (a search of each sample among the OTHER samples): k in [1, n - 1].
    Otherwise (queries against ``n`` reference samples): k in [1, n]. k_max (the width of a
    precomputed neighbour table): also k <= k_max.
    """
    k = check_int(name, k)
    if k_max is not None:
        if not 1 <= k <= k_max:
            raise ValueError(f"{name}={k} is out of range: the neighbour table holds "
                             f"k_max={k_max} neighbours per sample, so {name} must be in "
                             f"[1, {k_max}]; search more neighbours first "
                             f"(neighbors.knn_search(features, k={k}))")
        return k
    if not self_excluded:
        if not 1 <= k <= n:
            raise ValueError(f"{name}={k} is out of range for {n} reference {samples}: "
                             f"{name} must be in [1, {n}]")
        return k
    if n < 2:
        raise ValueError(f"kNN needs at least 2 {samples}, got N={n}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"{name}={k} is out of range for N={n} {samples}: each has N-1={n - 1} "
                         f"other {samples}, so {name} must be in [1, {n - 1}]; pass a smaller "
                         f"{name}")
    return k


def median_class_size(labels: Any) -> int:
    """The median number of samples per class of ``labels`` (classes present only)."""
    sizes = np.bincount(check_labels(labels))
    return int(np.median(sizes[sizes > 0]))


def k_within_classes(k: int, labels: Any) -> int:
    """``k`` capped at half the median class size of ``labels`` and at N - 1 (at least 1).

    A k larger than a class would vote with other classes, so on small data sets k shrinks
    with the classes.
    """
    y = check_labels(labels)
    if y.size < 2:
        raise ValueError("kNN needs at least 2 samples")
    return int(max(1, min(int(k), median_class_size(y) // 2, y.size - 1)))


def default_k(labels: Any) -> int:
    """k when no run is at hand: :data:`DEFAULT_K` (the paper's 250), within the classes
    (:func:`k_within_classes`)."""
    return k_within_classes(DEFAULT_K, labels)


def resolve_k(k: Any, labels: Any, n: int, *, k_max: int | None = None,
              self_excluded: bool = True, samples: str = "samples",
              default: Callable[[Any], int] | None = None) -> int:
    """k for a kNN among ``n`` samples labelled ``labels``: None means ``default`` of the labels
    (None: :func:`default_k`), within ``k_max``; else ``k`` checked by :func:`check_k`. The
    package's one reading of "no k given"."""
    if k is None:
        k = (default or default_k)(labels)
        return k if k_max is None else min(k, k_max)
    return check_k(k, n, k_max=k_max, self_excluded=self_excluded, samples=samples)


def check_labels(labels: Any, n: int | None = None, num_classes: int | None = None, *,
                 name: str = "labels") -> np.ndarray:
    """A private int64 COPY of 1-D integer class indices (nothing downstream can write to the
    caller's array), ``n`` long when given, each in [0, num_classes) (>= 0 without it)."""
    if _is_tensor(labels):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (N,) of class indices, got shape {y.shape}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has shape {y.shape} but the data has {n} samples; pass one "
                         "label per sample, in the same order")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices (integers 0..C-1), got dtype "
                         f"{y.dtype}; map class names to integers first, or convert whole "
                         "numbers with .astype(np.int64)")
    y = y.astype(np.int64, copy=True)
    if not y.size:
        return y
    if num_classes is None:
        if y.min() < 0:
            raise ValueError(f"{name} must be >= 0 (class indices), got {y.min()}")
        return y
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.size:
        raise ValueError(f"{name} must lie in [0, {num_classes}) for num_classes={num_classes}, "
                         f"i.e. in [0, {num_classes - 1}]; found {bad.size} value(s) outside, "
                         f"e.g. {int(bad[0])}: pass the right num_classes or remap the labels")
    return y


def check_num_classes(num_classes: Any, *labels: np.ndarray | None) -> int:
    """The number of classes: ``num_classes`` (an integer >= 1 covering every label given), or
    with None, one more than the largest of the (checked) ``labels``."""
    top = max((int(y.max()) + 1 for y in labels if y is not None and y.size), default=0)
    if num_classes is None:
        if not labels:
            raise ValueError("num_classes is required")
        return max(top, 1)
    c = check_int("num_classes", num_classes, 1)
    if c < top:
        raise ValueError(f"labels go up to {top - 1} but num_classes={c}; pass num_classes>={top}")
    return c


def check_features(features: Any, name: str = "features", *, keep_tensor: bool = False) -> Any:
    """Features as a C-contiguous float32 (N, D) NumPy array (float16 snapshots widened).

    keep_tensor: a torch tensor stays a (float) tensor on its device instead.
    """
    if _is_tensor(features):
        x = features.detach()
        if keep_tensor:
            if x.ndim != 2:
                raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}")
            x = x if x.is_floating_point() else x.float()
            if not bool(x.isfinite().all()):
                raise ValueError(f"{name} contain NaN or inf; drop or repair those rows first")
            return x
        features = x.cpu().numpy()
    a = np.asarray(features)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or inf; drop or repair those rows first")
    return a


def check_mask(mask: Any, n: int | None = None, name: str = "mask") -> np.ndarray:
    """A bool (N,) array; 0/1 integers are accepted, other values are not."""
    a = np.asarray(mask)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    if a.dtype != np.bool_:
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (True/False), got values other than 0/1")
        a = a.astype(bool)
    return a
