"""widgets: the panels' numbers (no browser) and the ipywidgets UI bound to them."""

from __future__ import annotations

import re
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from moit_explore.analysis import collapse, label_issues, projection  # noqa: E402
from moit_explore.course import epoch_panel, widgets
from moit_explore.maths import detection, neighbors, noise, validation
from moit_explore.training import rundir, runs

K_MAX = 60


@pytest.fixture(scope="module")
def setup(digits):
    """Digits with 30 % symmetric noise, PCA features (continuous: no similarity ties)."""
    pixels = digits.train_images.reshape(len(digits.train_labels), -1) / 16.0
    feats = PCA(20, random_state=0).fit_transform(pixels).astype(np.float32)
    nz = noise.inject_noise(digits.train_labels, "symmetric", 0.3, 10, seed=0)
    nb = neighbors.knn_search(feats, K_MAX, backend="torch")
    return feats, nz, nb


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


# --------------------------------------------------------------------------- k slider


def test_k_slider_equals_fresh_detection(setup):
    feats, nz, nb = setup
    panel = widgets.KSliderPanel(nb, nz.noisy, 10, is_noisy=nz.is_noisy, k=K_MAX)
    for k in (1, 7, 25, K_MAX):
        got = panel.update(k)
        fresh = detection.detect_noise(feats, nz.noisy, 10, k=k, backend="torch")
        assert np.array_equal(panel.detection.clean, fresh.clean), k
        assert np.array_equal(panel.detection.discrepancy, fresh.discrepancy), k
        ref = detection.detection_metrics(fresh.clean, nz.is_noisy, fresh.discrepancy)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, nan_ok=True), (k, key)
        assert got["k"] == k and got["n_selected"] == fresh.clean.sum()
        h = panel.histograms
        assert h["correct label"].sum() == (~nz.is_noisy).sum()
        assert h["noisy label"].sum() == nz.is_noisy.sum()
        counts, _ = np.histogram(fresh.discrepancy[nz.is_noisy], h["edges"])
        assert np.array_equal(h["noisy label"], counts)
    # metrics(k) answers without moving the panel
    m = panel.metrics(7)
    assert panel.k == K_MAX and m["k"] == 7
    assert panel.update(25, balance="max")["n_selected"] == detection.detect_noise(
        feats, nz.noisy, 10, k=25, balance="max", backend="torch").clean.sum()
    with pytest.raises(ValueError, match=r"\[1, 60\]"):
        panel.update(K_MAX + 1)


def test_k_slider_without_true_labels(setup):
    _, nz, nb = setup
    panel = widgets.KSliderPanel(nb, nz.noisy, 10, k=10)
    m = panel.last
    assert "precision" not in m and m["n_selected"] + m["n_not_selected"] == len(nz.noisy)
    assert set(panel.histograms) == {"edges", "selected for training",
                                     "not selected for training"}
    assert panel.histograms["not selected for training"].sum() == m["n_not_selected"]
    # label issues are the label-issue verdict at the panel's k, not the training selection
    mask = label_issues.find_label_issues(nz.noisy, nb, k=10)
    assert m["n_label_issues"] == int(mask.sum()) != m["n_not_selected"]


def test_k_slider_starts_at_the_one_default_k(setup):
    _, nz, nb = setup
    panel = widgets.KSliderPanel(nb, nz.noisy, 10)
    assert panel.k == min(validation.default_k(nz.noisy), K_MAX)


def test_k_slider_widget_reacts(setup):
    pytest.importorskip("ipywidgets")
    _, nz, nb = setup
    panel = widgets.KSliderPanel(nb, nz.noisy, 10, is_noisy=nz.is_noisy, k=10)
    ui = panel.widget()
    assert panel.widget() is ui
    assert list(panel.controls) == ["k", "balance"]
    assert panel.controls["k"].description == "k" and panel.controls["k"].max == K_MAX
    assert widgets.METRICS_CSS_CLASS in panel._html._dom_classes
    before = _text(panel._html.value)
    assert re.search(r"precision 0\.\d{3} · recall 0\.\d{3} · F1 0\.\d{3}", before)
    assert f"selected for training {panel.last['n_selected']:,}" in before
    assert panel._image.value[:4] == b"\x89PNG"
    panel.controls["k"].value = 40  # what a browser does when the slider moves
    assert panel.k == 40
    after = _text(panel._html.value)
    assert after != before and after.startswith("k 40")
    panel.update(5)  # and the other way round: update() moves the slider
    assert panel.controls["k"].value == 5
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_panels_work_without_ipywidgets(setup, monkeypatch):
    _, nz, nb = setup
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    panel = widgets.KSliderPanel(nb, nz.noisy, 10, k=5)
    assert panel.update(6)["k"] == 6
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        panel.widget()


# --------------------------------------------------------------------------- threshold


def test_threshold_panel_counts_match_numpy(setup):
    _, nz, nb = setup
    det = detection.detect_from_neighbors(nb, nz.noisy, 10, k=20)
    panel = widgets.ThresholdPanel(det.discrepancy, labels=nz.noisy, agree=det.agree,
                                   num_classes=10, is_noisy=nz.is_noisy)
    for t in (0.0, 0.3, 1.0, 2.5, 10.0):
        got = panel.update(threshold=t)
        clean = det.discrepancy <= t
        flagged = ~clean
        tp = np.sum(flagged & nz.is_noisy)
        assert got["n_selected"] == clean.sum()
        assert got["selected_frac"] == pytest.approx(clean.mean())
        if flagged.any():
            assert got["precision"] == pytest.approx(tp / flagged.sum())
        else:
            assert np.isnan(got["precision"])
        assert got["recall"] == pytest.approx(tp / nz.is_noisy.sum())
        # the panel's numbers are detection_metrics' (one PRF: NaN where undefined)
        ref = detection.detection_metrics(clean, nz.is_noisy)
        for key in ("precision", "recall", "f1", "selected_noise_rate"):
            assert got[key] == pytest.approx(ref[key], nan_ok=True), (t, key)
    for balance in ("none", "min", "median", "max"):
        got = panel.update(criterion=balance)
        ref = detection.select_clean(det.discrepancy, nz.noisy, det.agree, 10, balance)
        assert np.array_equal(panel.clean, ref) and got["n_selected"] == ref.sum()
    assert panel.update(criterion="median")["n_selected"] == det.clean.sum()


def test_threshold_panel_short_form_and_widget(setup):
    _, nz, nb = setup
    det = detection.detect_from_neighbors(nb, nz.noisy, 10, k=20)
    panel = widgets.ThresholdPanel(det.discrepancy, is_noisy=nz.is_noisy)
    assert panel.criteria == ("threshold",) and panel.is_noisy is not None
    assert panel.last["n_selected"] == np.sum(det.discrepancy <= np.median(det.discrepancy))
    with pytest.raises(ValueError, match="needs labels, agree and num_classes"):
        panel.update(criterion="median")
    from_det = widgets.ThresholdPanel.from_detection(det, nz.noisy, is_noisy=nz.is_noisy,
                                                     criterion="median")
    assert from_det.last["n_selected"] == det.clean.sum()
    # one contract: no reading a bool array in second place as is_noisy, nor a Detection first
    with pytest.raises(TypeError):
        widgets.ThresholdPanel(det.discrepancy, nz.is_noisy)
    with pytest.raises(TypeError, match="from_detection"):
        widgets.ThresholdPanel(det, is_noisy=nz.is_noisy)
    pytest.importorskip("ipywidgets")
    panel.widget()
    panel.controls["threshold"].value = 0.5
    assert panel.threshold == 0.5
    assert f"selected for training {np.sum(det.discrepancy <= 0.5):,}" in _text(panel._html.value)


# --------------------------------------------------------------------------- images


def test_suspicious_images_most_suspicious_of_a_class(setup, digits):
    _, nz, nb = setup
    det = detection.detect_from_neighbors(nb, nz.noisy, 10, k=20)
    panel = widgets.SuspiciousImagesPanel(digits.train_images, nz.noisy,
                                          discrepancy=det.discrepancy,
                                          suggested=det.corrected_labels,
                                          classes=digits.classes, n_images=12)
    for c in (0, 3):
        shown = panel.update(c)
        members = np.flatnonzero(nz.noisy == c)
        ref = members[np.argsort(-det.discrepancy[members], kind="stable")][:12]
        assert np.array_equal(shown, ref)
    everything = panel.update(None)
    assert np.array_equal(everything, np.argsort(-det.discrepancy, kind="stable")[:12])
    # the top of the ranking is mostly truly mislabelled
    assert nz.is_noisy[everything].mean() > 0.7
    # from a detection
    other = widgets.SuspiciousImagesPanel.from_detection(digits.train_images, det, nz.noisy,
                                                         classes=digits.classes,
                                                         true_labels=nz.clean)
    with pytest.raises(TypeError, match="from_detection"):
        widgets.SuspiciousImagesPanel(digits.train_images, det, discrepancy=det.discrepancy,
                                      suggested=det.corrected_labels)
    assert np.array_equal(other.update(3)[:12], panel.update(3))
    with pytest.raises(ValueError, match="class index"):
        panel.update(10)
    pytest.importorskip("ipywidgets")
    other.widget()
    other.controls["cls"].value = 5
    assert other.cls == 5 and "truly mislabelled" in other._html.value


# --------------------------------------------------------------------------- epochs


def _write_run(root, name, given, true, snaps, final_feats, config=None):
    path = rundir.create_run_dir(root, name)
    runs.write_json_atomic(path / runs.CONFIG_FILE, {"method": "moit", **(config or {})})
    for epoch, feats in snaps.items():
        runs.save_snapshot(path, epoch, feats, given, true)
    runs.save_final(path, final_feats, None, given, true)
    return runs.load_run(path)


def test_epoch_panel_metrics_and_compare(tmp_path, setup):
    feats, nz, _ = setup
    given, true = nz.noisy, nz.clean
    rng = np.random.default_rng(0)
    snaps = {1: np.eye(10)[true] + rng.normal(0, 0.1, (len(true), 10)),
             3: np.eye(10)[given] + rng.normal(0, 0.1, (len(true), 10))}
    run = _write_run(tmp_path, "supcon", given, true, snaps, feats)
    other = _write_run(tmp_path, "icl", given, true, {2: feats}, feats)
    panel = epoch_panel.EpochPanel(run, compare=other, k=10, subsample=300)
    assert panel.epochs == [1, 3] and panel.epoch == 3
    out = panel.update(1)
    ref = collapse.collapse_metrics(run.snapshot(1)["features"], given, true, k=10)
    for key, value in ref.items():
        assert out[key] == pytest.approx(value)
    assert out["compare"]["epoch"] == 2  # the other run's nearest snapshot
    assert panel.projections["run"].coords.shape == (300, 2)
    late = panel.update(3)
    assert late["noisy_agree_given"] > out["noisy_agree_given"]  # collapse onto given labels
    final_only = epoch_panel.EpochPanel(_write_run(tmp_path, "bare", given, true, {}, feats), k=10)
    assert final_only.epochs == [-1]
    with pytest.raises(ValueError, match="available"):
        panel.update(2)
    pytest.importorskip("ipywidgets")
    panel.widget()
    panel.controls["epoch"].value = 1
    assert panel.epoch == 1 and "kNN acc (true)" in panel._html.value


def test_epoch_panel_takes_k_from_the_run_config(tmp_path, setup):
    """Where a run is at hand its k comes from its config.json (Run.k), not a default."""
    feats, nz, _ = setup
    run = _write_run(tmp_path, "r", nz.noisy, nz.clean, {1: feats}, feats, config={"k": 7})
    assert run.k == 7 and runs.load_run(run.path).k == 7
    panel = epoch_panel.EpochPanel(run, subsample=200)
    ref = collapse.collapse_metrics(run.snapshot(1)["features"], nz.noisy, nz.clean, k=7)
    other_k = collapse.collapse_metrics(run.snapshot(1)["features"], nz.noisy, nz.clean, k=30)
    out = panel.update(1)
    for key, value in ref.items():
        assert out[key] == pytest.approx(value)
    assert any(out[key] != pytest.approx(other_k[key]) for key in ref)


def test_epoch_panel_draws_the_knn_curve_of_every_snapshot(tmp_path, setup):
    feats, nz, _ = setup
    given, true = nz.noisy, nz.clean
    rng = np.random.default_rng(1)
    snaps = {e: np.eye(10)[true if e < 3 else given] + rng.normal(0, 0.1, (len(true), 10))
             for e in (1, 2, 3, 4)}
    run = _write_run(tmp_path, "supcon", given, true, snaps, feats,
                     config={"method": "supcon", "rate": 0.3, "k": 10})
    other = _write_run(tmp_path, "icl", given, true, {1: feats, 4: feats}, feats,
                       config={"method": "icl", "rate": 0.3, "k": 10})
    panel = epoch_panel.EpochPanel(run, compare=other, subsample=None)
    curve = panel.curve("run")
    assert list(curve["epoch"]) == [1, 2, 3, 4] and panel.curve_metric == "knn_acc_true"
    for epoch in (1, 4):
        ref = collapse.collapse_metrics(run.snapshot(epoch)["features"], given, true, k=10)
        row = curve.set_index("epoch").loc[epoch]
        assert row["knn_acc_true"] == pytest.approx(ref["knn_acc_true"])
    # the snapshots follow the true labels, then the given ones: the curve shows the collapse
    assert curve["knn_acc_true"].iloc[-1] < curve["knn_acc_true"].iloc[0] - 0.2
    assert list(panel.curve("compare")["epoch"]) == [1, 4]
    assert set(panel.curves) == {"supcon 30%", "icl 30%"}
    with pytest.raises(ValueError, match="which"):
        panel.curve("other")
    pytest.importorskip("ipywidgets")
    panel.widget()
    before = panel._image.value
    panel.controls["epoch"].value = 2
    assert panel._image.value != before and panel.epoch == 2


def test_epoch_panel_frame_is_the_static_projection(tmp_path, setup):
    """With the same method and cache, the panel's frame is the static figure's projection."""
    feats, nz, _ = setup
    run = _write_run(tmp_path, "r", nz.noisy[:300], nz.clean[:300], {1: feats[:300]},
                     feats[:300], config={"k": 10})
    static = projection.embedding_projection(run.snapshot(1)["features"], method="pca", seed=0,
                                           cache_path=tmp_path / "proj")
    panel = epoch_panel.EpochPanel(run, method="pca", subsample=None, cache_path=tmp_path / "proj")
    assert np.array_equal(panel.projections["run"].coords, static.coords)


def test_noise_panel_matches_inject_noise(setup):
    _, nz, _ = setup
    labels = nz.clean
    flips = {1: 7, 7: 1, 3: 8}
    panel = widgets.NoisePanel(labels, 10, flip_map=flips, rate=0.4)
    ref = noise.inject_noise(labels, "symmetric", 0.4, 10, seed=42)
    assert np.array_equal(panel.noisy.noisy, ref.noisy)
    out = panel.update(rate=0.2, kind="asymmetric")
    ref = noise.inject_noise(labels, "asymmetric", 0.2, 10, seed=42, flip_map=flips)
    assert np.array_equal(panel.noisy.noisy, ref.noisy)
    assert out["actual_rate"] == pytest.approx(ref.actual_rate)
    assert out["n_noisy"] == int(ref.is_noisy.sum())
    assert widgets.NoisePanel(labels, 10).kinds == ("symmetric",)
    with pytest.raises(ValueError, match="kind"):
        widgets.NoisePanel(labels, 10, kind="asymmetric")
    pytest.importorskip("ipywidgets")
    panel.widget()
    before = _text(panel._html.value)
    assert "realised rate" in before and "asymmetric" in before
    panel.controls["rate"].value = 0.6
    assert panel.rate == pytest.approx(0.6) and _text(panel._html.value) != before
