"""Run directories that cannot be hurt, and files that cannot hurt (issue 12).

Nothing outside a run directory is touched (symlinks refused), a run directory is locked while
a process trains in it, stored paths cannot point data loading elsewhere, a resume refuses an
edited configuration, every recovery hint the command line prints is a command that works, and
damaged files give an error naming the file and the fix.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import hints, run_cli

from moit_explore.maths import noise
from moit_explore.training import datasets, presets, rundir, runs, train

SMOKE = ["--preset", "smoke", "--epochs", "2", "--lr-milestones", "1", "--no-progress"]






# --------------------------------------------------------------------------- symlinks


@pytest.mark.parametrize("link", ["finetune", "embeddings", "metrics.jsonl"])
def test_overwrite_refuses_symlinks_out_of_the_run_dir(capsys, run_copy, tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    target = run_copy / link
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.symlink_to(outside if link != "metrics.jsonl" else outside / "precious.txt")
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", run_copy.parent, "--name",
                         "m", "--overwrite")
    assert rc == 2 and str(target) in err and "symbolic link" in err
    assert (outside / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert target.is_symlink()  # nothing was emptied


def test_finetune_and_resume_refuse_a_symlinked_output(capsys, run_copy, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run_copy / "finetune").symlink_to(outside)
    rc, _, err = run_cli(capsys, "finetune", run_copy, "--epochs", "1", "--overwrite")
    assert rc == 2 and "symbolic link" in err and str(run_copy / "finetune") in err
    assert list(outside.iterdir()) == []
    (run_copy / "finetune").unlink()
    shutil.rmtree(run_copy / "embeddings")
    (run_copy / "embeddings").symlink_to(outside)
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
    assert rc == 2 and "symbolic link" in err and str(run_copy / "embeddings") in err
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- locking


def test_a_run_dir_in_use_cannot_be_trained_or_resumed_twice(capsys, run_copy):
    with rundir.lock_run_dir(run_copy):
        rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
        assert rc == 2 and "in use" in err and str(run_copy) in err
        rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", run_copy.parent,
                             "--name", "m", "--overwrite")
        assert rc == 2 and "in use" in err
    assert len(runs.load_run(run_copy).metrics) == 2  # untouched
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
    assert rc == 0, err
    assert runs.load_run(run_copy).metrics["epoch"].tolist() == [1, 2, 3]


def test_finetune_locks_the_run_it_reads(capsys, run_copy):
    before = {p.name: p.stat().st_mtime_ns for p in run_copy.iterdir()}
    with rundir.lock_run_dir(run_copy):  # e.g. a `train --resume` of the base run
        rc, _, err = run_cli(capsys, "finetune", run_copy, "--epochs", "1")
        assert rc == 2 and "in use" in err and str(run_copy) in err
    assert not (run_copy / "finetune").exists()
    assert {p.name: p.stat().st_mtime_ns for p in run_copy.iterdir()} == before
    rc, _, err = run_cli(capsys, "finetune", run_copy, "--epochs", "1")
    assert rc == 0, err
    assert len(runs.load_run(run_copy / "finetune").metrics) == 1
    with rundir.lock_run_dir(run_copy):  # resuming the fine-tune reads the base run too
        rc, _, err = run_cli(capsys, "train", "--resume", run_copy / "finetune", "--epochs", "2")
        assert rc == 2 and "in use" in err and str(run_copy) in err
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy / "finetune", "--epochs", "2")
    assert rc == 0, err
    assert runs.load_run(run_copy / "finetune").metrics["epoch"].tolist() == [1, 2]


def test_the_lock_is_held_across_processes_and_released_when_one_dies(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    code = ("import os, sys, time; from moit_explore.training import rundir\n"
            f"ctx = rundir.lock_run_dir({str(run_dir)!r}); ctx.__enter__()\n"
            "print('locked', flush=True); sys.stdin.readline(); os._exit(9)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(rundir.RunDirInUseError, match="in use"):
            with rundir.lock_run_dir(run_dir):
                pass
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(30)
    assert p.returncode == 9  # died without releasing anything itself
    with rundir.lock_run_dir(run_dir):
        pass


def test_default_run_names_include_the_seed():
    a = presets.preset("smoke", seed=1).default_name("smoke")
    b = presets.preset("smoke", seed=2).default_name("smoke")
    assert a != b and a.endswith("seed1") and b.endswith("seed2")


# --------------------------------------------------------------------------- stored paths


def test_a_stored_data_root_outside_the_data_folder_is_refused(capsys, run_copy, tmp_path):
    cfg = json.loads((run_copy / "config.json").read_text())
    evil = tmp_path / "evil"
    evil.mkdir()
    cfg.update(dataset="cifar10", data_root=str(evil))
    (run_copy / "config.json").write_text(json.dumps(cfg))
    ck = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    ck["config"].update(dataset="cifar10", data_root=str(evil))
    torch.save(ck, run_copy / "checkpoint.pt")
    for argv in (["train", "--resume", run_copy, "--epochs", "3"],
                 ["finetune", run_copy, "--epochs", "1"]):
        rc, _, err = run_cli(capsys, *argv)
        assert rc == 2 and str(evil) in err and "outside" in err and "--data-root" in err
    # the user's own --data-root is trusted: it gets as far as looking for the files there
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3",
                         "--data-root", evil)
    assert rc == 2 and "cifar10 not found" in err and str(evil) in err


def test_relative_paths_are_stored_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    labels = datasets.load_dataset("digits").train_labels
    np.save(tmp_path / "labels.npy", labels)
    run_dir = train.train(presets.preset("smoke", runs_root="runs", name="rel", epochs=1,
                                        lr_milestones=(), n_train=None, noise_file="labels.npy",
                                        noise="none", rate=0.0))
    cfg = runs.load_run(run_dir).config
    assert cfg["data_root"] == str(tmp_path / "data")
    assert cfg["noise_file"] == str(tmp_path / "labels.npy")


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("field, value", [("method", "ce"), ("n_train", 300), ("width", 16)])
def test_resume_refuses_an_edited_config(capsys, run_copy, field, value):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg[field] = value
    (run_copy / "config.json").write_text(json.dumps(cfg))
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
    assert rc == 2 and field in err and "checkpoint" in err
    assert len(runs.load_run(run_copy).metrics) == 2


def test_leftover_temporary_checkpoints_are_removed_on_the_next_start(capsys, run_copy):
    stale = [run_copy / ".checkpoint.pt.abcd1234.tmp", run_copy / "embeddings" /
             ".final.npz.x_y1z2w3.npz", run_copy / ".config.json.qwertyui.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    keep = run_copy / "notes.tmp"
    keep.write_text("mine")
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
    assert rc == 0, err
    assert not any(p.exists() for p in stale) and keep.exists()


# --------------------------------------------------------------------------- hints


def test_every_recovery_hint_is_a_command_that_works(capsys, run_copy, tmp_path, monkeypatch):
    root = run_copy.parent
    # 1. the run exists: the same command with --name NEW_NAME or --overwrite, or the
    # --resume command, each works
    again = ["train", *SMOKE, "--runs-root", root, "--name", "m"]
    rc, _, err = run_cli(capsys, *again)
    (cmd,) = hints(err)
    assert rc == 2 and "--name NEW_NAME" in err and "--overwrite" in err, err
    assert cmd[:2] == ["train", "--resume"]
    assert run_cli(capsys, *cmd, "--epochs", "3")[0] == 0  # finished: its hint is tested below
    assert run_cli(capsys, *again[:-1], "m-new")[0] == 0
    shutil.copytree(root / "m-new", root / "m-copy")
    assert run_cli(capsys, *again[:-1], "m-copy", "--overwrite")[0] == 0
    # 2. a finished run: resume says how to extend it
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy)
    (cmd,) = hints(err)
    assert rc == 2 and run_cli(capsys, *cmd)[0] == 0
    # 3. interrupted training: the hint resumes it
    real_save = runs.save_checkpoint

    def interrupted(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "save_checkpoint", interrupted)
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", root, "--name", "int")
    monkeypatch.setattr(runs, "save_checkpoint", real_save)
    (cmd,) = hints(err)
    assert rc == 130 and cmd[:2] == ["train", "--resume"]
    rc, _, err = run_cli(capsys, *cmd)
    assert rc == 0, err
    # 4. finetune of an unfinished run: the hint finishes it
    monkeypatch.setattr(runs, "save_checkpoint", interrupted)
    run_cli(capsys, "train", *SMOKE, "--runs-root", root, "--name", "half")
    monkeypatch.setattr(runs, "save_checkpoint", real_save)
    rc, _, err = run_cli(capsys, "finetune", root / "half", "--epochs", "1")
    (cmd,) = hints(err)
    assert rc == 2 and run_cli(capsys, *cmd)[0] == 0
    assert run_cli(capsys, "finetune", root / "half", "--epochs", "1")[0] == 0
    # 5. interrupted MOIT+: its hint resumes it in finetune/
    monkeypatch.setattr(runs, "save_checkpoint", interrupted)
    rc, _, err = run_cli(capsys, "finetune", run_copy, "--epochs", "2")
    monkeypatch.setattr(runs, "save_checkpoint", real_save)
    (cmd,) = hints(err)
    assert rc == 130 and run_cli(capsys, *cmd)[0] == 0
    assert len(runs.load_run(run_copy / "finetune").metrics) == 2
    # 6. interrupted before the first checkpoint: nothing to resume, the hint starts again
    monkeypatch.setattr(train.engine, "run", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", root, "--name", "early")
    monkeypatch.undo()
    (cmd,) = hints(err)
    assert rc == 130 and "--overwrite" in cmd and run_cli(capsys, *cmd)[0] == 0
    # 7. the base run trained further after MOIT+: the hint starts MOIT+ again
    assert run_cli(capsys, "train", "--resume", run_copy, "--epochs", "6")[0] == 0
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy / "finetune", "--epochs", "3")
    (cmd,) = hints(err)
    assert rc == 2 and run_cli(capsys, *cmd, "--epochs", "1")[0] == 0
    # 8. a run without a checkpoint
    (run_copy / "checkpoint.pt").unlink()
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy)
    assert rc == 2 and "--overwrite" in err


# --------------------------------------------------------------------------- noise files


def test_noise_file_with_a_subset_needs_the_full_length(capsys, tmp_path):
    full = datasets.load_dataset("digits")
    short = tmp_path / "short.npy"
    np.save(short, full.train_labels[:400])  # the smoke subset's length: refused
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", tmp_path / "runs",
                         "--noise-file", short, "--noise", "none", "--rate", "0")
    assert rc == 2 and "1437" in err and str(short) in err
    given = full.train_labels.copy()
    given[::7] = (given[::7] + 1) % 10
    ok = tmp_path / "full.npy"
    np.save(ok, given)
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", tmp_path / "runs",
                         "--name", "nf", "--noise-file", ok, "--noise", "none", "--rate", "0")
    assert rc == 0, err
    run = runs.load_run(tmp_path / "runs" / "nf")
    sub = datasets.subset(datasets.load_dataset("digits", noisy_labels=ok), 400, 120, seed=0)
    np.testing.assert_array_equal(run.noise.noisy, sub.given_train_labels)
    np.testing.assert_array_equal(run.noise.clean, sub.train_labels)


# --------------------------------------------------------------------------- parsing


def test_flag_abbreviations_are_refused(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--preset", "smoke", "--runs-root", tmp_path,
                         "--over", "--dry-run")
    assert rc == 2 and "--over" in err
    rc, _, err = run_cli(capsys, "train", "--pres", "smoke", "--dry-run")
    assert rc == 2


# --------------------------------------------------------------------------- damaged files


def _no_traceback(capsys, argv, *needles):
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2, err
    assert "Traceback" not in err and "allow_pickle" not in err
    for n in needles:
        assert str(n) in err, (n, err)
    return err


def test_damaged_run_files_give_clear_errors(capsys, run_copy):
    detect = ["detect", run_copy]
    nz = run_copy / "noise.npz"
    good = nz.read_bytes()
    nz.write_bytes(good[: len(good) // 2])
    _no_traceback(capsys, detect, nz, "damaged")
    nz.write_bytes(b"not a zip file")
    _no_traceback(capsys, detect, nz, "damaged")
    nz.write_bytes(good)
    final = run_copy / "embeddings" / "final.npz"
    good_final = final.read_bytes()
    final.write_bytes(good_final[:100])
    _no_traceback(capsys, detect, final)
    final.write_bytes(good_final)
    cfg_path = run_copy / "config.json"
    good_cfg = cfg_path.read_text()
    for bad in ("[1, 2]", "null"):
        cfg_path.write_text(bad)
        _no_traceback(capsys, detect, cfg_path, "--overwrite")
    cfg_path.write_text(good_cfg)
    metrics = run_copy / "metrics.jsonl"
    good_metrics = metrics.read_text()
    metrics.write_text(good_metrics + "[1, 2]\n")
    _no_traceback(capsys, ["report", run_copy], metrics, "line 3")
    metrics.write_text(good_metrics)
    torch.save({}, run_copy / "checkpoint.pt")
    _no_traceback(capsys, ["train", "--resume", run_copy, "--epochs", "3"],
                  run_copy / "checkpoint.pt", "--overwrite")
    _no_traceback(capsys, ["finetune", run_copy], run_copy / "checkpoint.pt")


@pytest.mark.parametrize("kind", ["csv-huge", "csv-huge-float", "npy-object", "npy-garbage",
                                  "npy-truncated"])
def test_damaged_label_files_give_clear_errors(capsys, tmp_path, kind):
    path = tmp_path / ("labels.csv" if kind.startswith("csv") else "labels.npy")
    n = 1437
    if kind == "csv-huge":
        path.write_text("label\n" + "1\n" * 5 + "99999999999999999999999\n" + "1\n" * (n - 6))
    elif kind == "csv-huge-float":
        path.write_text("label\n" + "1e300\n" + "1\n" * (n - 1))
    elif kind == "npy-object":
        np.save(path, np.array([1, "a", None] * 479, dtype=object), allow_pickle=True)
    elif kind == "npy-garbage":
        path.write_bytes(b"\x93NUMPY garbage that is not an array header")
    else:
        np.save(path, np.arange(n))
        path.write_bytes(path.read_bytes()[:200])
    err = _no_traceback(capsys, ["train", *SMOKE, "--runs-root", tmp_path / "runs",
                                 "--noise-file", path, "--noise", "none", "--rate", "0"], path)
    with pytest.raises(ValueError) as e:
        noise.read_label_file(path)
    assert "allow_pickle" not in str(e.value) and str(path) in err


def test_finetune_refuses_a_run_that_is_not_moit(capsys, tmp_path):
    run_dir = train.train(presets.preset("smoke", runs_root=str(tmp_path), name="ce",
                                        method="ce", epochs=1, lr_milestones=()))
    rc, _, err = run_cli(capsys, "finetune", run_dir, "--epochs", "1")
    assert rc == 2 and "'ce'" in err and "moit" in err
    assert not (run_dir / "finetune").exists()


# --------------------------------------------------------------------------- detect


def test_detect_out_never_overwrites_and_names_the_file(capsys, run_copy, tmp_path):
    target = tmp_path / "det"
    rc, out, err = run_cli(capsys, "detect", run_copy, "--out", target)
    assert rc == 0, err
    written = tmp_path / "det.npz"
    assert f"wrote {written}" in out and written.is_file()
    before = written.read_bytes()
    for name in (target, written):
        rc, _, err = run_cli(capsys, "detect", run_copy, "--out", name)
        assert rc == 2 and "never overwrites" in err and str(written) in err
    assert written.read_bytes() == before
    with np.load(written) as z:
        assert {"clean", "is_label_issue", "soft_labels"} <= set(z.files)


def _folder(tmp_path, digits):
    from PIL import Image

    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c in (0, 1, 7):
        for i in rng.choice(np.flatnonzero(digits.train_labels == c), 40, False):
            path = folder / f"digit{c}" / f"img{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(digits.train_images[i, :, :, 0]).save(path)
    return folder


def test_detect_csv_names_the_files_trained_on_and_refuses_when_they_changed(capsys, tmp_path,
                                                                             digits):
    folder = _folder(tmp_path, digits)
    rc, _, err = run_cli(capsys, "train", "--preset", "digits", "--dataset",
                         f"imagefolder:{folder}", "--image-channels", "1", "--image-size", "8",
                         "--noise", "none", "--rate", "0", "--k", "10", "--xbm-per-class",
                         "30", "--epochs", "2", "--lr-milestones", "1", "--runs-root",
                         tmp_path / "runs", "--name", "f", "--no-progress")
    assert rc == 0, err
    run_dir = tmp_path / "runs" / "f"
    trained = datasets.load_dataset(f"imagefolder:{folder}", channels=1, image_size=8)
    rc, out, err = run_cli(capsys, "detect", run_dir, "--csv", tmp_path / "a.csv")
    assert rc == 0 and "warning" not in err.lower()
    a = pd.read_csv(tmp_path / "a.csv", index_col="sample")
    assert "selected_for_training" in a and a["is_label_issue"].dtype == bool
    assert [a.loc[i, "path"] for i in range(len(a))] == trained.train_paths
    # the user moves one image into another class folder (what the table invites): the
    # features belong to the images as they were, so the table is refused, naming the file
    moved = sorted((folder / "digit0").iterdir())[0]
    moved.rename(folder / "digit1" / moved.name)
    rc, out, err = run_cli(capsys, "detect", run_dir, "--csv", tmp_path / "b.csv")
    assert rc == 2 and str(moved) in err and "moved or deleted" in err
    assert not (tmp_path / "b.csv").exists()
    (folder / "digit1" / moved.name).rename(moved)  # put back: the table is written again
    # an edited file (same name, other bytes) is named as well
    other = sorted((folder / "digit7").iterdir())[0]
    other.write_bytes(other.read_bytes() + b"\0")
    rc, out, err = run_cli(capsys, "detect", run_dir, "--csv", tmp_path / "c.csv")
    assert rc == 2 and str(other) in err and "changed content" in err and str(moved) not in err
    # detection without a table names no file: it runs on the stored features
    rc, out, err = run_cli(capsys, "detect", run_dir)
    assert rc == 0, err


def test_npz_members_are_checked_not_trusted(tmp_path):
    """A final.npz member that is an object array gets the damaged-file error, never a
    suggestion to allow pickles."""
    path = tmp_path / "final.npz"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("features.npy", "w") as f:
            np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError) as e:
        runs._load_npz(path, "final embeddings")
    assert str(path) in str(e.value) and "allow_pickle" not in str(e.value)
