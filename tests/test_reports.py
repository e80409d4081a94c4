"""analysis.reports: detection quality and run summaries. Reference values from scikit-learn
or hand cases, never from the code under test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from moit_explore.analysis import reports
from moit_explore.maths import detection
from moit_explore.training import presets, runs

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


def test_detection_over_epochs_and_summary(tmp_path, digits_noisy, write_run):
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
