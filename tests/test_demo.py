"""The demo's summary sentences are computed from the run's numbers (both verdicts)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from moit_explore.course import demo
from moit_explore.maths import noise


def _summary(ce_fit: float, ce_last: float, ce_best: float, moit: float, plus: float):
    rows = {
        "CE": dict(test_acc_last=ce_last, test_acc_best=ce_best, train_acc_given_last=ce_fit,
                   noise_rate=0.4, det_precision_last=0.8, det_recall_last=0.9,
                   det_selected_frac_last=0.55),
        "MOIT": dict(test_acc_last=moit, test_acc_best=moit, train_acc_given_last=0.6,
                     noise_rate=0.4, det_precision_last=0.9, det_recall_last=0.8,
                     det_selected_frac_last=0.65),
        "MOIT+": dict(test_acc_last=plus, test_acc_best=plus, train_acc_given_last=0.6,
                      noise_rate=0.4, det_precision_last=0.9, det_recall_last=0.8,
                      det_selected_frac_last=0.65),
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def _noise():
    labels = np.repeat(np.arange(10), 50)
    return noise.inject_noise(labels, "symmetric", 0.4, 10, seed=0)


def _metrics(best_epoch: int):
    acc = np.linspace(0.5, 0.6, 10)
    acc[best_epoch - 1] = 0.9
    return pd.DataFrame({"epoch": np.arange(1, 11), "test_acc": acc})


def test_memorising_ce_is_described_with_its_numbers():
    lines = demo.describe(_summary(0.9, 0.68, 0.78, 0.80, 0.82), _metrics(4), _noise())
    text = " ".join(lines)
    assert "CE memorises the noise" in text and "90.0% of the given" in text
    assert "fell from 0.780 (epoch 4) to 0.680" in text
    assert "MOIT+ ends at 0.820, 14.0 points ahead of CE's last epoch" in text
    assert "sets aside 35.0%" in text and "precision" in text


def test_ce_that_does_not_memorise_and_wins_is_said_so():
    lines = demo.describe(_summary(0.5, 0.82, 0.83, 0.75, 0.76), _metrics(2), _noise())
    text = " ".join(lines)
    assert "CE does not memorise the noise" in text and "memorises the noise:" not in text
    assert "MOIT+ ends at 0.760, 6.0 points behind CE's last epoch" in text


def _det_metrics(f1, auroc):
    f1 = np.asarray(f1, dtype=float)
    return pd.DataFrame({"epoch": np.arange(1, len(f1) + 1), "det_f1": f1,
                         "det_precision": f1 - 0.05, "det_recall": f1 + 0.05,
                         "det_auroc": np.asarray(auroc, dtype=float),
                         "test_acc": np.linspace(0.5, 0.6, len(f1))})


def test_detection_over_training_both_verdicts():
    better = demo.detection_over_training(_det_metrics([0.8, 0.93, 0.9], [0.9, 0.97, 0.975]),
                                          _det_metrics([0.8, 0.85, 0.88], [0.9, 0.95, 0.96]))
    text = " ".join(better)
    assert "detection improves as the embedding learns: F1 0.800 after epoch 1" in text
    assert "0.900 after epoch 3" in text and "best F1 0.930 at epoch 2" in text
    assert "CE's encoder features: AUROC 0.975 vs 0.960 (ahead), F1 0.900 vs 0.880 (ahead)" \
        in text
    worse = " ".join(demo.detection_over_training(
        _det_metrics([0.81, 0.77], [0.95, 0.91]), _det_metrics([0.8, 0.89], [0.9, 0.96])))
    assert "gets worse as MOIT trains: F1 0.810 after epoch 1" in worse
    assert "AUROC 0.910 vs 0.960 (not ahead), F1 0.770 vs 0.890 (not ahead)" in worse
    mixed = " ".join(demo.detection_over_training(
        _det_metrics([0.81, 0.888], [0.95, 0.963]), _det_metrics([0.8, 0.878], [0.9, 0.966])))
    assert "AUROC 0.963 vs 0.966 (not ahead), F1 0.888 vs 0.878 (ahead)" in mixed


def test_detection_over_training_of_a_real_run(tmp_path):
    """On a real (smoke) MOIT run the sentence quotes the run's own first and last epochs."""
    from moit_explore.training import presets, runs, train

    run = runs.load_run(train.train(presets.preset("smoke", method="moit",
                                                   runs_root=str(tmp_path), name="m")))
    m = run.metrics
    line = demo.detection_over_training(m)[0]
    assert f"F1 {m['det_f1'].iloc[0]:.3f} after epoch 1" in line
    assert f"{m['det_f1'].iloc[-1]:.3f} after epoch {len(m)}" in line
    assert ("improves" in line) == bool(m["det_f1"].iloc[-1] > m["det_f1"].iloc[0])
