"""analysis.collapse: kNN accuracy and the collapse measures of an embedding, on the digits.
Reference values come from brute-force NumPy, never from the code under test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moit_explore.analysis import collapse


def brute_knn_vote(train, labels, query=None, k=5):
    """Cosine kNN majority vote by full sorting (ties: lowest class)."""
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    q = a if query is None else query / np.linalg.norm(query, axis=1, keepdims=True)
    sims = q @ a.T
    if query is None:
        np.fill_diagonal(sims, -np.inf)
    nn = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    c = labels.max() + 1
    return np.array([np.bincount(labels[row], minlength=c).argmax() for row in nn])


# --------------------------------------------------------------------------- kNN


def test_knn_accuracy_on_digits_is_far_above_chance(digits_xy, digits):
    x, y = digits_xy
    loo = collapse.knn_accuracy(x, y, k=10)
    xt = digits.test_images.reshape(len(digits.test_labels), -1)
    held_out = collapse.knn_accuracy(x, y, xt, digits.test_labels, k=10)
    assert loo > 0.9 and held_out > 0.9  # chance is 0.1


def test_knn_predict_matches_brute_force(digits_xy, digits):
    x, y = digits_xy
    x = x[:400] + np.random.default_rng(0).normal(0, 1e-3, (400, x.shape[1])).astype(np.float32)
    y = y[:400]
    for k in (1, 4, 9):
        assert np.array_equal(collapse.knn_predict(x, y, k=k), brute_knn_vote(x, y, k=k))
    xt = digits.test_images.reshape(len(digits.test_labels), -1)[:100].astype(np.float32)
    assert np.array_equal(collapse.knn_predict(x, y, xt, k=5), brute_knn_vote(x, y, xt, k=5))


def test_knn_accuracy_hand_case():
    # two tight direction clusters; sample 2 carries the wrong label, so leave-one-out with
    # k=2 predicts 0 for it (scored wrong against its label, right against the target)
    x = np.array([[1, 0.01], [1, 0.02], [1, 0.03], [0.01, 1], [0.02, 1], [0.03, 1]])
    y = np.array([0, 0, 1, 1, 1, 1])
    pred = collapse.knn_predict(x, y, k=2)
    assert pred.tolist() == [0, 0, 0, 1, 1, 1]
    assert collapse.knn_accuracy(x, y, k=2) == pytest.approx(5 / 6)
    assert collapse.knn_accuracy(x, y, k=2, target=[0, 0, 0, 1, 1, 1]) == 1.0


def test_knn_errors_name_the_fix(digits_xy):
    x, y = digits_xy
    with pytest.raises(ValueError, match=r"out of range.*\[1, 4\]"):
        collapse.knn_accuracy(x[:5], y[:5], k=5)
    with pytest.raises(ValueError, match="in the same order"):
        collapse.knn_accuracy(x, y[:-1])
    with pytest.raises(ValueError, match="together"):
        collapse.knn_accuracy(x, y, x)


# --------------------------------------------------------------------------- collapse


def test_class_distance_ratio_matches_pairwise():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 120)
    x = rng.normal(size=(120, 6)) + 2 * np.eye(6)[y]
    a = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1 - a @ a.T
    same = y[:, None] == y[None, :]
    off = ~np.eye(120, dtype=bool)
    expected = dist[same & off].mean() / dist[~same].mean()
    assert collapse.class_distance_ratio(x, y) == pytest.approx(expected, rel=1e-6)


def test_class_distance_ratio_hand_cases():
    # classes collapsed to orthogonal points: within distance 0, between distance 1
    assert collapse.class_distance_ratio(np.eye(2)[[0, 0, 1, 1]], [0, 0, 1, 1]) == 0.0
    # one class only: no between-class pair
    assert np.isnan(collapse.class_distance_ratio(np.ones((3, 2)), [0, 0, 0]))


def test_collapse_metrics_follow_the_label_the_features_encode(digits_noisy):
    _, nz = digits_noisy
    given, true = nz.noisy, nz.clean
    k = int(min(np.bincount(given).min(), np.bincount(true).min())) - 1
    # embedding memorised the given labels: every noisy sample sits among its given class
    mem = collapse.collapse_metrics(np.eye(10)[given], given, true, k=k)
    assert mem["noisy_agree_given"] == 1.0 and mem["noisy_agree_true"] == 0.0
    assert mem["knn_acc_given"] == 1.0 and mem["distance_ratio_given"] == pytest.approx(0.0)
    # embedding of the true classes: the neighbours' majority (70 % clean) says the true class
    robust = collapse.collapse_metrics(np.eye(10)[true], given, true, k=k)
    assert robust["noisy_agree_true"] == 1.0 and robust["noisy_agree_given"] == 0.0
    assert robust["knn_acc_true"] == 1.0
    assert robust["noise_rate"] == pytest.approx(nz.is_noisy.mean())
    nb = collapse.noisy_neighbourhood(np.eye(10)[true], given, true, k=k)
    assert nb == {"agree_given": 0.0, "agree_true": 1.0, "n_noisy": int(nz.is_noisy.sum())}


def test_collapse_metrics_without_true_labels(digits_xy):
    x, y = digits_xy
    m = collapse.collapse_metrics(x, y, None, k=5)
    assert set(m) == {"knn_acc_given", "distance_ratio_given"}
    assert m["knn_acc_given"] == pytest.approx(collapse.knn_accuracy(x, y, k=5))


def test_collapse_over_epochs_and_table_from_a_run_dir(tmp_path, digits_noisy, write_run):
    x, nz = digits_noisy
    given, true = nz.noisy, nz.clean
    rng = np.random.default_rng(0)
    snaps = {1: np.eye(10)[true] + rng.normal(0, 0.05, (len(true), 10)),
             2: np.eye(10)[given] + rng.normal(0, 0.05, (len(true), 10))}
    run, _ = write_run(tmp_path, "r", snaps, x, given, true)
    table = collapse.collapse_over_epochs(run, k=10)
    assert table["epoch"].tolist() == [1, 2]
    # collapse: the noisy samples move from the true class to the given one
    assert table.loc[0, "noisy_agree_true"] > 0.9 and table.loc[1, "noisy_agree_given"] > 0.9
    direct = collapse.collapse_metrics(run.snapshot(2)["features"], given, true, k=10)
    assert table.loc[1, "knn_acc_true"] == pytest.approx(direct["knn_acc_true"])
    knn = collapse.knn_accuracy_table({("moit", 0.3): run, ("other", 0.3): run.path}, k=10)
    assert isinstance(knn.index, pd.MultiIndex)
    assert knn.loc[("moit", 0.3), "knn_acc_true"] == pytest.approx(
        collapse.knn_accuracy(x, given, k=10, target=true))


def test_collapse_over_epochs_needs_snapshots(tmp_path, digits_noisy, write_run):
    x, nz = digits_noisy
    run, _ = write_run(tmp_path, "r", {}, x, nz.noisy, nz.clean)
    with pytest.raises(ValueError, match="--snapshot-epochs"):
        collapse.collapse_over_epochs(run)
