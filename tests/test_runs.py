"""Run directories: atomic files, refusal to overwrite, checkpoints, load_run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moit_explore.maths import noise
from moit_explore.training import datasets, presets, rundir, runs, train


def test_create_run_dir_refuses_non_empty_and_names_the_fixes(tmp_path):
    path = rundir.create_run_dir(tmp_path, "a")
    assert path == tmp_path / "a" and path.is_dir()
    # an existing but empty folder is fine
    assert rundir.create_run_dir(tmp_path, "a") == path
    (path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError) as e:
        rundir.create_run_dir(tmp_path, "a")
    msg = str(e.value)
    assert str(path) in msg and "--name" in msg and "--overwrite" in msg
    assert "--resume" not in msg  # no checkpoint: nothing to continue
    (path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="--resume"):
        rundir.create_run_dir(tmp_path, "a")
    assert (path / "metrics.jsonl").exists()  # nothing was touched
    # --overwrite empties only a run directory this package wrote (issue 20, case 8)
    with pytest.raises(FileExistsError, match="no config.json"):
        rundir.create_run_dir(tmp_path, "a", overwrite=True)
    (path / "config.json").write_text("{}")
    (path / "sub").mkdir()
    (path / "sub" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="holds sub"):
        rundir.create_run_dir(tmp_path, "a", overwrite=True)
    assert (path / "sub" / "x").read_text() == "x"
    (path / "sub" / "x").unlink()
    (path / "sub").rmdir()
    (path / "embeddings").mkdir()
    (path / "embeddings" / "epoch_0001.npz").write_bytes(b"")
    rundir.create_run_dir(tmp_path, "a", overwrite=True)
    assert list(path.iterdir()) == []


@pytest.mark.parametrize("bad", ["", "..", "a/b"])
def test_create_run_dir_rejects_paths_as_names(tmp_path, bad):
    with pytest.raises(ValueError, match="plain folder name"):
        rundir.create_run_dir(tmp_path, bad)


def test_unique_run_dir_suffixes(tmp_path):
    assert rundir.unique_run_dir(tmp_path, "demo") == tmp_path / "demo"
    (tmp_path / "demo").mkdir()
    assert rundir.unique_run_dir(tmp_path, "demo") == tmp_path / "demo"  # empty: reusable
    (tmp_path / "demo" / "f").write_text("")
    assert rundir.unique_run_dir(tmp_path, "demo") == tmp_path / "demo-2"
    (tmp_path / "demo-2").mkdir()
    (tmp_path / "demo-2" / "f").write_text("")
    assert rundir.unique_run_dir(tmp_path, "demo") == tmp_path / "demo-3"


def test_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "c.json"
    runs.write_json_atomic(path, {"a": float("nan"), "t": (1, 2), "n": np.int64(3),
                                  "x": np.float32(0.5), "p": tmp_path})
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text) == {"a": None, "t": [1, 2], "n": 3, "x": 0.5, "p": str(tmp_path)}
    assert runs.read_json(path)["t"] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary file left
    path.write_text("{broken")
    with pytest.raises(ValueError, match="c.json"):
        runs.read_json(path)


def test_metrics_append_and_read(tmp_path):
    runs.append_metrics(tmp_path, {"epoch": 1, "test_acc": 0.5, "det_f1": float("nan")})
    runs.append_metrics(tmp_path, {"epoch": 2, "test_acc": np.float32(0.75), "det_f1": 0.25})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    # a run killed mid-write leaves a partial line: it is skipped
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "test_')
    df = runs.read_metrics(tmp_path)
    assert df["epoch"].tolist() == [1, 2]
    assert df["test_acc"].tolist() == [0.5, 0.75]
    assert np.isnan(df["det_f1"][0]) and df["det_f1"][1] == 0.25
    runs.truncate_metrics(tmp_path, 1)
    assert runs.read_metrics(tmp_path)["epoch"].tolist() == [1]


def test_checkpoint_roundtrip_weights_only(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "rng": [1, (2, 3)], "cfg": {"k": 5}}
    path = tmp_path / "checkpoint.pt"
    runs.save_checkpoint(path, state)
    back = torch.load(path, weights_only=True)
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], torch.arange(4.0))
    assert runs.load_checkpoint(tmp_path)["cfg"] == {"k": 5}  # a run dir works too
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_corrupt_truncated_missing_checkpoint_errors(tmp_path):
    path = tmp_path / "checkpoint.pt"
    runs.save_checkpoint(path, {"model": {"w": torch.randn(1000)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated") as e:
        runs.load_checkpoint(path)
    assert str(path) in str(e.value) and "re-run" in str(e.value)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=str(path)):
        runs.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runs.load_checkpoint(tmp_path / "missing.pt")


class _Det:
    def __init__(self, n: int, c: int) -> None:
        rng = np.random.default_rng(0)
        self.soft_labels = rng.dirichlet(np.ones(c), n).astype(np.float32)
        self.first_pass_soft_labels = self.soft_labels
        self.corrected_labels = self.soft_labels.argmax(1)
        self.discrepancy = rng.random(n).astype(np.float32)
        self.clean = self.discrepancy < 0.5
        self.k, self.balance = 7, "median"


def _fake_run(tmp_path, n_train=300):
    bundle = datasets.subset(datasets.load_dataset("digits"), n_train, 50, seed=3)
    nl = noise.inject_noise(bundle.train_labels, "symmetric", 0.4, 10, seed=42)
    run_dir = rundir.create_run_dir(tmp_path, "r")
    runs.write_json_atomic(run_dir / "config.json", {
        "method": "moit", "dataset": "digits", "data_root": "data", "n_train": n_train,
        "n_test": 50, "subset_seed": 3, "classes": bundle.classes})
    noise.save_noise(run_dir / "noise.npz", nl)
    runs.append_metrics(run_dir, {"epoch": 1, "test_acc": 0.1})
    feats = np.random.default_rng(1).normal(size=(n_train, 8)).astype(np.float32)
    runs.save_snapshot(run_dir, 1, feats, nl.noisy, nl.clean)
    runs.save_snapshot(run_dir, 12, torch.from_numpy(feats), nl.noisy, nl.clean)
    runs.save_final(run_dir, feats, _Det(n_train, 10), nl.noisy, nl.clean)
    return run_dir, bundle, nl, feats


def test_load_run_reads_everything(tmp_path):
    run_dir, bundle, nl, feats = _fake_run(tmp_path)
    run = runs.load_run(run_dir)
    assert run.path == run_dir and run.config["method"] == "moit"
    assert run.snapshot_epochs == [1, 12]
    assert run.classes == bundle.classes
    np.testing.assert_array_equal(run.noise.noisy, nl.noisy)
    np.testing.assert_array_equal(run.noise.is_noisy, nl.is_noisy)
    snap = run.snapshot(12)
    assert snap["features"].dtype == np.float16 and snap["features"].shape == feats.shape
    np.testing.assert_allclose(snap["features"], feats, atol=1e-2)
    assert int(snap["epoch"]) == 12
    with pytest.raises(ValueError, match="no snapshot of epoch 5"):
        run.snapshot(5)
    final = run.final()
    for key in ("features", "soft_labels", "corrected_labels", "discrepancy", "clean",
                "first_pass_soft_labels", "labels_given", "labels_true", "k", "balance"):
        assert key in final
    assert final["clean"].dtype == bool and int(final["k"]) == 7
    assert str(final["balance"]) == "median"
    assert run.metrics["test_acc"].tolist() == [0.1]


def test_run_dataset_reloads_the_same_subset(tmp_path):
    run_dir, bundle, _, _ = _fake_run(tmp_path)
    again = runs.load_run(run_dir).dataset()
    np.testing.assert_array_equal(again.train_images, bundle.train_images)
    np.testing.assert_array_equal(again.train_labels, bundle.train_labels)
    np.testing.assert_array_equal(again.test_labels, bundle.test_labels)


def test_load_run_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runs.load_run(tmp_path / "nope")
    run_dir, *_ = _fake_run(tmp_path)
    with pytest.raises(ValueError, match="not a run directory") as e:
        runs.load_run(tmp_path)
    assert "r" in str(e.value).split("contains run directories:")[1]
    (run_dir / "embeddings" / "final.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt"):
        runs.load_run(run_dir).final()


def test_project_data_is_the_repository_data_folder():
    """A run trained on data/ reloads its images from any working directory (the notebooks run
    in notebooks/): the trusted data folder is the repository's, next to the package."""
    assert (runs.PROJECT_DATA.parent / "pyproject.toml").is_file()
    assert (runs.PROJECT_DATA.parent / "moit_explore").is_dir()


def test_a_fine_tune_is_found_in_the_folder_it_was_given(tmp_path):
    """finetune --name puts MOIT+ in another folder: Run.finetunes / has_finetune / finetune()
    find it there, not only in finetune/."""
    base = train.train(presets.preset("smoke", runs_root=str(tmp_path), name="m", epochs=2))
    assert not runs.load_run(base).has_finetune
    train.finetune(base, presets.finetune_preset("smoke", name="plus-a"))
    run = runs.load_run(base)
    assert run.finetunes == ["plus-a"] and run.has_finetune
    assert run.finetune().path.name == "plus-a" and run.finetune("plus-a").method == "moit+"
    with pytest.raises(ValueError, match="no fine-tune in 'finetune'.*plus-a"):
        run.finetune("finetune")
