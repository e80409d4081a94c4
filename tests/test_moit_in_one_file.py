"""The one-file MOIT (training/moit_in_one_file.py) trains as the engine does.

On the smoke preset (400 digits, 7 steps an epoch, the memory term from epoch 2, label
correction from epoch 3) the engine's MOIT step is wrapped to record its loss terms, as
tests/test_hot_path.py wraps every method's step; the one-file loop reports its terms through
``on_step``. Every term of every step, and each epoch's test accuracy and detection scores,
must agree.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from moit_explore.training import methods, moit_in_one_file, presets, runs, train

TERMS = ["icl_batch", "icl_memory", "cls_labeled", "cls_unlabeled"]


def _recorder(out: list):
    def record(epoch: int, terms: dict) -> None:
        out.append((epoch, {k: v.detach().clone() for k, v in terms.items()}))
    return record


def test_per_step_losses_equal_the_engines_on_the_smoke_preset(tmp_path, monkeypatch):
    cfg = presets.preset("smoke", runs_root=str(tmp_path))
    assert (cfg.xbm_begin, cfg.correction_start, cfg.epochs) == (1, 2, 3)  # every branch runs

    engine_terms: list = []
    moit = methods.METHODS["moit"]
    record = _recorder(engine_terms)

    def recorded_step(ctx, batch, _step=moit.step):
        terms = _step(ctx, batch)
        record(ctx.epoch, terms)
        return terms

    monkeypatch.setitem(methods.METHODS, "moit", dataclasses.replace(moit, step=recorded_step))
    run_dir = train.train(cfg)
    monkeypatch.undo()  # the one-file loop calls no step of METHODS; make sure of it

    file_terms: list = []
    history = moit_in_one_file.train(cfg, on_step=_recorder(file_terms), log=None)

    assert len(engine_terms) == len(file_terms) == 3 * 7
    for step, ((e_engine, a), (e_file, b)) in enumerate(zip(engine_terms, file_terms,
                                                            strict=True)):
        assert e_engine == e_file and list(a) == list(b) == TERMS
        for k in TERMS:
            torch.testing.assert_close(b[k], a[k], msg=f"step {step} (epoch {e_file}) {k}")

    # the comparison covers every phase: memory term from epoch 2, correction from epoch 3
    by_epoch = {e: [t for ep, t in file_terms if ep == e] for e in (1, 2, 3)}
    assert all(t["icl_memory"] == 0 for t in by_epoch[1])
    assert all(t["icl_memory"] > 0 for t in by_epoch[2] + by_epoch[3])
    assert all(t["cls_unlabeled"] == 0 for t in by_epoch[1] + by_epoch[2])
    assert all(t["cls_unlabeled"] > 0 for t in by_epoch[3])

    # the epochs end alike: test accuracy and the detection (which sets the next clean mask)
    m = runs.load_run(run_dir).metrics
    assert [r["epoch"] for r in history] == m["epoch"].tolist() == [1, 2, 3]
    for row, (_, engine_row) in zip(history, m.iterrows(), strict=True):
        assert row["loss"] == pytest.approx(engine_row["loss"], rel=1e-5)
        assert row["test_acc"] == pytest.approx(engine_row["test_acc"])
        assert row["det_precision"] == pytest.approx(engine_row["det_precision"])
        assert row["det_recall"] == pytest.approx(engine_row["det_recall"])


def test_main_prints_one_line_per_epoch(capsys):
    history = moit_in_one_file.main(["--preset", "smoke", "--epochs", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(history) == len(lines) == 2
    for row, line in zip(history, lines, strict=True):
        assert line.startswith(f"epoch {row['epoch']:3d}")
        assert f"test acc {row['test_acc']:.3f}" in line
        assert f"detection precision {row['det_precision']:.3f}" in line
