"""course.epoch_panel: an embedding over training, snapshot by snapshot, against the collapse
measures and projections it shows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import move_control  # noqa: E402

from moit_explore.analysis import collapse, projection  # noqa: E402
from moit_explore.course import epoch_panel  # noqa: E402
from moit_explore.training import rundir, runs  # noqa: E402


def _write_run(root, name, given, true, snaps, final_feats, config=None):
    path = rundir.create_run_dir(root, name)
    runs.write_json_atomic(path / runs.CONFIG_FILE, {"method": "moit", **(config or {})})
    for epoch, feats in snaps.items():
        runs.save_snapshot(path, epoch, feats, given, true)
    runs.save_final(path, final_feats, None, given, true)
    return runs.load_run(path)


def test_epoch_panel_metrics_and_compare(tmp_path, pca_digits):
    feats, nz, _ = pca_digits
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
    move_control(panel, "epoch", 1)
    assert panel.epoch == 1 and "kNN acc (true)" in panel._html.value


def test_epoch_panel_takes_k_from_the_run_config(tmp_path, pca_digits):
    """Where a run is at hand its k comes from its config.json (Run.k), not a default."""
    feats, nz, _ = pca_digits
    run = _write_run(tmp_path, "r", nz.noisy, nz.clean, {1: feats}, feats, config={"k": 7})
    assert run.k == 7 and runs.load_run(run.path).k == 7
    panel = epoch_panel.EpochPanel(run, subsample=200)
    ref = collapse.collapse_metrics(run.snapshot(1)["features"], nz.noisy, nz.clean, k=7)
    other_k = collapse.collapse_metrics(run.snapshot(1)["features"], nz.noisy, nz.clean, k=30)
    out = panel.update(1)
    for key, value in ref.items():
        assert out[key] == pytest.approx(value)
    assert any(out[key] != pytest.approx(other_k[key]) for key in ref)


def test_epoch_panel_draws_the_knn_curve_of_every_snapshot(tmp_path, pca_digits):
    feats, nz, _ = pca_digits
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


def test_epoch_panel_frame_is_the_static_projection(tmp_path, pca_digits):
    """With the same method and cache, the panel's frame is the static figure's projection."""
    feats, nz, _ = pca_digits
    run = _write_run(tmp_path, "r", nz.noisy[:300], nz.clean[:300], {1: feats[:300]},
                     feats[:300], config={"k": 10})
    static = projection.embedding_projection(run.snapshot(1)["features"], method="pca", seed=0,
                                           cache_path=tmp_path / "proj")
    panel = epoch_panel.EpochPanel(run, method="pca", subsample=None, cache_path=tmp_path / "proj")
    assert np.array_equal(panel.projections["run"].coords, static.coords)
