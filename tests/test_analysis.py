"""analysis: kNN / collapse metrics, detection quality, label issues, projections.

Real data: scikit-learn digits (pixels as features) and a Fashion-MNIST subset with injected
noise. Reference values come from brute-force NumPy or scikit-learn, never from the code
under test.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.decomposition import PCA

from moit_explore.analysis import collapse, projection, reports
from moit_explore.maths import detection, noise
from moit_explore.training import presets, rundir, runs

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits_xy(digits):
    x = digits.train_images.reshape(len(digits.train_labels), -1).astype(np.float32)
    return x, digits.train_labels


@pytest.fixture(scope="module")
def digits_noisy(digits_xy):
    x, y = digits_xy
    nz = noise.inject_noise(y, "symmetric", 0.3, 10, seed=0)
    return x, nz


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


def write_run(root, name, snapshots, final_features, given, true, *, true_known=True,
              metrics_rows=None, detect_k=10):
    """A real run directory through the runs module (the format train.py writes)."""
    path = rundir.create_run_dir(root, name)
    runs.write_json_atomic(path / runs.CONFIG_FILE,
                           {"method": "moit", "true_labels_known": true_known,
                            "classes": [f"c{i}" for i in range(int(given.max()) + 1)]})
    c = int(max(given.max(), true.max())) + 1
    t = np.zeros((c, c))
    np.add.at(t, (true, given), 1)
    noise.save_noise(path / runs.NOISE_FILE, noise.NoisyLabels(
        noisy=given, clean=true, is_noisy=given != true,
        transition=t / np.maximum(t.sum(1, keepdims=True), 1), kind="symmetric", rate=0.3,
        seed=0))
    for row in metrics_rows or []:
        runs.append_metrics(path, row)
    for epoch, feats in snapshots.items():
        runs.save_snapshot(path, epoch, feats, given, true)
    det = detection.detect_noise(final_features, given, c, k=detect_k, backend="torch")
    runs.save_final(path, final_features, det, given, true)
    return runs.load_run(path), det


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


def test_collapse_over_epochs_and_table_from_a_run_dir(tmp_path, digits_noisy):
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


def test_collapse_over_epochs_needs_snapshots(tmp_path, digits_noisy):
    x, nz = digits_noisy
    run, _ = write_run(tmp_path, "r", {}, x, nz.noisy, nz.clean)
    with pytest.raises(ValueError, match="--snapshot-epochs"):
        collapse.collapse_over_epochs(run)


# --------------------------------------------------------------------------- soft labels


# --------------------------------------------------------------------------- detection


def test_detection_report_hand_case():
    clean = np.array([True, True, False, False, False])
    noisy = np.array([False, True, True, False, True])
    score = np.array([0.1, 0.2, 0.9, 0.5, 0.8])
    r = reports.detection_report(clean, noisy, score)
    # flagged = samples 2, 3, 4; noisy = 1, 2, 4 -> tp 2, fp 1, fn 1
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    assert r["selected_noise_rate"] == pytest.approx(1 / 2)
    # noisy scores 0.2, 0.9, 0.8 vs clean 0.1, 0.5: 5 of 6 pairs ordered right
    assert r["auroc"] == pytest.approx(5 / 6)
    # ranking 0.9 (N), 0.8 (N), 0.5 (C), 0.2 (N): AP = (1 + 1 + 3/4) / 3
    assert r["average_precision"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert r["n_selected"] == 2 and r["n_noisy"] == 3


def test_detection_report_and_curves_match_sklearn(digits_noisy):
    x, nz = digits_noisy
    det = detection.detect_noise(x, nz.noisy, 10, k=20, backend="torch")
    r = reports.detection_report(det.clean, nz.is_noisy, det.discrepancy)
    flagged = ~det.clean
    assert r["precision"] == pytest.approx(skm.precision_score(nz.is_noisy, flagged))
    assert r["recall"] == pytest.approx(skm.recall_score(nz.is_noisy, flagged))
    assert r["f1"] == pytest.approx(skm.f1_score(nz.is_noisy, flagged))
    assert r["auroc"] == pytest.approx(skm.roc_auc_score(nz.is_noisy, det.discrepancy))
    assert r["average_precision"] == pytest.approx(
        skm.average_precision_score(nz.is_noisy, det.discrepancy))
    assert r["auroc"] > 0.85


def test_per_class_detection_matches_subsets(digits_noisy):
    x, nz = digits_noisy
    det = detection.detect_noise(x, nz.noisy, 10, k=20, backend="torch")
    t = reports.per_class_detection(det.clean, nz.is_noisy, nz.noisy, 10)
    assert len(t) == 10 and t["n"].sum() == len(nz.noisy)
    assert t["n_selected"].sum() == det.clean.sum()
    assert t["n_not_selected"].sum() == (~det.clean).sum() and "n_label_issues" not in t
    for c in (0, 7):
        m = nz.noisy == c
        assert t.loc[c, "precision"] == pytest.approx(
            skm.precision_score(nz.is_noisy[m], ~det.clean[m], zero_division=np.nan))
        assert t.loc[c, "recall"] == pytest.approx(
            skm.recall_score(nz.is_noisy[m], ~det.clean[m]))


def test_detection_over_epochs_and_summary(tmp_path, digits_noisy):
    x, nz = digits_noisy
    rows = [{"epoch": 1, "test_acc": 0.5, "time_s": 2.0, "det_precision": None},
            {"epoch": 2, "test_acc": 0.7, "time_s": 3.0, "det_precision": 0.6,
             "det_recall": 0.8, "det_f1": 0.69},
            {"epoch": 3, "test_acc": 0.65, "time_s": 3.0, "det_precision": 0.7,
             "det_recall": 0.9, "det_f1": 0.79}]
    run, _ = write_run(tmp_path, "r", {}, x, nz.noisy, nz.clean, metrics_rows=rows)
    d = reports.detection_over_epochs(run)
    assert d["epoch"].tolist() == [2, 3]
    assert d["precision"].tolist() == [0.6, 0.7] and "f1" in d
    s = reports.summarize_runs({"MOIT": run})
    assert s.loc["MOIT", "test_acc_last"] == 0.65 and s.loc["MOIT", "test_acc_best"] == 0.7
    assert s.loc["MOIT", "time_s"] == 8.0
    assert s.loc["MOIT", "noise_rate"] == pytest.approx(nz.is_noisy.mean())
    with pytest.raises(ValueError, match="without detection"):
        reports.detection_over_epochs(pd.DataFrame({"epoch": [1], "test_acc": [0.1]}))


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


def test_continued_metrics_puts_moit_plus_after_its_base_run(tmp_path, monkeypatch):
    import json

    from moit_explore.training import train

    monkeypatch.chdir(tmp_path)  # relative paths, as from the command line
    moit = train.train(presets.preset("smoke", runs_root="r"))
    plus = train.finetune(moit, presets.finetune_preset("smoke"))
    assert not moit.is_absolute() and runs.load_run(plus).config["base_run"] == str(moit.resolve())
    n_moit = presets.preset("smoke").epochs
    n_plus = presets.finetune_preset("smoke").epochs
    loaded = {"MOIT": runs.load_run(moit), "MOIT+": runs.load_run(plus)}
    curves = reports.continued_metrics(loaded)
    assert curves["MOIT"]["epoch"].tolist() == list(range(1, n_moit + 1))
    assert curves["MOIT+"]["epoch"].tolist() == list(range(n_moit + 1, n_moit + n_plus + 1))
    assert loaded["MOIT+"].metrics["epoch"].tolist() == list(range(1, n_plus + 1))  # a copy
    # without its base run MOIT+ keeps its own epochs
    alone = reports.continued_metrics({"MOIT+": plus})
    assert alone["MOIT+"]["epoch"].tolist() == list(range(1, n_plus + 1))

    # a run directory from an older version (relative base_run), read from another folder:
    # found all the same, because MOIT+ sits inside its base run
    cfg_file = plus / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_run"] = str(moit)
    cfg_file.write_text(json.dumps(cfg))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    curves = reports.continued_metrics({"MOIT": tmp_path / moit, "MOIT+": tmp_path / plus})
    assert curves["MOIT+"]["epoch"].min() == n_moit + 1

    # a MOIT+ run interrupted before its first epoch has no rows: nothing to shift
    (tmp_path / plus / "metrics.jsonl").write_text("")
    empty = reports.continued_metrics({"MOIT": tmp_path / moit, "MOIT+": tmp_path / plus})
    assert len(empty["MOIT+"]) == 0


def test_memorisation_verdict_and_its_lower_bound():
    row = {"train_acc_given_last": 0.909, "noise_rate": 0.4, "test_acc_last": 0.668,
           "test_acc_best": 0.785}
    v = reports.memorisation(row)
    assert v.memorises and v.min_wrong_fitted == pytest.approx(0.309)
    assert v.test_drop == pytest.approx(0.117)
    v = reports.memorisation(dict(row, train_acc_given_last=0.582))
    assert not v.memorises and v.min_wrong_fitted == 0.0
    with pytest.raises(ValueError, match="noise_rate"):
        reports.memorisation({k: x for k, x in row.items() if k != "noise_rate"})
