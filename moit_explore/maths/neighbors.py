"""Cosine k-nearest-neighbour search, the first step of the noise detection (spec §3).

Every sample's ``k`` most cosine-similar OTHER samples (or a query set's neighbours among the
samples), exact or approximate, on torch or faiss: :func:`knn_search` returns
:class:`Neighbors`, which :func:`moit_explore.maths.detection.detect_from_neighbors` turns into a
detection for any k up to the searched one.

Backends agree up to ties in similarity: when two candidates have exactly the same similarity,
``torch.topk`` and faiss may order them (or cut at ``k``) differently. The exact backends
("torch", "faiss") cost O(N^2 d); "faiss-ivf" is an approximate search for N in the millions
(:func:`ivf_settings`), exact below ``IVF_MIN_SAMPLES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from moit_explore.maths.validation import (
    BACKEND_CHOICES,
    check_choice,
    check_features,
    check_int,
    check_k,
)

__all__ = ["Neighbors", "faiss_available", "ivf_settings", "knn_search", "knn_tensors"]

# backend="faiss-ivf" (an inverted-file index, faiss IndexIVFFlat on the inner product of
# L2-normalised features): below IVF_MIN_SAMPLES samples the search is exact (faiss
# IndexFlatIP, the "faiss" backend's results), where it costs seconds and an index gains little.
IVF_MIN_SAMPLES = 20_000
# lists probed per query: the recall / time trade-off (benchmarks/RESULTS.md, "Detection at
# scale": recall@250 vs exact search on clustered features)
IVF_NPROBE = 32
# k-means of the coarse quantizer trains on a random sample of at most this many vectors per
# list (faiss warns below 39), and at least IVF_MIN_TRAIN vectors when N has them
IVF_TRAIN_PER_LIST = 64
IVF_MIN_TRAIN = 50_000
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


def _faiss():
    try:
        import faiss  # noqa: PLC0415 -- optional dependency, imported lazily
    except ImportError as err:
        raise ImportError(
            "backend='faiss' / 'faiss-ivf' needs faiss: `pip install faiss-cpu` (or the "
            "[faiss] extra: `pip install -e '.[faiss]'`), or use backend='torch' (exact)"
        ) from err
    return faiss


def faiss_available() -> bool:
    """Whether faiss (the [faiss] extra) can be imported."""
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
    return tqdm(total=total, disable=not enabled, desc=desc, unit="query")


@torch.inference_mode()
def _knn_torch(
    x: torch.Tensor, k: int, chunk_size: int | None, progress: bool = False,
    queries: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine kNN on ``x``'s device: indices int64 (Q, k), sims float32 (Q, k) of the
    rows of ``x`` (N, d) nearest to each query row; without ``queries`` each row of ``x`` is
    a query and its own index is excluded."""
    x = F.normalize(x.float(), dim=1)
    q = x if queries is None else F.normalize(queries.float().to(x.device), dim=1)
    n_q = q.shape[0]
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_BLOCK_BYTES // (4 * x.shape[0]))
    extra = 1 if queries is None else 0
    out_i = torch.empty(n_q, k, dtype=torch.int64, device=x.device)
    out_s = torch.empty(n_q, k, dtype=torch.float32, device=x.device)
    with _progress(n_q, progress, "kNN (torch)") as bar:
        for lo in range(0, n_q, chunk_size):
            hi = min(n_q, lo + chunk_size)
            sims, inds = torch.topk(q[lo:hi] @ x.T, k + extra, dim=1)
            if extra:
                sims, inds = _drop_self(sims, inds, torch.arange(lo, hi, device=x.device))
            out_s[lo:hi], out_i[lo:hi] = sims, inds
            bar.update(hi - lo)
    return out_i, out_s


def _normalized_copy(x: np.ndarray, faiss: Any) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32).copy()
    faiss.normalize_L2(x)
    return x


def _knn_faiss(
    x: np.ndarray, k: int, chunk_size: int | None, progress: bool = False,
    queries: np.ndarray | None = None, *, ivf: bool = False, nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine kNN with faiss on L2-normalised rows: exact (IndexFlatIP), or with ``ivf`` the
    approximate IndexIVFFlat of :func:`ivf_settings` (exact below IVF_MIN_SAMPLES); the same
    results layout either way.

    IVF: a query's own vector is always found (it sits in the list of its nearest centroid,
    which is probed first) unless exact duplicates crowd it out; then, as in the exact search,
    the last result is dropped. Rows for which the probed lists held fewer than k (+1) vectors
    (faiss pads them with -1) are searched again over every list.
    """
    faiss = _faiss()
    x = _normalized_copy(x, faiss)
    q = x if queries is None else _normalized_copy(queries, faiss)
    n, d = x.shape
    if not ivf or n < IVF_MIN_SAMPLES:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return _search_index(index, q, k, queries is None, chunk_size, progress, "kNN (faiss)")
    nlist, default_probe, n_train = ivf_settings(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = x
    if n_train < n:
        rows = np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))
        sample = x[rows]
    index.train(sample)
    del sample
    index.add(x)
    index.nprobe = min(nlist, nprobe or default_probe)
    return _search_index(index, q, k, queries is None, chunk_size, progress, "kNN (faiss-ivf)",
                         n_lists=nlist)


def _search_index(index: Any, q: np.ndarray, k: int, self_query: bool, chunk_size: int | None,
                  progress: bool, desc: str, n_lists: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Query a filled faiss index in chunks: (indices (Q, k) int64, similarities (Q, k)).

    self_query: the queries are the indexed rows themselves; each row's own index is dropped.
    n_lists: an IVF index's list count; rows for which the probed lists held fewer than k (+1)
    vectors (faiss pads them with -1) are searched again over every list.
    """
    # faiss batches internally; chunking the queries only bounds the output and feeds progress
    chunk_size = chunk_size or 16384
    extra = 1 if self_query else 0
    n_q = q.shape[0]
    out_i = np.empty((n_q, k), dtype=np.int64)
    out_s = np.empty((n_q, k), dtype=np.float32)
    with _progress(n_q, progress, desc) as bar:
        for lo in range(0, n_q, chunk_size):
            hi = min(n_q, lo + chunk_size)
            sims, inds = index.search(q[lo:hi], k + extra)
            short = np.flatnonzero((inds < 0).any(axis=1)) if n_lists else ()
            if len(short):  # too few candidates in the probed lists: search every list
                probe, index.nprobe = index.nprobe, n_lists
                sims[short], inds[short] = index.search(q[lo:hi][short], k + extra)
                index.nprobe = probe
            inds = inds.astype(np.int64, copy=False)
            if extra:
                s, i = _drop_self(torch.from_numpy(sims), torch.from_numpy(inds),
                                  torch.arange(lo, hi))
                sims, inds = s.numpy(), i.numpy()
            out_s[lo:hi], out_i[lo:hi] = sims, inds
            bar.update(hi - lo)
    return out_i, out_s


def ivf_settings(n: int) -> tuple[int, int, int]:
    """(nlist, nprobe, n_train) of the "faiss-ivf" search of ``n`` samples.

    nlist = round(4 * sqrt(n)) inverted lists (at most n // 39, so every list gets the 39
    training vectors faiss asks for); nprobe = min(IVF_NPROBE, nlist) lists searched per query;
    the k-means trains on n_train = min(n, max(IVF_MIN_TRAIN, IVF_TRAIN_PER_LIST * nlist))
    vectors drawn at random (seed 0). At n = 200,000: 1,789 lists, 32 probed, 114,496 trained
    on; at 1,000,000: 4,000 lists, 32 probed, 256,000 trained on.
    """
    nlist = max(1, min(int(round(4 * np.sqrt(n))), n // 39))
    n_train = min(n, max(IVF_MIN_TRAIN, IVF_TRAIN_PER_LIST * nlist))
    return nlist, min(IVF_NPROBE, nlist), n_train


def _resolve_backend(backend: str, x: np.ndarray | torch.Tensor) -> str:
    if backend != "auto":
        return backend
    if isinstance(x, torch.Tensor) and x.device.type != "cpu":
        return "torch"
    return "faiss" if faiss_available() else "torch"


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(x)


def knn_tensors(
    x: np.ndarray | torch.Tensor, k: int, backend: str, chunk_size: int | None, progress: bool,
    queries: np.ndarray | torch.Tensor | None = None, *, nprobe: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The search of :func:`knn_search` on CHECKED arguments, as torch tensors (indices int64
    (Q, k), similarities float32 (Q, k)): on ``x``'s device for the torch backend, on the CPU
    for faiss. For callers that have already checked features, k and backend (detection)."""
    resolved = _resolve_backend(backend, x)
    if resolved in ("faiss", "faiss-ivf"):
        q = None if queries is None else _as_numpy(queries)
        idx, sims = _knn_faiss(_as_numpy(x), k, chunk_size, progress, q,
                               ivf=resolved == "faiss-ivf", nprobe=nprobe)
        return torch.from_numpy(idx), torch.from_numpy(sims)
    q = None if queries is None else _as_tensor(queries)
    return _knn_torch(_as_tensor(x), k, chunk_size, progress, q)


def knn_search(
    features: Any,
    k: int,
    *,
    queries: Any = None,
    backend: str = "auto",
    chunk_size: int | None = None,
    progress: bool = False,
    nprobe: int | None = None,
) -> Neighbors:
    """Cosine k-nearest neighbours of every sample among the OTHER samples (exact, except
    ``backend="faiss-ivf"``).

    features: (N, d) NumPy array or torch tensor (L2-normalised here; zero rows stay zero).
    Returns :class:`Neighbors` with indices int64 (N, k) and similarities float32 (N, k), most
    similar first; each sample's own dataset index is excluded even when exact duplicates of it
    exist (k+1 are searched and the self entry, or else the last, is dropped).

    queries: (Q, d) other samples (e.g. a test set) to search among ``features`` instead:
    then indices (Q, k) point into ``features``, k <= N and nothing is excluded.

    backend: "torch" (chunked matmul + ``torch.topk`` on the tensor's device; a (chunk x N)
    fp32 block stays within ~256 MB unless ``chunk_size`` rows are given), "faiss"
    (faiss-cpu ``IndexFlatIP``; a CUDA tensor is copied to the CPU), or "auto": torch for
    CUDA tensors, else faiss when it is installed, else torch (exact search stays the default).
    "faiss-ivf": approximate, for N in the millions on a CPU: faiss ``IndexIVFFlat`` with
    nlist ~ 4 sqrt(N) lists, ``IVF_NPROBE`` probed (:func:`ivf_settings`); exact ("faiss")
    below ``IVF_MIN_SAMPLES`` samples; ``nprobe`` overrides the lists probed. Its neighbours
    feed ``detection.detect_from_neighbors`` (the k slider) like the exact ones. The exact
    backends agree up to ties in similarity (tied candidates may be ordered or cut
    differently). On CUDA the matmul follows ``torch.backends.cuda.matmul.allow_tf32`` (off by
    default; TF32 would blur close calls).
    """
    x = check_features(features, keep_tensor=True)
    q = None
    if queries is not None:
        q = check_features(queries, "queries", keep_tensor=True)
        if q.shape[1] != x.shape[1]:
            raise ValueError(f"queries have {q.shape[1]} dimensions but features {x.shape[1]}; "
                             "embed both with the same model")
    k = check_k(k, int(x.shape[0]), self_excluded=q is None)
    check_choice("backend", backend, BACKEND_CHOICES)
    check_int("chunk_size", chunk_size, 1, allow_none=True)
    check_int("nprobe", nprobe, 1, allow_none=True)
    if nprobe is not None and backend != "faiss-ivf":
        raise ValueError(f"nprobe applies to backend='faiss-ivf' only, not {backend!r}: drop "
                         "nprobe, or pass backend='faiss-ivf'")
    idx, sims = knn_tensors(x, k, backend, chunk_size, progress, q, nprobe=nprobe)
    return Neighbors(indices=idx.cpu().numpy(), similarities=sims.cpu().numpy())
