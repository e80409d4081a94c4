"""analysis.projection: 2-D pictures of an embedding (PCA, UMAP when installed), cached."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from sklearn.decomposition import PCA

from moit_explore.analysis import projection

# --------------------------------------------------------------------------- projection


def test_projection_pca_subsample_and_cache(tmp_path, digits_xy, monkeypatch):
    x, _ = digits_xy
    p = projection.embedding_projection(x, method="pca")
    assert p.method == "pca" and p.coords.shape == (len(x), 2) and p.indices is None
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = PCA(2).fit_transform(xn)
    assert np.allclose(np.abs(p.coords), np.abs(ref), atol=1e-3)  # up to sign
    s = projection.embedding_projection(x, method="pca", subsample=300, seed=3,
                                      cache_path=tmp_path)
    assert s.coords.shape == (300, 2) and len(np.unique(s.indices)) == 300
    assert len(list(tmp_path.glob("projection_pca_*.npz"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed instead of loading the cache")

    monkeypatch.setattr(projection, "_pca2", boom)
    again = projection.embedding_projection(x, method="pca", subsample=300, seed=3,
                                          cache_path=tmp_path)
    assert np.array_equal(again.coords, s.coords) and np.array_equal(again.indices, s.indices)
    with pytest.raises(AssertionError):  # other features: another key, so no stale hit
        projection.embedding_projection(x + 1, method="pca", cache_path=tmp_path)


def test_projection_falls_back_to_pca_without_umap(digits_xy, monkeypatch):
    x, _ = digits_xy
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now raises ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = projection.embedding_projection(x[:200], method="umap")
    assert p.method == "pca" and p.coords.shape == (200, 2)
    assert any("umap-learn is not installed" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="'umap' or 'pca'"):
        projection.embedding_projection(x, method="tsne")
