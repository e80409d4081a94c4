"""widgets: the panels' numbers (no browser) and the ipywidgets UI bound to them."""

from __future__ import annotations

import re
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import move_control

from moit_explore.analysis import label_issues  # noqa: E402
from moit_explore.course import widgets
from moit_explore.maths import detection, noise, validation


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


# --------------------------------------------------------------------------- k slider


def test_k_slider_equals_fresh_detection(pca_digits):
    feats, nz, nb = pca_digits
    panel = widgets.KSliderPanel(nb, nz.noisy, 10, is_noisy=nz.is_noisy, k=nb.k_max)
    for k in (1, 7, 25, nb.k_max):
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
    assert panel.k == nb.k_max and m["k"] == 7
    assert panel.update(25, balance="max")["n_selected"] == detection.detect_noise(
        feats, nz.noisy, 10, k=25, balance="max", backend="torch").clean.sum()
    with pytest.raises(ValueError, match=r"\[1, 60\]"):
        panel.update(nb.k_max + 1)


def test_k_slider_without_true_labels(pca_digits):
    _, nz, nb = pca_digits
    panel = widgets.KSliderPanel(nb, nz.noisy, 10, k=10)
    m = panel.last
    assert "precision" not in m and m["n_selected"] + m["n_not_selected"] == len(nz.noisy)
    assert set(panel.histograms) == {"edges", "selected for training",
                                     "not selected for training"}
    assert panel.histograms["not selected for training"].sum() == m["n_not_selected"]
    # label issues are the label-issue verdict at the panel's k, not the training selection
    mask = label_issues.find_label_issues(nz.noisy, nb, k=10)
    assert m["n_label_issues"] == int(mask.sum()) != m["n_not_selected"]


def test_k_slider_starts_at_the_one_default_k(pca_digits):
    _, nz, nb = pca_digits
    panel = widgets.KSliderPanel(nb, nz.noisy, 10)
    assert panel.k == min(validation.default_k(nz.noisy), nb.k_max)


def test_k_slider_widget_reacts(pca_digits):
    pytest.importorskip("ipywidgets")
    _, nz, nb = pca_digits
    panel = widgets.KSliderPanel(nb, nz.noisy, 10, is_noisy=nz.is_noisy, k=10)
    ui = panel.widget()
    assert panel.widget() is ui
    assert list(panel.controls) == ["k", "balance"]
    assert panel.controls["k"].description == "k" and panel.controls["k"].max == nb.k_max
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


def test_panels_work_without_ipywidgets(pca_digits, monkeypatch):
    _, nz, nb = pca_digits
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    panel = widgets.KSliderPanel(nb, nz.noisy, 10, k=5)
    assert panel.update(6)["k"] == 6
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        panel.widget()


# --------------------------------------------------------------------------- threshold


def test_threshold_panel_counts_match_numpy(pca_digits):
    _, nz, nb = pca_digits
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


def test_threshold_panel_short_form_and_widget(pca_digits):
    _, nz, nb = pca_digits
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
    move_control(panel, "threshold", 0.5)
    assert panel.threshold == 0.5
    assert f"selected for training {np.sum(det.discrepancy <= 0.5):,}" in _text(panel._html.value)


# --------------------------------------------------------------------------- images


def test_suspicious_images_most_suspicious_of_a_class(pca_digits, digits):
    _, nz, nb = pca_digits
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
    move_control(other, "cls", 5)
    assert other.cls == 5 and "truly mislabelled" in other._html.value


def test_noise_panel_matches_inject_noise(pca_digits):
    _, nz, _ = pca_digits
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
