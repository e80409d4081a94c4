"""The training engine end to end on the "smoke" preset (digits, a tiny CNN, CPU)."""

from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch

from moit_explore.maths import noise
from moit_explore.training import (
    config,
    datasets,
    engine,
    methods,
    pipelines,
    presets,
    runs,
    steps,
    train,
)

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
    return presets.preset("smoke", **kw)


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {m: train.train(presets.preset("smoke", method=m, runs_root=str(root)))
            for m in methods.TRAINING_METHODS}


@pytest.mark.parametrize("method", methods.TRAINING_METHODS)
def test_every_method_runs_end_to_end(method_runs, method):
    run_dir = method_runs[method]
    cfg = presets.preset("smoke")
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
    cfg = presets.preset("smoke")
    # memory from epoch > xbm_begin, semi-supervised term from epoch > correction_start
    assert (m["loss_icl_memory"] > 0).tolist() == (m["epoch"] > cfg.xbm_begin).tolist()
    assert (m["loss_cls_unlabeled"] > 0).tolist() == (m["epoch"] > cfg.correction_start).tolist()
    assert m["ssl"].tolist() == (m["epoch"] > cfg.correction_start).tolist()
    assert m["memory_filled"].iloc[-1] == 2 * cfg.xbm_per_class * 10  # the queue wrapped
    # the queue fills every step, also before it is used (epoch <= xbm_begin), as the release
    assert (m["memory_filled"][m["epoch"] <= cfg.xbm_begin] > 0).all()


def test_memory_filled_every_step_used_after_xbm_begin():
    from moit_explore.maths.memory import CrossBatchMemory

    cfg = presets.preset("smoke", xbm_begin=2)
    mem = CrossBatchMemory(size=12, dim=2)
    z1, z2 = torch.eye(2), torch.eye(2).flip(0)
    y = torch.tensor([0, 1])
    for epoch in (1, 2):
        ctx = steps.EpochContext(model=None, cfg=cfg, epoch=epoch, gen=None,
                                 device=torch.device("cpu"), amp="none", memory=mem)
        assert steps.memory_for(ctx, z1, z2, y) is None  # no memory term yet ...
    assert mem.filled == 8 and mem.ptr == 8  # ... but both batches were enqueued
    ctx = steps.EpochContext(model=None, cfg=cfg, epoch=3, gen=None,
                             device=torch.device("cpu"), amp="none", memory=mem)
    assert steps.memory_for(ctx, z1, z2, y) is mem
    # 8 + 4 > 12 fits exactly; the current batch sits in the slots the view names
    assert mem.view().batch_slots.tolist() == [8, 9, 10, 11]
    torch.testing.assert_close(mem.view().feats[8:], torch.cat([z1, z2]))
    ctx.memory = None
    assert steps.memory_for(ctx, z1, z2, y) is None


def test_detection_never_changes_the_given_labels(method_runs):
    cfg = presets.preset("smoke")
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


def test_a_run_being_extended_is_not_finished(tmp_path):
    # the course cache, make course and the benchmarks reuse only finished runs; a run that
    # --resume was extending still holds the final.npz of its shorter schedule
    run_dir = train.train(smoke(tmp_path, name="ext", epochs=2, lr_milestones=(3,)))
    assert runs.is_finished(run_dir)

    def stop_after_three(row):
        if row["epoch"] == 3:
            raise _Stop

    with pytest.raises(_Stop):
        train.resume(run_dir, epochs=4, on_epoch_end=stop_after_three)
    assert (run_dir / runs.EMBEDDINGS_DIR / runs.FINAL_FILE).is_file()
    assert not runs.is_finished(run_dir)
    train.resume(run_dir)
    assert runs.is_finished(run_dir)
    (run_dir / runs.EMBEDDINGS_DIR / runs.FINAL_FILE).unlink()
    assert not runs.is_finished(run_dir)


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
    with pytest.raises(ValueError, match="k=1437"):
        train.train(smoke(tmp_path, n_train=None, k=1437, name="bigk"))
    assert not (tmp_path / "bigk").exists()
    # and against the given labels' classes: smoke's 400 images hold about 40 a class
    with pytest.raises(ValueError, match=r"k=60 exceeds the median class size \(\d+ training "
                                         r"images\).*pass --k (19|20|21) "):
        train.train(smoke(tmp_path, k=60, name="widek"))
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
    fcfg = presets.finetune_preset("smoke")
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
    original = pipelines.GpuPipeline.batches

    def spy(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            seen.append(batch.idx.cpu().numpy())
            labels_seen.append(batch.y.cpu().numpy())
            yield batch

    monkeypatch.setattr(pipelines.GpuPipeline, "batches", spy)
    out = train.finetune(moit_dir, presets.finetune_preset("smoke", name="ft-spy"))
    final = runs.load_run(moit_dir).final()
    clean = np.flatnonzero(final["clean"])
    idx = np.concatenate(seen)
    assert np.isin(idx, clean).all()
    if len(clean) % 64 != 1:  # the tail batch is kept: every clean sample, every epoch
        assert len(idx) == 2 * len(clean) and set(np.unique(idx)) == set(clean)
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


def _same_run(a, b):
    ma, mb = _metrics_without_timing(a), _metrics_without_timing(b)
    assert ma.equals(mb), (ma.compare(mb) if ma.shape == mb.shape else (ma, mb))
    sa = torch.load(a / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(b / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    fa, fb = runs.load_run(a).final(), runs.load_run(b).final()
    assert set(fa) == set(fb) and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_moit_plus_resumes_on_the_same_trajectory(method_runs):
    from moit_explore import cli

    base = method_runs["moit"]

    def ft(name, epochs):  # bootstrapping from epoch 2: the interruption is at the switch
        return presets.finetune_preset("smoke", name=name, epochs=epochs, bootstrap_start=1)

    straight = train.finetune(base, ft("ft-straight", 3))

    def stop_after_one(row):
        if row["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train.finetune(base, ft("ft-split", 3), on_epoch_end=stop_after_one)
    split = base / "ft-split"
    assert len(runs.load_run(split).metrics) == 1
    assert train.resume(split) == split  # found to be MOIT+ from its config.json
    _same_run(straight, split)
    assert runs.load_run(split).metrics["bootstrap"].tolist() == [False, True, True]

    # a finished MOIT+ run extends like a training run, from the command line too
    short = train.finetune(base, ft("ft-short", 2))
    with pytest.raises(ValueError, match="already finished"):
        train.resume(short)
    with pytest.raises(ValueError, match="cannot change lr"):
        train.resume(short, epochs=3, lr=0.5)
    assert cli.main(["train", "--resume", str(short), "--epochs", "3", "--no-progress"]) == 0
    _same_run(straight, short)
    cfg = runs.load_run(short).config
    assert cfg["epochs"] == cfg["finetune"]["epochs"] == 3 and cfg["method"] == "moit+"


def test_moit_plus_detection_k_is_checked_before_training(method_runs, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(method_runs["moit"], base, ignore=shutil.ignore_patterns("ft-*", "finetune"))
    cfg = json.loads((base / "config.json").read_text())
    cfg["k"] = cfg["n_train_actual"]  # no longer smaller than the training set
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="k=400"):
        train.finetune(base, presets.finetune_preset("smoke"))
    assert not (base / "finetune").exists()


def test_finetune_refuses_an_unfinished_run(tmp_path):
    def stop(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt  # as Ctrl-C after the first epoch

    with pytest.raises(KeyboardInterrupt):
        train.train(smoke(tmp_path, name="nofinal", epochs=2), on_epoch_end=stop)
    run_dir = tmp_path / "nofinal"
    with pytest.raises(FileNotFoundError, match="has not finished.*train --resume"):
        train.finetune(run_dir, presets.finetune_preset("smoke"))
    # a finished run whose final.npz was deleted: resuming it cannot help (issue 20, case 15)
    train.resume(run_dir)
    (run_dir / "embeddings" / "final.npz").unlink()
    with pytest.raises(FileNotFoundError, match="deleted") as e:
        train.finetune(run_dir, presets.finetune_preset("smoke"))
    assert "--resume" not in str(e.value)


def _step_ctx(epoch, clean=None, memory=None, **cfg_kw):
    from moit_explore.maths import models

    torch.manual_seed(0)
    model = models.build_model("small_cnn", 3, 1, width=4, embed_dim=8).eval()  # BN fixed
    cfg = presets.preset("smoke", xbm_begin=1, correction_start=2, **cfg_kw)
    gen = torch.Generator().manual_seed(5)
    return steps.EpochContext(model=model, cfg=cfg, epoch=epoch, gen=gen,
                              device=torch.device("cpu"), amp="none", memory=memory,
                              clean=clean)


def test_moit_step_wires_views_x0_and_the_clean_mask_by_dataset_index():
    from moit_explore.maths import losses
    from moit_explore.maths.memory import CrossBatchMemory

    g = torch.Generator().manual_seed(1)
    B, N = 6, 20
    idx = torch.tensor([17, 3, 9, 0, 12, 5])          # dataset indices, not batch positions
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x1, x2, x0 = (torch.randn(B, 1, 8, 8, generator=g) for _ in range(3))
    clean = torch.zeros(N, dtype=torch.bool)
    clean[[17, 9, 5]] = True                          # batch positions 0, 2, 5
    batch = pipelines.Batch(idx, y, [x1, x2], x0)
    mem = CrossBatchMemory(size=48, dim=8)
    ctx = _step_ctx(epoch=3, clean=clean, memory=mem)
    terms = steps.moit_step(ctx, batch)
    assert mem.filled == 2 * B

    # the same draws, by hand: one mixup per view (own lam and permutation), in that order
    gen = torch.Generator().manual_seed(5)
    xm1, p1, lam1 = losses.mixup(x1, ctx.cfg.alpha, gen)
    xm2, p2, lam2 = losses.mixup(x2, ctx.cfg.alpha, gen)
    assert not torch.equal(p1, p2) or lam1 != lam2
    with torch.no_grad():
        l1, z1 = ctx.model(xm1)
        l2, z2 = ctx.model(xm2)
        l0, _ = ctx.model(x0)
    mask = torch.tensor([True, False, True, False, False, True])
    cls = losses.classification_loss_terms(l1, l2, l0, y, p1, p2, lam1, lam2, clean=mask)
    icl = losses.icl_loss_terms(z1, z2, y, p1, p2, lam1, lam2, tau=ctx.cfg.tau, memory=mem)
    for k, v in {**cls, **icl}.items():
        assert terms[k].item() == pytest.approx(v.item(), rel=1e-5, abs=1e-6), k
    assert terms["cls_unlabeled"].item() > 0 and terms["icl_memory"].item() > 0


def test_moit_step_before_correction_and_memory_is_plain_mixup():
    g = torch.Generator().manual_seed(2)
    B = 4
    batch = pipelines.Batch(torch.arange(B), torch.tensor([0, 1, 1, 2]),
                        [torch.randn(B, 1, 8, 8, generator=g) for _ in range(3)][:2],
                        torch.randn(B, 1, 8, 8, generator=g))
    # epoch 1 <= xbm_begin and <= correction_start: no memory term, no clean mask
    terms = steps.moit_step(_step_ctx(epoch=1), batch)
    assert terms["cls_unlabeled"].item() == 0.0 and terms["icl_memory"].item() == 0.0
    assert math.isfinite(terms["icl_batch"].item()) and terms["cls_labeled"].item() > 0
    with pytest.raises(RuntimeError, match="previous epoch's detection"):
        steps.moit_step(_step_ctx(epoch=3), batch)


def test_moit_plus_step_mixup_then_hard_bootstrap_on_x0():
    from moit_explore.maths import losses, models

    torch.manual_seed(0)
    model = models.build_model("small_cnn", 3, 1, width=4, embed_dim=8).eval()
    g = torch.Generator().manual_seed(3)
    B = 8
    x, x0 = torch.randn(B, 1, 8, 8, generator=g), torch.randn(B, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (B,), generator=g)
    batch = pipelines.Batch(torch.arange(B), y, [x], x0)
    fcfg = presets.finetune_preset("smoke")  # bootstrap_start=1

    def ctx(epoch):
        return steps.EpochContext(model=model, cfg=fcfg, epoch=epoch,
                                  gen=torch.Generator().manual_seed(4),
                                  device=torch.device("cpu"), amp="none")

    xm, perm, lam = losses.mixup(x, fcfg.alpha, torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(xm)[0]
        z_hat = model(x0)[0].argmax(1)
    out = steps.moit_plus_step(ctx(1), batch)
    assert set(out) == {"mixup"}
    assert out["mixup"].item() == pytest.approx(
        losses.mixup_ce(logits, y, y[perm], lam).item(), rel=1e-5)

    out = steps.moit_plus_step(ctx(2), batch)  # epoch > bootstrap_start
    # z_hat comes from the NON-augmented images (not from the mixed view)
    expected = losses.mixup_bootstrap_loss(logits, y, y[perm], z_hat, z_hat[perm], lam,
                                           beta=fcfg.beta)
    assert set(out) == {"bootstrap"}
    assert out["bootstrap"].item() == pytest.approx(expected.item(), rel=1e-5)
    wrong = losses.mixup_bootstrap_loss(logits, y, y[perm], logits.argmax(1),
                                        logits.argmax(1)[perm], lam, beta=fcfg.beta)
    assert not z_hat.equal(logits.argmax(1)) and wrong.item() != pytest.approx(expected.item())
    with pytest.raises(ValueError, match="x0"):
        steps.moit_plus_step(ctx(2), pipelines.Batch(batch.idx, y, [x], None))
    plus = methods.get_method("moit+")
    assert plus.needs_x0(fcfg, 2) and not plus.needs_x0(fcfg, 1)


def test_moit_step_forwards_each_view_and_x0_separately_in_train_mode():
    """As the release: view 1, view 2 and the non-augmented x0 each get their own train-mode
    forward pass every step, so batch norm sees per-view statistics and the clean images."""
    ctx = _step_ctx(epoch=1)
    ctx.model.train()
    seen = []
    ctx.model.register_forward_hook(lambda m, inp, out: seen.append((inp[0].shape[0], m.training)))
    g = torch.Generator().manual_seed(3)
    B = 5
    views = [torch.randn(B, 1, 8, 8, generator=g) for _ in range(2)]
    x0 = torch.randn(B, 1, 8, 8, generator=g)
    steps.moit_step(ctx, pipelines.Batch(torch.arange(B), torch.tensor([0, 1, 2, 0, 1]), views, x0))
    assert seen == [(B, True)] * 3


def test_lr_milestones_name_the_first_epoch_at_the_lower_lr():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = engine.lr_schedule(opt, (2, 4), 0.1)
    lrs = []
    for _ in range(5):  # epochs 1..5, stepped after each as the trainer does
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])


def test_batch_bounds_keep_the_tail_as_the_release_unless_drop_last():
    # 400 samples, B = 64: six full batches and a tail of 16 (kept, as a DataLoader does)
    assert pipelines.batch_bounds(400, 64)[-1] == (384, 400)
    assert len(pipelines.batch_bounds(400, 64)) == 7
    # drop_last: the named deviation, static shapes
    assert pipelines.batch_bounds(400, 64, drop_last=True)[-1] == (320, 384)
    # a tail of one sample cannot train batch norm or pair for mixup: always dropped
    assert len(pipelines.batch_bounds(129, 128)) == 1
    # a set smaller than one batch is one batch either way
    assert pipelines.batch_bounds(50, 64, drop_last=True) == [(0, 50)]


@pytest.mark.parametrize("pipeline", ["gpu", "reference"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_an_epoch_visits_every_sample_once_unless_drop_last(pipeline, drop_last):
    from moit_explore.maths import augment

    bundle = datasets.subset(datasets.load_dataset("digits"), 400, 10, seed=0)
    labels = torch.from_numpy(bundle.train_labels)
    if pipeline == "gpu":
        images = pipelines.to_nchw(bundle.train_images, torch.device("cpu"))
        normalize = augment.build_augment("none", bundle.mean, bundle.std)
        pipe = pipelines.GpuPipeline(images, labels, pipelines.augment_for("simple", bundle, 1),
                                 normalize, 64, False, drop_last=drop_last)
    else:
        pipe = pipelines.ReferencePipeline(bundle.train_images, labels, "simple", bundle.mean,
                                       bundle.std, 64, 0, torch.device("cpu"), False, 1,
                                       drop_last=drop_last)
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    batches = list(pipe.batches(order, 2, True, torch.Generator().manual_seed(1)))
    assert len(batches) == len(pipe) == (6 if drop_last else 7)
    seen = torch.cat([b.idx for b in batches])
    assert seen.tolist() == order[: len(seen)].tolist()
    assert len(seen) == (384 if drop_last else 400)
    last = batches[-1]
    assert last.views[0].shape[0] == last.x0.shape[0] == last.y.shape[0] == len(last.idx)
    assert torch.equal(last.y, labels[last.idx])


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")),
                    reason="torch.compile on the CPU needs a C compiler")
def test_torch_compile_trains_like_eager(tmp_path):
    # the GPU fast path's optional torch.compile, on the CPU (inductor + the C compiler): the
    # same losses as eager mode, and a checkpoint that loads into an uncompiled model
    eager = runs.load_run(train.train(smoke(tmp_path, epochs=1, name="eager"))).metrics
    run_dir = train.train(smoke(tmp_path, epochs=1, name="compiled", compile=True))
    compiled = runs.load_run(run_dir).metrics
    for key in ("loss", "loss_icl_batch", "loss_cls_labeled"):
        assert compiled[key].iloc[0] == pytest.approx(eager[key].iloc[0], rel=1e-3)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in state["model"])


def test_config_from_an_older_run_keeps_the_behaviour_it_was_trained_with():
    fields = presets.preset("smoke").to_dict()
    assert fields["drop_last"] is False and fields["shortcut"] == "preactivated"  # release
    assert config.TrainConfig.from_dict(fields).shortcut == "preactivated"
    old = {k: v for k, v in fields.items() if k not in ("drop_last", "shortcut")}
    cfg = config.TrainConfig.from_dict(old)  # a config.json written before these fields
    assert cfg.drop_last is True and cfg.shortcut == "raw"
    with pytest.raises(ValueError, match="shortcut"):
        presets.preset("smoke", shortcut="identity").validate()


def test_moit_plus_augmentation_is_simple_unless_set_to_none(method_runs, monkeypatch):
    built: list[str] = []
    original = pipelines.augment_for

    def spy(name, *args, **kwargs):
        built.append(name)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(train, "augment_for", spy)
    for aug in ("simple", "none"):
        fcfg = presets.finetune_preset("smoke", name=f"ft-{aug}", epochs=1)
        if aug != "simple":
            fcfg = fcfg.replace(augment=aug)
        assert fcfg.augment == aug  # spec §4's "simple" is the default
        out = train.finetune(method_runs["moit"], fcfg)
        assert built[-1] == aug and runs.load_run(out).config["augment_resolved"] == aug
    with pytest.raises(ValueError, match="augment"):
        presets.finetune_preset("smoke", augment="complex").validate()


def test_bf16_autocast_run_on_the_cpu(tmp_path):
    # the GPU fast path's mixed precision, exercised end to end where no GPU is
    run_dir = train.train(smoke(tmp_path, epochs=2, amp="bf16"))
    run = runs.load_run(run_dir)
    assert run.config["amp_resolved"] == "bf16"
    assert np.isfinite(run.metrics["loss"]).all()
    assert np.isfinite(run.final()["features"].astype(np.float32)).all()
    assert run.metrics["det_f1"].notna().all()


def test_a_run_from_before_drop_last_resumes_on_its_own_trajectory(tmp_path):
    # written by an older version: it dropped the tail batch and its config.json has no
    # drop_last field; resuming it must drop the tail again, or the trajectory would change
    straight = train.train(smoke(tmp_path, name="straight", epochs=3, drop_last=True))

    def stop_after_one(row):
        if row["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train.train(smoke(tmp_path, name="old", epochs=3, drop_last=True),
                    on_epoch_end=stop_after_one)
    cfg_file = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    del cfg["drop_last"]
    cfg_file.write_text(json.dumps(cfg))
    train.resume(tmp_path / "old")
    a, b = _metrics_without_timing(straight), _metrics_without_timing(tmp_path / "old")
    assert a.equals(b), (a.compare(b) if a.shape == b.shape else (a, b))
    # and the default (the release: keep the tail) is a different trajectory
    kept = _metrics_without_timing(train.train(smoke(tmp_path, name="kept", epochs=3)))
    assert not kept["loss"].equals(a["loss"])
