"""Detection (spec §3) against a brute-force reference, on synthetic and real (digits) data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from moit_explore.maths import neighbors
from moit_explore.maths.detection import (
    detect_from_neighbors,
    detect_noise,
    detection_metrics,
    select_clean,
    soft_labels_from_neighbors,
)
from moit_explore.maths.neighbors import Neighbors, knn_search

HAS_FAISS = neighbors.faiss_available()
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss-cpu not installed")
BACKENDS = ["torch", pytest.param("faiss", marks=needs_faiss)]


def clustered(n: int, num_classes: int, dim: int = 16, flip: float = 0.25, seed: int = 0):
    """Tie-free clustered features, true labels and labels with injected flips."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim))
    true = rng.integers(0, num_classes, n)
    x = centers[true] + 0.9 * rng.normal(size=(n, dim))
    given = true.copy()
    flipped = rng.random(n) < flip
    given[flipped] = (true[flipped] + rng.integers(1, num_classes, flipped.sum())) % num_classes
    return x.astype(np.float32), true, given


# --------------------------------------------------------------------- brute-force reference


def reference_detection(x: np.ndarray, y: np.ndarray, num_classes: int, k: int):
    """Spec §3 written out with loops: neighbours, p1, c1, p2, d, agree, median n_sel."""
    xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    sim = xn @ xn.T
    n = len(y)
    neighbours = []
    for i in range(n):
        others = [j for j in np.argsort(-sim[i], kind="stable") if j != i]
        neighbours.append(others[:k])
    p1 = np.zeros((n, num_classes))
    for i in range(n):
        for j in neighbours[i]:
            p1[i, y[j]] += 1.0 / k
    c1 = [int(np.argmax(p1[i])) for i in range(n)]
    p2 = np.zeros((n, num_classes))
    for i in range(n):
        for j in neighbours[i]:
            p2[i, c1[j]] += 1.0 / k
    d = np.array([-math.log(min(max(p2[i, y[i]], 0.01), 0.99)) for i in range(n)])
    agree = np.array([int(np.argmax(p2[i])) == y[i] for i in range(n)])
    counts = sorted(int(np.sum(agree & (y == c))) for c in range(num_classes))
    n_sel = counts[(num_classes - 1) // 2]  # lower middle value
    return neighbours, p1, np.array(c1), p2, d, agree, n_sel


@pytest.mark.parametrize("num_classes", [3, 4, 5])
@pytest.mark.parametrize("k", [1, 7, 20])
def test_matches_brute_force_reference(num_classes, k):
    x, _, y = clustered(160, num_classes, seed=num_classes * 100 + k)
    y_before = y.copy()
    neighbours, p1, c1, p2, d, agree, n_sel = reference_detection(x, y, num_classes, k)

    nb = knn_search(x, k, backend="torch")
    for i in range(len(y)):
        assert list(nb.indices[i]) == neighbours[i]
    result = detect_noise(x, y, num_classes, k=k, balance="median", backend="torch")
    np.testing.assert_array_equal(y, y_before)

    np.testing.assert_allclose(result.first_pass_soft_labels, p1, atol=1e-6)
    np.testing.assert_array_equal(result.corrected_labels, c1)
    np.testing.assert_allclose(result.soft_labels, p2, atol=1e-6)
    np.testing.assert_allclose(result.discrepancy, d, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.agree, agree)
    for c in range(num_classes):
        in_c = y == c
        assert result.clean[in_c].sum() == min(n_sel, in_c.sum())
        chosen, rest = d[in_c & result.clean], d[in_c & ~result.clean]
        if len(chosen) and len(rest):
            assert chosen.max() <= rest.min() + 1e-9


def test_soft_labels_count_first_k_columns():
    idx = np.array([[1, 2, 3], [0, 0, 2], [3, 1, 0], [2, 2, 2]])
    y = np.array([0, 1, 1, 2])
    p = soft_labels_from_neighbors(idx, y, 3, k=2)
    np.testing.assert_allclose(p, [[0, 1, 0], [1, 0, 0], [0, 0.5, 0.5], [0, 1, 0]])
    p_all = soft_labels_from_neighbors(idx, y, 3)
    np.testing.assert_allclose(p_all[0], [0, 2 / 3, 1 / 3], rtol=1e-6)


def test_soft_labels_match_brute_force_on_large_random_lists():
    # many row blocks, so the threaded counting is exercised
    rng = np.random.default_rng(3)
    n, k_max, c = 5000, 60, 7
    idx = rng.integers(0, n, (n, k_max))
    y = rng.integers(0, c, n)
    k = 45
    expected = np.stack([np.bincount(y[idx[i, :k]], minlength=c) for i in range(n)]) / k
    np.testing.assert_allclose(soft_labels_from_neighbors(idx, y, c, k=k), expected, atol=1e-6)


# --------------------------------------------------------------------- selection rules


def _selection_case():
    # four classes of 8 samples; 1, 3, 5, 7 of them agree -> lower median 3 (mean of middle: 4)
    labels = np.repeat(np.arange(4), 8)
    agree = np.zeros(32, dtype=bool)
    for c, n_agree in enumerate([1, 3, 5, 7]):
        agree[c * 8 : c * 8 + n_agree] = True
    d = np.random.default_rng(0).permutation(32).astype(np.float32)
    return d, labels, agree


def _smallest_per_class(d, labels, n):
    out = np.zeros(len(d), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        out[members[np.argsort(d[members])[:n]]] = True
    return out


def test_median_of_even_class_count_is_the_lower_middle_value():
    d, labels, agree = _selection_case()
    clean = select_clean(d, labels, agree, 4, "median")
    assert [clean[labels == c].sum() for c in range(4)] == [3, 3, 3, 3]
    np.testing.assert_array_equal(clean, _smallest_per_class(d, labels, 3))


def test_median_of_odd_class_count_and_classes_without_samples():
    d, labels, agree = _selection_case()
    keep = labels < 3  # counts 1, 3, 5 -> median 3
    clean = select_clean(d[keep], labels[keep], agree[keep], 3, "median")
    assert [clean[labels[keep] == c].sum() for c in range(3)] == [3, 3, 3]
    # a fourth class with no samples counts as n_c = 0: sorted (0, 1, 3, 5) -> lower median 1
    clean = select_clean(d[keep], labels[keep], agree[keep], 4, "median")
    assert [clean[labels[keep] == c].sum() for c in range(3)] == [1, 1, 1]


def test_min_max_none_criteria():
    d, labels, agree = _selection_case()
    clean_min = select_clean(d, labels, agree, 4, "min")
    np.testing.assert_array_equal(clean_min, _smallest_per_class(d, labels, 1))
    clean_max = select_clean(d, labels, agree, 4, "max")
    np.testing.assert_array_equal(clean_max, _smallest_per_class(d, labels, 7))
    np.testing.assert_array_equal(select_clean(d, labels, agree, 4, "none"), agree)


def test_selection_caps_at_class_size_and_breaks_ties_by_index():
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    agree = np.array([1, 1, 1, 1, 1, 0, 0], dtype=bool)
    d = np.array([0.5, 0.1, 0.5, 0.5, 0.9, 0.3, 0.3], dtype=np.float32)
    clean = select_clean(d, labels, agree, 2, "max")  # n_sel = 5 > |class 1| = 2
    np.testing.assert_array_equal(clean, [1, 1, 1, 1, 1, 1, 1])
    clean = select_clean(d, labels, agree, 3, "median")  # counts (0, 0, 5) -> 0
    assert not clean.any()
    clean = select_clean(d, np.zeros(7, dtype=np.int64), agree, 1, "min")  # n_sel = 5 of 7
    np.testing.assert_array_equal(clean, [1, 1, 1, 0, 0, 1, 1])  # index 3 loses the 0.5 tie


def test_bad_balance_rejected():
    d, labels, agree = _selection_case()
    with pytest.raises(ValueError, match="median"):
        select_clean(d, labels, agree, 4, "mean")
    with pytest.raises(ValueError, match="balance"):
        detect_noise(np.eye(5), np.zeros(5, dtype=int), 2, k=2, balance="avg")


# --------------------------------------------------------------------- kNN search


@needs_faiss
def test_torch_and_faiss_agree():
    x, _, y = clustered(400, 6, dim=24, seed=11)
    a = knn_search(x, 15, backend="torch")
    b = knn_search(x, 15, backend="faiss")
    for i in range(len(x)):
        assert set(a.indices[i]) == set(b.indices[i])
    np.testing.assert_allclose(a.similarities, b.similarities, atol=1e-5)
    da = detect_noise(x, y, 6, k=15, backend="torch")
    db = detect_noise(x, y, 6, k=15, backend="faiss")
    np.testing.assert_array_equal(da.clean, db.clean)
    np.testing.assert_array_equal(da.corrected_labels, db.corrected_labels)
    np.testing.assert_allclose(da.discrepancy, db.discrepancy)


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_excluded_by_index_with_exact_duplicates(backend):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x[1:5] = x[0]  # five identical rows 0..4
    for k in (2, 4, 6):  # fewer, as many as, and more neighbours than the other copies
        nb = knn_search(x, k, backend=backend)
        assert nb.indices.shape == (40, k)
        for i in range(40):
            assert i not in nb.indices[i]
            assert len(set(nb.indices[i])) == k
        for i in range(5):
            others = set(range(5)) - {i}
            assert set(nb.indices[i, : min(k, 4)]) <= others
            np.testing.assert_allclose(nb.similarities[i, : min(k, 4)], 1.0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_neighbours_sorted_most_similar_first(backend):
    x, _, _ = clustered(200, 4, seed=2)
    nb = knn_search(x, 12, backend=backend)
    assert nb.indices.dtype == np.int64 and nb.similarities.dtype == np.float32
    assert (np.diff(nb.similarities, axis=1) <= 1e-7).all()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.einsum("id,ikd->ik", xn, xn[nb.indices])
    np.testing.assert_allclose(nb.similarities, expected, atol=1e-5)


def test_chunked_torch_search_equals_unchunked():
    x, _, _ = clustered(300, 5, seed=4)
    full = knn_search(x, 9, backend="torch")
    for chunk in (1, 7, 64):
        part = knn_search(x, 9, backend="torch", chunk_size=chunk)
        np.testing.assert_array_equal(part.indices, full.indices)
        np.testing.assert_allclose(part.similarities, full.similarities, atol=1e-6)


def test_torch_tensor_features_accepted():
    x, _, y = clustered(150, 3, seed=8)
    from_np = detect_noise(x, y, 3, k=10, backend="torch")
    from_t = detect_noise(torch.from_numpy(x), torch.from_numpy(y), 3, k=10, backend="torch")
    np.testing.assert_array_equal(from_np.clean, from_t.clean)
    np.testing.assert_allclose(from_t.first_pass_soft_labels, from_np.first_pass_soft_labels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_detection_equals_cpu():
    x, _, y = clustered(2000, 10, dim=32, seed=9)
    cpu = detect_noise(x, y, 10, k=50, backend="torch")
    gpu = detect_noise(torch.from_numpy(x).cuda(), y, 10, k=50)
    assert isinstance(gpu.clean, np.ndarray)
    np.testing.assert_array_equal(cpu.corrected_labels, gpu.corrected_labels)
    np.testing.assert_array_equal(cpu.clean, gpu.clean)
    np.testing.assert_allclose(cpu.discrepancy, gpu.discrepancy, rtol=1e-5)


# --------------------------------------------------------------------- bad input


def test_k_out_of_range_rejected():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match=r"N=10.*\[1, 9\]"):
        knn_search(x, 10)
    with pytest.raises(ValueError, match=r"\[1, 9\]"):
        knn_search(x, 0)
    with pytest.raises(ValueError, match="k=12"):
        detect_noise(x, np.zeros(10, dtype=int), 2, k=12)
    nb = knn_search(x, 3)
    with pytest.raises(ValueError, match="k_max=3"):
        detect_from_neighbors(nb, np.zeros(10, dtype=int), 2, k=4)
    with pytest.raises(ValueError, match="k_max=3"):
        soft_labels_from_neighbors(nb.indices, np.zeros(10, dtype=int), 2, k=0)


def test_bad_features_rejected():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="2-D"):
        knn_search(x[:, 0], 2)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn_search(x, 2)
    with pytest.raises(ValueError, match="NaN"):
        knn_search(torch.from_numpy(x), 2, backend="torch")
    with pytest.raises(ValueError, match="backend"):
        knn_search(np.eye(4), 2, backend="annoy")


def test_bad_labels_rejected():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        detect_noise(x, np.full(10, 3), 3, k=2)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        detect_noise(x, np.r_[-1, np.zeros(9, dtype=int)], 3, k=2)
    with pytest.raises(ValueError, match="shape"):
        detect_noise(x, np.zeros(9, dtype=int), 3, k=2)
    with pytest.raises(ValueError, match="integers"):
        detect_noise(x, np.zeros(10), 3, k=2)


def test_labels_never_modified():
    x, _, y = clustered(300, 4, seed=12)
    y_before = y.copy()
    for balance in ("median", "none"):
        result = detect_noise(x, y, 4, k=15, balance=balance)
        assert (result.corrected_labels != y).any()  # corrections exist, yet ...
        np.testing.assert_array_equal(y, y_before)  # ... never written back
    y_t = torch.from_numpy(y)
    detect_noise(torch.from_numpy(x), y_t, 4, k=15, backend="torch")
    np.testing.assert_array_equal(y_t.numpy(), y_before)


# --------------------------------------------------------------------- real data


def _digits_with_noise(rate: float = 0.3, seed: int = 0):
    data = load_digits()
    x = data.data / 16.0
    x = x - x.mean(axis=0)  # centre so cosine similarity compares shapes, not ink
    true = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    n_noisy = int(rate * len(true))
    flip = rng.choice(len(true), n_noisy, replace=False)
    noisy_labels = true.copy()
    noisy_labels[flip] = (true[flip] + rng.integers(1, 10, n_noisy)) % 10  # a wrong class
    return x, true, noisy_labels


def test_detects_noise_on_digits():
    x, true, given = _digits_with_noise()
    is_noisy = given != true
    result = detect_noise(x, given, 10, k=20, balance="median")
    m = detection_metrics(result.clean, is_noisy, result.discrepancy)
    assert m["precision"] > 0.8 and m["recall"] > 0.8
    assert m["selected_noise_rate"] < 0.1 < is_noisy.mean() / 2
    assert m["auroc"] > 0.9
    # the corrected labels repair most of the flips
    assert (result.corrected_labels == true).mean() > 0.9


def test_detection_metrics_definitions():
    clean = np.array([1, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    noisy = np.array([0, 0, 1, 1, 1, 0, 0, 0], dtype=bool)
    score = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.3, 0.0, 0.05])
    m = detection_metrics(clean, noisy, score)
    # predicted noisy = {3, 4, 5}: 2 of 3 right; 2 of 3 noisy found
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["selected_frac"] == pytest.approx(5 / 8)
    assert m["selected_noise_rate"] == pytest.approx(1 / 5)
    assert m["auroc"] == pytest.approx(1.0)
    no_noise = detection_metrics(clean, np.zeros(8, dtype=bool), score)
    assert math.isnan(no_noise["auroc"]) and math.isnan(no_noise["recall"])
    assert math.isnan(detection_metrics(clean, noisy)["auroc"])


def test_k_slider_reuses_one_search():
    x, _, y = clustered(500, 5, seed=21)
    nb = knn_search(x, 40)
    for k in (5, 17, 40):
        a = detect_from_neighbors(nb, y, 5, k=k)
        b = detect_noise(x, y, 5, k=k, backend="torch")
        np.testing.assert_array_equal(a.clean, b.clean)
        np.testing.assert_allclose(a.soft_labels, b.soft_labels)
        assert a.k == k and a.balance == "median"
    assert isinstance(nb, Neighbors) and nb.k_max == 40


# --------------------------------------------------------------------------- faiss-ivf


def _recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.intersect1d(x, y).size / a.shape[1]
                          for x, y in zip(a, b, strict=True)]))


@pytest.fixture(scope="module")
def ivf_pair():
    """N = 20,000 (>= IVF_MIN_SAMPLES): the IVF search and the exact one, k = 50."""
    assert neighbors.IVF_MIN_SAMPLES <= 20_000
    x, true, given = clustered(20_000, 10, dim=32)
    return x, true, given, knn_search(x, 50, backend="faiss-ivf"), knn_search(x, 50,
                                                                             backend="faiss")


@needs_faiss
def test_ivf_recall_and_detection_close_to_exact(ivf_pair):
    x, true, given, ivf, exact = ivf_pair
    n = x.shape[0]
    assert ivf.indices.shape == (n, 50) and ivf.indices.min() >= 0
    assert not (ivf.indices == np.arange(n)[:, None]).any()  # self excluded by index
    assert _recall(ivf.indices, exact.indices) >= 0.95
    d_ivf = detect_noise(x, given, 10, k=50, backend="faiss-ivf")
    d_exact = detect_noise(x, given, 10, k=50, backend="faiss")
    assert np.mean(d_ivf.clean == d_exact.clean) >= 0.98
    noisy = given != true
    f_ivf = detection_metrics(d_ivf.clean, noisy)["f1"]
    assert f_ivf == pytest.approx(detection_metrics(d_exact.clean, noisy)["f1"], abs=0.01)
    # the k slider on the approximate neighbours: one search, any k <= k_max
    for k in (10, 50):
        a = detect_from_neighbors(ivf, given, 10, k)
        assert a.clean.shape == (n,)
    np.testing.assert_array_equal(detect_from_neighbors(ivf, given, 10, 50).clean, d_ivf.clean)


@needs_faiss
def test_ivf_nprobe_trades_recall(ivf_pair):
    x, _, _, _, exact = ivf_pair
    nlist = neighbors.ivf_settings(x.shape[0])[0]
    one = knn_search(x, 50, backend="faiss-ivf", nprobe=1)
    every = knn_search(x, 50, backend="faiss-ivf", nprobe=nlist)  # every list: exact search
    assert _recall(every.indices, exact.indices) >= 0.999
    assert _recall(one.indices, exact.indices) < _recall(every.indices, exact.indices)
    with pytest.raises(ValueError, match="nprobe"):
        knn_search(x, 50, backend="faiss-ivf", nprobe=0)
    with pytest.raises(ValueError, match="faiss-ivf"):
        knn_search(x, 50, backend="faiss", nprobe=8)  # exact search has no lists to probe


@needs_faiss
def test_ivf_below_threshold_is_exact():
    x, _, given = clustered(3000, 6, dim=16)
    assert x.shape[0] < neighbors.IVF_MIN_SAMPLES
    a, b = knn_search(x, 20, backend="faiss-ivf"), knn_search(x, 20, backend="faiss")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.similarities, b.similarities)
    da = detect_noise(x, given, 6, k=20, backend="faiss-ivf")
    db = detect_noise(x, given, 6, k=20, backend="faiss")
    np.testing.assert_array_equal(da.clean, db.clean)
    np.testing.assert_array_equal(da.discrepancy, db.discrepancy)


@needs_faiss
def test_ivf_fills_rows_the_probed_lists_cannot(monkeypatch):
    # one probed list of ~35 vectors cannot hold 51 results: faiss pads with -1, and those
    # rows are searched again over every list
    monkeypatch.setattr(neighbors, "IVF_NPROBE", 1)
    x, _, _ = clustered(20_000, 10, dim=32)
    nb = knn_search(x, 50, backend="faiss-ivf")
    assert nb.indices.min() >= 0 and nb.indices.max() < x.shape[0]
    assert not (nb.indices == np.arange(x.shape[0])[:, None]).any()
    assert all(len(set(row)) == 50 for row in nb.indices[:500])


def test_ivf_settings_rule():
    assert neighbors.ivf_settings(200_000) == (1789, neighbors.IVF_NPROBE, 114_496)
    assert neighbors.ivf_settings(1_000_000) == (4000, neighbors.IVF_NPROBE, 256_000)
    nlist, nprobe, n_train = neighbors.ivf_settings(20_000)
    assert nlist == 20_000 // 39 and n_train == 20_000 and nprobe <= nlist  # 39 per list
