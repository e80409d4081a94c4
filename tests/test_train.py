"""The training engine end to end on the "smoke" preset (digits, a tiny CNN, CPU)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from moit_explore import config, datasets, noise, runs, train

METRIC_KEYS = {"epoch", "lr", "loss", "train_acc_given", "train_acc_true", "test_acc",
               "det_precision", "det_recall", "det_f1", "det_auroc", "det_selected_frac",
               "det_selected_noise_rate", "time_s", "images_per_s"}
LOSS_KEYS = {
    "ce": {"loss_ce"},
    "mixup": {"loss_mixup"},
    "supcon": {"loss_supcon", "loss_ce"},
    "icl": {"loss_icl_batch", "loss_icl_memory", "loss_cls_labeled"},
    "moit": {"loss_icl_batch", "loss_icl_memory", "loss_cls_labeled", "loss_cls_unlabeled"},
}
TIMING = ("time_s", "eval_time_s", "detect_time_s", "epoch_time_s", "images_per_s")


def smoke(tmp_path, **kw):
    kw.setdefault("runs_root", str(tmp_path))
    return config.preset("smoke", **kw)


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {m: train.train(config.preset("smoke", method=m, runs_root=str(root)))
            for m in config.METHODS}


@pytest.mark.parametrize("method", config.METHODS)
def test_every_method_runs_end_to_end(method_runs, method):
    run_dir = method_runs[method]
    cfg = config.preset("smoke")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == cfg.epochs
    rows = [json.loads(line) for line in lines]  # strict JSON (NaN would be rejected later)
    for row in rows:
        assert METRIC_KEYS | LOSS_KEYS[method] <= set(row), set(row) ^ METRIC_KEYS
        assert all(math.isfinite(row[k]) for k in LOSS_KEYS[method] | {"loss"})
        assert 0.0 <= row["test_acc"] <= 1.0
        assert row["det_precision"] is None or 0.0 <= row["det_precision"] <= 1.0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == cfg.epochs
    assert set(state) >= {"model", "optimizer", "scheduler", "memory", "clean", "rng"}
    run = runs.load_run(run_dir)
    final = run.final()
    n = cfg.n_train
    assert final["features"].shape[0] == n and final["soft_labels"].shape == (n, 10)
    assert final["clean"].dtype == bool and 0 < final["clean"].sum() < n
    assert run.snapshot_epochs == sorted(set(cfg.snapshot_epochs) | {cfg.epochs})
    assert run.config["method"] == method and run.config["classes"] == [str(i) for i in range(10)]


def test_moit_uses_memory_and_label_correction_when_scheduled(method_runs):
    m = runs.load_run(method_runs["moit"]).metrics
    cfg = config.preset("smoke")
    # memory from epoch > xbm_begin, semi-supervised term from epoch > correction_start
    assert (m["loss_icl_memory"] > 0).tolist() == (m["epoch"] > cfg.xbm_begin).tolist()
    assert (m["loss_cls_unlabeled"] > 0).tolist() == (m["epoch"] > cfg.correction_start).tolist()
    assert m["ssl"].tolist() == (m["epoch"] > cfg.correction_start).tolist()
    assert m["memory_filled"].iloc[-1] == 2 * cfg.xbm_per_class * 10  # the queue wrapped


def test_detection_never_changes_the_given_labels(method_runs):
    cfg = config.preset("smoke")
    bundle = datasets.subset(datasets.load_dataset("digits"), cfg.n_train, cfg.n_test,
                             seed=cfg.subset_seed)
    expected = noise.inject_noise(bundle.train_labels, "symmetric", cfg.rate, 10,
                                  seed=cfg.noise_seed)
    run = runs.load_run(method_runs["moit"])
    final = run.final()
    # the detection corrected labels, and none of it leaked into the given labels
    assert (final["corrected_labels"] != final["labels_given"]).any()
    np.testing.assert_array_equal(final["labels_given"], expected.noisy)
    np.testing.assert_array_equal(run.noise.noisy, expected.noisy)
    np.testing.assert_array_equal(run.snapshot(1)["labels_given"], expected.noisy)
    np.testing.assert_array_equal(final["labels_true"], bundle.train_labels)


def _metrics_without_timing(run_dir):
    return runs.load_run(run_dir).metrics.drop(columns=list(TIMING))


class _Stop(Exception):
    pass


def test_resume_follows_the_same_trajectory(tmp_path):
    straight = train.train(smoke(tmp_path, name="straight", epochs=4, lr_milestones=(3,)))

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise _Stop

    cfg = smoke(tmp_path, name="split", epochs=4, lr_milestones=(3,))
    with pytest.raises(_Stop):
        train.train(cfg, on_epoch_end=stop_after_two)
    assert len(runs.load_run(tmp_path / "split").metrics) == 2
    train.resume(tmp_path / "split")
    a, b = _metrics_without_timing(straight), _metrics_without_timing(tmp_path / "split")
    assert len(a) == len(b) == 4
    assert a.equals(b), (a.compare(b) if a.shape == b.shape else (a, b))
    sa = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_can_extend_a_finished_run(tmp_path):
    straight = train.train(smoke(tmp_path, name="four", epochs=4, lr_milestones=(3,)))
    short = train.train(smoke(tmp_path, name="two", epochs=2, lr_milestones=(3,)))
    with pytest.raises(ValueError, match="already finished"):
        train.resume(short)
    with pytest.raises(ValueError, match="cannot change lr"):
        train.resume(short, epochs=4, lr=0.5)
    train.resume(short, epochs=4)
    assert _metrics_without_timing(straight).equals(_metrics_without_timing(short))
    assert runs.load_run(short).config["epochs"] == 4


def test_refuses_to_overwrite_an_existing_run(tmp_path):
    cfg = smoke(tmp_path, name="same", epochs=1)
    run_dir = train.train(cfg)
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        train.train(cfg)
    assert (run_dir / "metrics.jsonl").read_text() == before
    train.train(cfg.replace(overwrite=True, epochs=2, lr_milestones=()))
    assert len(runs.load_run(run_dir).metrics) == 2  # replaced, not appended to


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    run_dir = train.train(smoke(tmp_path, name="c", epochs=2))
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="corrupt or truncated") as e:
        train.resume(run_dir, epochs=3)
    assert "checkpoint.pt" in str(e.value)


def test_invalid_config_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="rate"):
        train.train(smoke(tmp_path, rate=1.2))
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        train.train(preset="smoke", runs_root=str(tmp_path), learning_rate=0.1)
    # k checked against the real training set size once the data is loaded (n_train=None)
    with pytest.raises(ValueError, match="k=1437 must be smaller"):
        train.train(smoke(tmp_path, n_train=None, k=1437, name="bigk"))
    assert not (tmp_path / "bigk").exists()
    assert list(tmp_path.iterdir()) == []


def test_runs_without_faiss(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    run_dir = train.train(smoke(tmp_path, epochs=2, detect_backend="auto"))
    assert runs.load_run(run_dir).metrics["det_f1"].notna().all()


def test_reference_pipeline_runs(tmp_path):
    run_dir = train.train(smoke(tmp_path, epochs=2, pipeline="reference", workers=0))
    m = runs.load_run(run_dir).metrics
    assert np.isfinite(m["loss"]).all() and len(m) == 2


def test_without_noise_detection_metrics_are_undefined_not_fake(tmp_path):
    run_dir = train.train(smoke(tmp_path, epochs=1, noise="none", rate=0.0, method="ce"))
    run = runs.load_run(run_dir)
    assert not run.noise.is_noisy.any()
    last = run.metrics.iloc[-1]
    # nothing to find: recall undefined (NaN, not a made-up 0 or 1); every flag is wrong
    assert np.isnan(last["det_recall"])
    assert last["det_selected_frac"] < 1.0 and last["det_precision"] == 0.0


def test_moit_plus_starts_from_moit(method_runs):
    moit_dir = method_runs["moit"]
    fcfg = config.finetune_preset("smoke")
    setup = train.prepare_finetune(moit_dir, fcfg)
    base = torch.load(moit_dir / "checkpoint.pt", weights_only=True)["model"]
    state = setup.model.state_dict()
    encoder = [k for k in base if not k.startswith("classifier.")]
    assert encoder and all(torch.equal(state[k], base[k]) for k in encoder)
    assert not torch.equal(state["classifier.weight"], base["classifier.weight"])
    clean = runs.load_run(moit_dir).final()["clean"]
    np.testing.assert_array_equal(setup.train_indices, np.flatnonzero(clean))


def test_moit_plus_trains_only_on_clean_samples(method_runs, monkeypatch):
    moit_dir = method_runs["moit"]
    seen: list[np.ndarray] = []
    labels_seen: list[np.ndarray] = []
    original = train.GpuPipeline.batches

    def spy(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            seen.append(batch.idx.cpu().numpy())
            labels_seen.append(batch.y.cpu().numpy())
            yield batch

    monkeypatch.setattr(train.GpuPipeline, "batches", spy)
    out = train.finetune(moit_dir, config.finetune_preset("smoke", name="ft-spy"))
    final = runs.load_run(moit_dir).final()
    clean = np.flatnonzero(final["clean"])
    idx = np.concatenate(seen)
    assert np.isin(idx, clean).all() and len(np.unique(idx)) > len(clean) // 2
    # with their GIVEN labels
    np.testing.assert_array_equal(np.concatenate(labels_seen), final["labels_given"][idx])
    ft = runs.load_run(out)
    assert ft.config["method"] == "moit+" and ft.config["n_clean"] == len(clean)
    m = ft.metrics
    assert len(m) == 2 and np.isfinite(m["loss"]).all()
    assert m["bootstrap"].tolist() == [False, True]  # bootstrapping after bootstrap_start=1
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert "train_mask" in ft.final()
    np.testing.assert_array_equal(ft.final()["train_mask"], final["clean"])


def test_finetune_refuses_an_unfinished_run(tmp_path):
    run_dir = train.train(smoke(tmp_path, name="nofinal", epochs=2))
    (run_dir / "embeddings" / "final.npz").unlink()
    with pytest.raises(FileNotFoundError, match="has not finished"):
        train.finetune(run_dir, config.finetune_preset("smoke"))
