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

Backends of :func:`knn_search` agree up to ties in similarity: when two candidates have exactly
the same similarity, ``torch.topk`` and faiss may order them (or cut at ``k``) differently.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BALANCE_CHOICES",
    "Detection",
    "Neighbors",
    "detect_from_neighbors",
    "detect_noise",
    "detection_metrics",
    "knn_search",
    "knn_soft_labels",
    "select_clean",
    "soft_labels_from_neighbors",
]

BALANCE_CHOICES = ("median", "min", "max", "none")
WEIGHTING_CHOICES = ("none", "similarity")
BACKEND_CHOICES = ("auto", "torch", "faiss")
CLIP_LOW, CLIP_HIGH = 0.01, 0.99
# the torch backend keeps one (chunk x N) fp32 similarity block of about this size
DEFAULT_BLOCK_BYTES = 256 * 2**20


@dataclass
class Neighbors:
    """The ``k_max`` nearest other samples of every sample.

    indices: int64 (N, k_max), most similar first, the sample's own dataset index excluded.
    similarities: float32 (N, k_max), cosine similarities matching ``indices``.
    """

    indices: np.ndarray
    similarities: np.ndarray

    @property
    def k_max(self) -> int:
        return int(self.indices.shape[1])


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


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _check_k(k: Any, n: int) -> int:
    k = _check_int("k", k)
    if n < 2:
        raise ValueError(f"kNN needs at least 2 samples, got N={n}")
    if not 1 <= k <= n - 1:
        raise ValueError(
            f"k={k} is out of range for N={n} samples: each sample has N-1={n - 1} other "
            f"samples, so k must be in [1, {n - 1}]; pass a smaller k"
        )
    return k


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")
    return value


def _check_features(features: Any) -> np.ndarray | torch.Tensor:
    """Features as a float torch tensor (kept on its device) or a float32 NumPy array."""
    if isinstance(features, torch.Tensor):
        x = features.detach()
        if x.ndim != 2:
            raise ValueError(f"features must be 2-D (N, d), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.float()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("features contain NaN or inf; clean or drop those rows first")
        return x
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (N, d), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"features must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf; clean or drop those rows first")
    return x


def _check_labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    """A private int64 copy of ``labels`` (so nothing downstream can write to the caller's)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match the data, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers in [0, num_classes), got dtype {y.dtype}")
    y = y.astype(np.int64, copy=True)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
            f"got values in [{y.min()}, {y.max()}]; pass the right num_classes or remap labels"
        )
    return y


def _check_num_classes(num_classes: Any) -> int:
    c = _check_int("num_classes", num_classes)
    if c < 1:
        raise ValueError(f"num_classes must be >= 1, got {c}")
    return c


def _check_neighbor_indices(indices: Any) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"neighbor_indices must be a 2-D integer array (N, k_max), got {idx.dtype} {idx.shape}"
        )
    return idx.astype(np.int64, copy=False)


def _check_k_for_neighbors(k: Any, k_max: int) -> int:
    k = _check_int("k", k)
    if not 1 <= k <= k_max:
        raise ValueError(
            f"k={k} is out of range: the neighbour lists hold k_max={k_max} neighbours, so k "
            f"must be in [1, {k_max}]; search more neighbours (knn_search(..., k={k})) first"
        )
    return k


# --------------------------------------------------------------------------- kNN search


def _faiss():
    try:
        import faiss  # noqa: PLC0415 -- optional dependency, imported lazily
    except ImportError as err:
        raise ImportError(
            "backend='faiss' needs faiss: `pip install faiss-cpu` (or the [faiss] extra: "
            "`pip install -e '.[faiss]'`), or use backend='torch'"
        ) from err
    return faiss


def _faiss_available() -> bool:
    try:
        _faiss()
    except ImportError:
        return False
    return True


def _drop_self(
    sims: torch.Tensor, inds: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k+1) search results -> (n, k) without each query's own dataset index.

    Exact duplicates of a point can outrank the point itself (or tie with it), so the self
    entry is removed by index; when it is not among the k+1 results the last one is dropped.
    """
    is_self = inds == rows[:, None]
    is_self[~is_self.any(dim=1), -1] = True
    keep = ~is_self
    n, k1 = inds.shape
    return sims[keep].view(n, k1 - 1), inds[keep].view(n, k1 - 1)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm  # noqa: PLC0415 -- only when asked for

    return tqdm(total=total, disable=not enabled, desc=desc, unit="query")


@torch.inference_mode()
def _knn_torch(
    x: torch.Tensor, k: int, chunk_size: int | None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine kNN on ``x``'s device: (N, d) -> indices int64 (N, k), sims float32 (N, k)."""
    x = F.normalize(x.float(), dim=1)
    n = x.shape[0]
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_BLOCK_BYTES // (4 * n))
    chunk_size = _check_int("chunk_size", chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_i = torch.empty(n, k, dtype=torch.int64, device=x.device)
    out_s = torch.empty(n, k, dtype=torch.float32, device=x.device)
    with _progress(n, progress, "kNN (torch)") as bar:
        for lo in range(0, n, chunk_size):
            hi = min(n, lo + chunk_size)
            sims, inds = torch.topk(x[lo:hi] @ x.T, k + 1, dim=1)
            rows = torch.arange(lo, hi, device=x.device)
            out_s[lo:hi], out_i[lo:hi] = _drop_self(sims, inds, rows)
            bar.update(hi - lo)
    return out_i, out_s


def _knn_faiss(
    x: np.ndarray, k: int, chunk_size: int | None, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32).copy()
    faiss.normalize_L2(x)
    n, d = x.shape
    index = faiss.IndexFlatIP(d)
    index.add(x)
    # faiss batches internally; chunking the queries only bounds the output and feeds progress
    chunk_size = chunk_size or 16384
    out_i = np.empty((n, k), dtype=np.int64)
    out_s = np.empty((n, k), dtype=np.float32)
    with _progress(n, progress, "kNN (faiss)") as bar:
        for lo in range(0, n, chunk_size):
            hi = min(n, lo + chunk_size)
            sims, inds = index.search(x[lo:hi], k + 1)
            s, i = _drop_self(
                torch.from_numpy(sims),
                torch.from_numpy(inds.astype(np.int64, copy=False)),
                torch.arange(lo, hi),
            )
            out_s[lo:hi], out_i[lo:hi] = s.numpy(), i.numpy()
            bar.update(hi - lo)
    return out_i, out_s


def _resolve_backend(backend: str, x: np.ndarray | torch.Tensor) -> str:
    _check_choice("backend", backend, BACKEND_CHOICES)
    if backend != "auto":
        return backend
    if isinstance(x, torch.Tensor) and x.device.type != "cpu":
        return "torch"
    return "faiss" if _faiss_available() else "torch"


def _knn(
    x: np.ndarray | torch.Tensor,
    k: int,
    backend: str,
    chunk_size: int | None,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """kNN as torch tensors: on ``x``'s device for the torch backend, on the CPU for faiss."""
    k = _check_k(k, int(x.shape[0]))
    backend = _resolve_backend(backend, x)
    if backend == "faiss":
        xn = x.cpu().numpy() if isinstance(x, torch.Tensor) else x
        idx, sims = _knn_faiss(xn, k, chunk_size, progress)
        return torch.from_numpy(idx), torch.from_numpy(sims)
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
    return _knn_torch(xt, k, chunk_size, progress)


def knn_search(
    features: Any,
    k: int,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
    progress: bool = False,
) -> Neighbors:
    """Exact cosine k-nearest neighbours of every sample among the OTHER samples.

    features: (N, d) NumPy array or torch tensor (L2-normalised here; zero rows stay zero).
    Returns :class:`Neighbors` with indices int64 (N, k) and similarities float32 (N, k), most
    similar first; each sample's own dataset index is excluded even when exact duplicates of it
    exist (k+1 are searched and the self entry, or else the last, is dropped).

    backend: "torch" (chunked matmul + ``torch.topk`` on the tensor's device; a (chunk x N)
    fp32 block stays within ~256 MB unless ``chunk_size`` rows are given), "faiss"
    (faiss-cpu ``IndexFlatIP``; a CUDA tensor is copied to the CPU), or "auto": torch for
    CUDA tensors, else faiss when it is installed, else torch. Backends agree up to ties in
    similarity (tied candidates may be ordered or cut differently). On CUDA the matmul follows
    ``torch.backends.cuda.matmul.allow_tf32`` (off by default; TF32 would blur close calls).
    """
    x = _check_features(features)
    idx, sims = _knn(x, k, backend, chunk_size, progress)
    return Neighbors(indices=idx.cpu().numpy(), similarities=sims.cpu().numpy())


# --------------------------------------------------------------------------- soft labels


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _count_numpy(
    idx: np.ndarray, labels: np.ndarray, num_classes: int, k: int, weights: np.ndarray | None
) -> np.ndarray:
    """Per-row label counts of the first k neighbours: (N, k_max) -> (N, C).

    One bincount over ``row * C + label`` per block of rows. Blocks keep the gathered labels
    in cache and run on a few threads (NumPy releases the GIL in take/bincount): at N=60,000,
    k=250 this is several times faster than a single whole-array bincount.
    """
    n = idx.shape[0]
    c = num_classes
    out = np.empty((n, c), dtype=np.int64 if weights is None else np.float64)
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
        w = None if weights is None else weights[lo:hi, :k].ravel()
        out[lo:hi] = np.bincount(flat.ravel(), weights=w, minlength=(hi - lo) * c).reshape(-1, c)

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
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Counts (int64) or weight sums (float) of the neighbours' labels, (N, k_max) -> (N, C)."""
    if idx.device.type == "cpu":
        w = None if weights is None else weights.numpy()
        return torch.from_numpy(_count_numpy(idx.numpy(), labels.numpy(), num_classes, k, w))
    nb = idx[:, :k]
    lab = labels[nb]
    if weights is None:
        out = torch.zeros(idx.shape[0], num_classes, dtype=torch.int64, device=idx.device)
        return out.scatter_add_(1, lab, torch.ones_like(lab))
    out = torch.zeros(idx.shape[0], num_classes, dtype=torch.float32, device=idx.device)
    return out.scatter_add_(1, lab, weights[:, :k].float().contiguous())


def _vote_weights(similarities: torch.Tensor | None, k: int, weighting: str) -> torch.Tensor | None:
    """None for plain counts; else max(similarity, 0) of the first k (all-zero rows -> 1)."""
    _check_choice("weighting", weighting, WEIGHTING_CHOICES)
    if weighting == "none":
        return None
    if similarities is None:
        raise ValueError("weighting='similarity' needs the neighbours' similarities; pass them")
    w = similarities[:, :k].float().clamp_min(0.0)
    w[w.sum(dim=1) <= 0] = 1.0  # no positive similarity: fall back to plain votes
    return w.contiguous()


def _fractions(counts: torch.Tensor, k: int, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return counts.float() / k
    return (counts / weights.sum(dim=1, keepdim=True)).float()


def soft_labels_from_neighbors(
    neighbor_indices: Any,
    labels: Any,
    num_classes: int,
    k: int | None = None,
    *,
    weighting: str = "none",
    similarities: Any = None,
) -> np.ndarray:
    """Fraction of the first ``k`` neighbours carrying each label: (N, k_max), (N,) -> (N, C).

    k: defaults to all k_max columns. weighting: "none" (release default: plain counts / k) or
    "similarity" (deviation: votes weighted by max(cosine similarity, 0) and normalised per row;
    needs ``similarities`` (N, k_max)). Returns float32 rows summing to 1.
    """
    idx = _check_neighbor_indices(neighbor_indices)
    c = _check_num_classes(num_classes)
    n, k_max = idx.shape
    k = k_max if k is None else _check_k_for_neighbors(k, k_max)
    y = _check_labels(labels, n, c)
    sims = None
    if similarities is not None:
        sims = torch.from_numpy(np.asarray(similarities, dtype=np.float32))
        if sims.shape != idx.shape:
            raise ValueError(
                f"similarities must have the shape of neighbor_indices {idx.shape}, "
                f"got {tuple(sims.shape)}"
            )
    w = _vote_weights(sims, k, weighting)
    counts = _label_counts(torch.from_numpy(idx), torch.from_numpy(y), c, k, w)
    return _fractions(counts, k, w).numpy()


def knn_soft_labels(
    features: Any, labels: Any, k: int, num_classes: int, *, backend: str = "auto"
) -> np.ndarray:
    """Pass-1 soft labels: fraction of each sample's k nearest others with each given label.

    features (N, d), labels (N,) -> float32 (N, C). See :func:`knn_search` for ``backend``.
    """
    x = _check_features(features)
    c = _check_num_classes(num_classes)
    y = _check_labels(labels, int(x.shape[0]), c)
    idx, _ = _knn(x, k, backend, None, False)
    counts = _label_counts(idx, torch.from_numpy(y).to(idx.device), c, k)
    return _fractions(counts, k, None).cpu().numpy()


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
    discrepancy: Any, labels: Any, agree: Any, num_classes: int, balance: str = "median"
) -> np.ndarray:
    """Class-balanced clean selection (spec §3.6): (N,), (N,), bool (N,) -> bool (N,).

    n_c = number of agreeing samples with given label c, over all ``num_classes`` classes
    (a class without samples counts as 0). n_sel = lower median of n_c ("median", as
    torch.median), min ("min") or max ("max"); each class keeps its min(n_sel, |class|)
    samples of smallest discrepancy, ties broken by dataset index. "none": clean = agree.
    """
    balance = _check_choice("balance", balance, BALANCE_CHOICES)
    c = _check_num_classes(num_classes)
    d = np.asarray(discrepancy, dtype=np.float32)
    if d.ndim != 1:
        raise ValueError(f"discrepancy must be 1-D (N,), got shape {d.shape}")
    n = d.shape[0]
    y = _check_labels(labels, n, c)
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
    weights: torch.Tensor | None,
) -> Detection:
    """Both passes and the selection on ``idx``'s device; returns NumPy arrays."""
    counts1 = _label_counts(idx, labels, num_classes, k, weights)
    corrected = counts1.argmax(dim=1)  # first maximum: ties go to the lowest class index
    counts2 = _label_counts(idx, corrected, num_classes, k, weights)
    p1 = _fractions(counts1, k, weights)
    p2 = _fractions(counts2, k, weights)
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


def detect_from_neighbors(
    neighbors: Neighbors,
    labels: Any,
    num_classes: int,
    k: int = 250,
    balance: str = "median",
    *,
    weighting: str = "none",
) -> Detection:
    """Two-pass detection from precomputed neighbours, using their first ``k`` columns.

    Cheap enough to re-run per ``k`` (a k slider): one search at k_max, then this for any
    k <= k_max. weighting: "none" (release) or "similarity" (deviation, see
    :func:`soft_labels_from_neighbors`). The given labels are read, never modified.
    """
    balance = _check_choice("balance", balance, BALANCE_CHOICES)
    c = _check_num_classes(num_classes)
    idx = _check_neighbor_indices(neighbors.indices)
    k = _check_k_for_neighbors(k, idx.shape[1])
    y = _check_labels(labels, idx.shape[0], c)
    sims = None
    if weighting != "none":
        sims = torch.from_numpy(np.asarray(neighbors.similarities, dtype=np.float32))
    w = _vote_weights(sims, k, weighting)
    return _two_pass(torch.from_numpy(idx), torch.from_numpy(y), c, k, balance, w)


def detect_noise(
    features: Any,
    labels: Any,
    num_classes: int,
    k: int = 250,
    balance: str = "median",
    *,
    backend: str = "auto",
    neighbors: Neighbors | None = None,
    weighting: str = "none",
    progress: bool = False,
) -> Detection:
    """Spec §3 detection: kNN search on ``features`` (N, d), then :func:`detect_from_neighbors`.

    With ``neighbors`` given the search is skipped (``features`` may then be None). A CUDA
    tensor of features is searched and scored entirely on its GPU. Labels (N,) in
    [0, num_classes) are never modified.
    """
    balance = _check_choice("balance", balance, BALANCE_CHOICES)
    _check_choice("weighting", weighting, WEIGHTING_CHOICES)
    if neighbors is not None:
        return detect_from_neighbors(
            neighbors, labels, num_classes, k, balance, weighting=weighting
        )
    if features is None:
        raise ValueError("detect_noise needs features (N, d) or precomputed neighbors")
    x = _check_features(features)
    c = _check_num_classes(num_classes)
    y = _check_labels(labels, int(x.shape[0]), c)
    idx, sims = _knn(x, k, backend, None, progress)
    w = _vote_weights(sims, k, weighting)
    return _two_pass(idx, torch.from_numpy(y).to(idx.device), c, k, balance, w)


# --------------------------------------------------------------------------- evaluation


def detection_metrics(clean_pred: Any, is_noisy: Any, discrepancy: Any = None) -> dict[str, float]:
    """How well a clean selection finds the NOISY samples (predicted noisy = ~clean_pred).

    Returns precision, recall, f1 (noisy class; NaN when undefined), selected_frac (fraction
    marked clean), selected_noise_rate (fraction of noisy among those marked clean) and auroc
    of ``discrepancy`` as a noise score (NaN without it or when only one class is present).
    """
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score  # noqa: PLC0415

    clean = np.asarray(clean_pred)
    noisy = np.asarray(is_noisy)
    if clean.ndim != 1 or clean.shape != noisy.shape:
        raise ValueError(
            f"clean_pred and is_noisy must be 1-D of equal length, got {clean.shape}, {noisy.shape}"
        )
    if clean.dtype != np.bool_ or noisy.dtype != np.bool_:
        raise ValueError("clean_pred and is_noisy must be bool arrays (True = clean / noisy)")
    precision, recall, f1, _ = precision_recall_fscore_support(
        noisy, ~clean, average="binary", pos_label=True, zero_division=np.nan
    )
    auroc = float("nan")
    if discrepancy is not None:
        score = np.asarray(discrepancy, dtype=np.float64)
        if score.shape != noisy.shape:
            raise ValueError(f"discrepancy must have shape {noisy.shape}, got {score.shape}")
        if 0 < noisy.sum() < noisy.size:
            auroc = float(roc_auc_score(noisy, score))
    n_sel = int(clean.sum())
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auroc": auroc,
        "selected_frac": n_sel / clean.size if clean.size else float("nan"),
        "selected_noise_rate": float(noisy[clean].mean()) if n_sel else float("nan"),
    }
