"""The GPU's hot path stays free of device-to-host synchronisations.

A value read back from a GPU tensor (``.item()``, ``int(t)``, ``if t:``, ``torch.equal`` ...)
makes the host wait for the device. Inside the epoch loop, between the batches and through
every step and loss, the engine reads nothing back; the per-epoch logging afterwards may. On
the CPU every tensor is a host tensor, so here each such read is patched to be counted while a
step runs (and while its batch is made), and a few epochs of training must count none.

The one host value a step draws, each mixup's coefficient lam (NumPy draws the Beta variate),
comes from ``EpochContext.lam_gen``: on a CPU run the step's CPU generator, on a GPU run a
separate CPU generator, so reading its seed is a host memory read, never a device sync.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from moit_explore.maths import losses
from moit_explore.training import methods, pipelines, presets, runs, train

READS = [(torch.Tensor, name) for name in ("item", "tolist", "numpy", "cpu", "equal", "__int__",
                                           "__float__", "__bool__", "__index__")]
READS.append((torch, "equal"))


class HostReads:
    """Counts the host reads made while ``watching``."""

    def __init__(self) -> None:
        self.watching = False
        self.reads: list[str] = []
        self.steps = 0
        self.lam_generators: list[torch.Generator | None] = []

    def wrap(self, owner, name):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            if self.watching:
                self.reads.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return original(*args, **kwargs)

        return counted

    @contextlib.contextmanager
    def _watching(self, on: bool):
        before, self.watching = self.watching, on
        try:
            yield
        finally:
            self.watching = before

    def watch(self):
        return self._watching(True)

    def paused(self):
        return self._watching(False)


@pytest.fixture
def host_reads(monkeypatch):
    reads = HostReads()
    for owner, name in READS:
        monkeypatch.setattr(owner, name, reads.wrap(owner, name))

    for method, m in list(methods.METHODS.items()):
        def step(ctx, batch, _step=m.step):
            reads.steps += 1
            with reads.watch():
                return _step(ctx, batch)

        monkeypatch.setitem(methods.METHODS, method, dataclasses.replace(m, step=step))

    original_batches = pipelines.GpuPipeline.batches

    def batches(self, *args, **kwargs):
        it = original_batches(self, *args, **kwargs)
        while True:
            with reads.watch():
                batch = next(it, None)
            if batch is None:
                return
            yield batch

    monkeypatch.setattr(pipelines.GpuPipeline, "batches", batches)

    draw_lam = losses.draw_lam

    def lam(alpha, generator=None):
        reads.lam_generators.append(generator)
        with reads.paused():  # a CPU generator's draw: a host read, no device sync
            return draw_lam(alpha, generator)

    monkeypatch.setattr(losses, "draw_lam", lam)
    return reads


@pytest.mark.parametrize("method", ["moit", "icl", "supcon", "mixup", "ce"])
def test_training_steps_read_nothing_back_from_the_device(tmp_path, host_reads, method):
    # smoke: memory from epoch 2, label correction (the clean mask) from epoch 3
    run_dir = train.train(presets.preset("smoke", method=method, runs_root=str(tmp_path),
                                        epochs=3, detect="epoch"))
    assert host_reads.steps == 3 * 7  # 400 images in batches of 64: 7 steps an epoch
    assert host_reads.reads == [], sorted(set(host_reads.reads))
    assert all(g is not None and g.device.type == "cpu" for g in host_reads.lam_generators)
    m = runs.load_run(run_dir).metrics
    if method == "moit":  # every term of the MOIT loss ran
        assert (m[["loss_icl_memory", "loss_cls_unlabeled"]].iloc[-1] > 0).all()
        assert len(host_reads.lam_generators) == 2 * host_reads.steps


def test_moit_plus_steps_read_nothing_back_from_the_device(tmp_path, host_reads):
    base = train.train(presets.preset("smoke", runs_root=str(tmp_path), epochs=1))
    host_reads.steps = 0
    out = train.finetune(base, presets.finetune_preset("smoke", bootstrap_start=1))
    assert host_reads.steps > 0 and host_reads.reads == [], sorted(set(host_reads.reads))
    assert runs.load_run(out).metrics["bootstrap"].tolist() == [False, True]


def test_the_counter_sees_a_host_read(host_reads):
    with host_reads.watch():
        torch.ones(2).sum().item()
        bool(torch.tensor(True))
    assert host_reads.reads == ["Tensor.item", "Tensor.__bool__"]


def test_the_checked_losses_do_read_back(host_reads):
    # what the hot path avoids: the public functions' argument checks read values back
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=1)
              for _ in range(2))
    y, perm = torch.tensor([0, 1, 1, 0]), torch.tensor([1, 0, 3, 2])
    with host_reads.watch():
        losses.icl_loss_terms(z1, z2, y, perm, perm, 0.7, 0.6)
    checked = len(host_reads.reads)
    host_reads.reads.clear()
    with host_reads.watch():
        losses.icl_loss_terms(z1, z2, y, perm, perm, 0.7, 0.6, check=False)
    assert checked > 0 and host_reads.reads == []
