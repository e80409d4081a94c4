"""Data-parallel MOIT under torchrun (moit_explore.training.distributed): 2 CPU processes with gloo.

The torchrun runs are subprocesses (``python -m torch.distributed.run --standalone
--nproc_per_node=2 -m moit_explore train --preset smoke ...``), OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from moit_explore.training import distributed, presets, train

# per-epoch losses: the sharded forward and the global batch norm change float rounding only
LOSS_RTOL = 1e-5
# detection: a sample whose neighbours tie at float precision may flip; allowed per epoch
DET_ATOL = 0.01      # precision / recall / F1 / selected fraction
AUROC_ATOL = 0.01
CLEAN_MISMATCH = 0.01  # share of samples whose final clean flag differs
TORCHRUN_TIMEOUT = 240


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)
    return env


def torchrun(args: list[str], cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "moit_explore", *args]
    return subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=TORCHRUN_TIMEOUT)


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_epoch(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"]
    for k in a:
        if k.startswith("loss"):
            assert b[k] == pytest.approx(a[k], rel=LOSS_RTOL, abs=1e-7), (a["epoch"], k)
    for k in ("det_precision", "det_recall", "det_f1", "det_selected_frac"):
        assert b[k] == pytest.approx(a[k], abs=DET_ATOL), (a["epoch"], k)
    assert b["det_auroc"] == pytest.approx(a["det_auroc"], abs=AUROC_ATOL)
    assert b["memory_filled"] == a["memory_filled"]


# --------------------------------------------------------------------------- units


def test_split_sizes_cover_every_row_once():
    assert distributed.split_sizes(10, 3) == [4, 3, 3]
    assert distributed.split_sizes(16, 2) == [8, 8]
    for n in range(0, 20):
        assert sum(distributed.split_sizes(n, 4)) == n


def test_launched_reads_torchrun_variables(monkeypatch):
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(v, raising=False)
    assert not distributed.launched()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched()  # one process: the single-process run
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched() and distributed.env_rank() == 1


def test_moit_plus_refuses_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="without torchrun"):
        train.finetune(tmp_path)


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_global_batchnorm_is_batchnorm_in_one_process(one_process_group):
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 5),
                        nn.BatchNorm1d(5))
    net = copy.deepcopy(ref)
    params = list(net.parameters())
    keys = list(net.state_dict())
    distributed.convert_batchnorm(net)
    assert isinstance(net[1], distributed.GlobalBatchNorm) and list(net.state_dict()) == keys
    assert all(a is b for a, b in zip(net.parameters(), params, strict=True))
    x = torch.randn(6, 3, 8, 8)
    for m in (ref, net):
        m(x).square().sum().backward()
    torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)
    for p, p_ref in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-4)
    for (k, v), v_ref in zip(net.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(net.eval()(x), ref.eval()(x))


# --------------------------------------------------------------------------- torchrun


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The smoke preset in one process and under torchrun (2 processes, global batch 64)."""
    root = tmp_path_factory.mktemp("dist")
    single = train.train(presets.preset("smoke", runs_root=str(root), name="single"))
    r = torchrun(["train", "--preset", "smoke", "--runs-root", str(root), "--name", "ddp"], root)
    assert r.returncode == 0, r.stderr[-4000:]
    return root, single, root / "ddp"


def test_torchrun_matches_single_process(pair):
    root, single, ddp = pair
    a, b = rows(single), rows(ddp)
    assert len(a) == len(b) == presets.preset("smoke").epochs
    for ra, rb in zip(a, b, strict=True):
        assert_same_epoch(ra, rb)
    fa = np.load(single / "embeddings" / "final.npz")
    fb = np.load(ddp / "embeddings" / "final.npz")
    assert fa["features"].shape == fb["features"].shape  # each sample once, no padding
    np.testing.assert_allclose(fb["features"], fa["features"], atol=1e-4)
    assert np.mean(fa["clean"] != fb["clean"]) <= CLEAN_MISMATCH
    np.testing.assert_array_equal(fa["labels_given"], fb["labels_given"])
    # rank 0 alone wrote the run directory: one header, one row per epoch
    assert json.loads((ddp / "config.json").read_text())["dist_bn"] == "sync"
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())


def test_resume_under_torchrun_with_another_number_of_processes(pair):
    root, single, _ = pair
    # two epochs in one process, the third under torchrun with two
    part = train.train(presets.preset("smoke", runs_root=str(root), name="part", epochs=2))
    r = torchrun(["train", "--resume", str(part), "--epochs", "3"], root)
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = rows(single), rows(part)
    assert [row["epoch"] for row in b] == [1, 2, 3]
    assert_same_epoch(a[2], b[2])
    assert torch.load(part / "checkpoint.pt", weights_only=True)["epoch"] == 3


# rank 1 exits (status 3) or hangs at the end of epoch 2's training: the CLI, with Dist's
# end of epoch wrapped so; the job must end with a clear error
_FAILING_RANK = """
import os, sys, time
from moit_explore import cli
from moit_explore.training import distributed

mode = sys.argv.pop(1)
original = distributed.Dist.end_of_epoch

def end_of_epoch(self, model, epoch):
    if self.rank == 1 and epoch == 2:
        print(f"rank 1 {mode}s in epoch 2", file=sys.stderr, flush=True)
        if mode == "exit":
            os._exit(3)
        time.sleep(10 * self.timeout_s + 60)
    original(self, model, epoch)

distributed.Dist.end_of_epoch = end_of_epoch
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_a_dead_or_hung_rank_ends_the_job_with_an_error(tmp_path, mode):
    # exit: torchrun stops the job; hang: rank 0's collective times out after 5 s
    script = tmp_path / "failing_rank.py"
    script.write_text(_FAILING_RANK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), mode, "train", "--preset", "smoke", "--runs-root", str(tmp_path),
           "--name", "dead", "--dist-timeout", "5"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=TORCHRUN_TIMEOUT)
    assert r.returncode != 0
    assert f"rank 1 {mode}s in epoch 2" in r.stderr
    if mode == "hang":
        assert "a collective operation failed or timed out" in r.stderr
    assert [row["epoch"] for row in rows(tmp_path / "dead")] == [1]
