"""2-D pictures of an embedding: :func:`embedding_projection` (UMAP, or PCA without
umap-learn), cached on disk by a hash of the features and settings."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import normalize

from moit_explore.maths.validation import check_features

__all__ = ["Projection", "embedding_projection"]


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
    if x.shape[0] < 3 or x.shape[1] < 2:  # too little for PCA: centred raw coordinates
        out = np.zeros((x.shape[0], 2), dtype=np.float32)
        d = min(2, x.shape[1])
        out[:, :d] = (x - x.mean(axis=0))[:, :d]
        return out
    return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)


def _umap() -> Any:
    """umap-learn, or None when it is missing."""
    try:
        import umap  # noqa: PLC0415 -- optional extra ([notebooks]), slow to import (numba)
    except ImportError:
        return None
    return umap


def _umap2(x: np.ndarray, seed: int, n_neighbors: int) -> np.ndarray:
    reducer = _umap().UMAP(n_components=2, n_neighbors=min(n_neighbors, x.shape[0] - 1),
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
    x = check_features(features)
    indices = None
    if subsample is not None and subsample < x.shape[0]:
        if subsample < 2:
            raise ValueError(f"subsample must be >= 2 (or None for all rows), got {subsample}")
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(x.shape[0], size=subsample, replace=False)).astype(np.int64)
        x = x[indices]
    if method == "umap" and _umap() is None:
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
    xn = normalize(x)
    coords = _umap2(xn, seed, n_neighbors) if method == "umap" else _pca2(xn, seed)
    proj = Projection(coords, method, indices)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + ".tmp.npz")
        np.savez(tmp, coords=coords, method=np.array(method), key=np.array(key),
                 indices=indices if indices is not None else np.zeros(0, dtype=np.int64))
        tmp.replace(cache_file)
    return proj
