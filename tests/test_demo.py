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
