"""Runs that never lie and never lose data (issue 20): one test per numbered case, as a user
types it (the command line, or the Python API), on the smoke / digits presets or tiny image
folders written here as real PNG / TIFF files.

Wrong answers (cases 1-7), data lost (8-11), security (12-14), errors that help (15-17).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import hints, run_cli
from PIL import Image

from moit_explore import cli
from moit_explore.analysis import label_issues
from moit_explore.training import datasets, fingerprint, presets, rundir, runs, train

SMOKE = ["--preset", "smoke", "--epochs", "2", "--lr-milestones", "1", "--no-progress"]




def files_of(folder) -> dict:
    """{relative path: bytes} of every file under ``folder`` (to show nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}




def _image_folder(root, digits, per_class=30):
    """Three class folders of real 8x8 PNG digits."""
    rng = np.random.default_rng(0)
    for c in (0, 1, 7):
        for i in rng.choice(np.flatnonzero(digits.train_labels == c), per_class, False):
            path = root / f"digit{c}" / f"img{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(digits.train_images[i, :, :, 0]).save(path)
    return root


FOLDER_FLAGS = ["--preset", "digits", "--image-channels", "1", "--image-size", "8", "--noise",
                "none", "--rate", "0", "--k", "10", "--xbm-per-class", "30", "--epochs", "2",
                "--lr-milestones", "1", "--correction-start", "1", "--no-progress"]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, digits):
    """A finished 2-epoch MOIT run on an image folder: (folder, run directory)."""
    root = tmp_path_factory.mktemp("folder")
    folder = _image_folder(root / "images", digits)
    assert cli.main(["train", *FOLDER_FLAGS, "--dataset", f"imagefolder:{folder}",
                     "--runs-root", str(root / "runs"), "--name", "f"]) == 0
    return folder, root / "runs" / "f"


@pytest.fixture
def folder_copy(folder_run, tmp_path):
    """A copy of the image folder and of its run, the run's config pointing at the copy."""
    folder, run_dir = folder_run
    new_folder, new_run = tmp_path / "images", tmp_path / "runs" / "f"
    shutil.copytree(folder, new_folder)
    shutil.copytree(run_dir, new_run)
    for name in ("config.json", "trained_on.json"):
        text = (new_run / name).read_text().replace(str(folder), str(new_folder))
        (new_run / name).write_text(text)
    state = torch.load(new_run / "checkpoint.pt", weights_only=True)
    state["config"]["dataset"] = f"imagefolder:{new_folder}"
    torch.save(state, new_run / "checkpoint.pt")
    return new_folder, new_run


# =========================================================================== wrong answers


def test_case01_finetune_and_resume_refuse_an_image_folder_changed_since(capsys, folder_copy):
    folder, run_dir = folder_copy
    record = json.loads((run_dir / "trained_on.json").read_text())
    assert len(record["images"]) == 90 and all(len(e["sha256"]) == 64 for e in record["images"])
    before = files_of(run_dir)
    # the user fixes a misfiled image: moves it into another class folder
    moved = sorted((folder / "digit0").iterdir())[0]
    moved.rename(folder / "digit1" / moved.name)
    rc, _, err = run_cli(capsys, "finetune", run_dir, "--epochs", "1")
    assert rc == 2 and str(moved) in err and str(folder / "digit1" / moved.name) in err
    assert "added" in err and "moved or deleted" in err
    assert not (run_dir / "finetune").exists() and files_of(run_dir) == before
    rc, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "3")
    assert rc == 2 and str(moved) in err and "another --name" in err
    assert files_of(run_dir) == before  # metrics, checkpoint untouched
    # an edited image (same name, other pixels) is refused as well
    (folder / "digit1" / moved.name).rename(moved)
    other = sorted((folder / "digit7").iterdir())[3]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(other)
    rc, _, err = run_cli(capsys, "finetune", run_dir, "--epochs", "1")
    assert rc == 2 and str(other) in err and "changed content" in err
    assert not (run_dir / "finetune").exists()
    # a deleted image too
    other.unlink()
    rc, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "3")
    assert rc == 2 and "moved or deleted" in err and str(other) in err


def test_case01_resume_and_finetune_run_on_the_data_they_recorded(capsys, folder_copy):
    folder, run_dir = folder_copy
    rc, _, err = run_cli(capsys, "finetune", run_dir, "--epochs", "1")
    assert rc == 0, err
    assert (run_dir / "finetune" / "trained_on.json").read_bytes() == \
        (run_dir / "trained_on.json").read_bytes()
    rc, _, err = run_cli(capsys, "detect", run_dir / "finetune", "--csv", run_dir / "t.csv")
    assert rc == 0, err
    table = pd.read_csv(run_dir / "t.csv", index_col="sample")
    paths = fingerprint.recorded_image_paths(run_dir)
    assert [table.loc[i, "path"] for i in range(len(table))] == paths
    # the fine-tune refuses a resume after the folder changed too
    victim = sorted((folder / "digit7").iterdir())[0]
    victim.unlink()
    rc, _, err = run_cli(capsys, "train", "--resume", run_dir / "finetune", "--epochs", "2")
    assert rc == 2 and str(victim) in err


def test_case01_resume_refuses_other_images_of_a_built_in_data_set(capsys, run_copy,
                                                                    monkeypatch):
    """Any data set, not only a folder: the loaded training images are fingerprinted too (here
    scikit-learn's digits with one pixel changed, as a replaced data file would)."""
    real = datasets._load_digits

    def one_pixel_off():
        b = real()
        b.train_images[:, 0, 0, 0] += 1
        return b

    monkeypatch.setattr(datasets, "_load_digits", one_pixel_off)
    before = files_of(run_copy)
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
    assert rc == 2 and "the training images of digits differ" in err
    assert files_of(run_copy) == before


def _label_file(tmp_path, digits, flip=0):
    labels = digits.train_labels.copy()
    labels[:flip] = (labels[:flip] + 1) % 10
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    return path


def test_case01_and_05_a_noise_file_is_recorded_shown_and_checked(capsys, tmp_path, digits):
    labels = _label_file(tmp_path, digits, flip=300)
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--noise-file", labels, "--runs-root",
                         tmp_path / "runs", "--name", "nf")
    assert rc == 0, err
    run_dir = tmp_path / "runs" / "nf"
    run = runs.load_run(run_dir)
    # case 5: config.json and report say what the run trained on: no synthetic noise drawn,
    # the file's share of wrong labels
    assert run.config["noise"] == "none" and run.config["rate"] == 0.0
    assert run.config["noise_actual_rate"] == pytest.approx(run.noise.actual_rate)
    assert run.noise.actual_rate > 0.1 and run.noise.kind == "file"
    rc, out, err = run_cli(capsys, "report", run_dir)
    assert rc == 0 and "0.4000" not in out and "symmetric" not in out and "file" in out
    assert f"{run.noise.actual_rate:.4f}" in out  # the file's share of wrong labels
    # case 1: the file's contents change; the resume is refused, naming the file
    np.save(labels, digits.train_labels)
    before = files_of(run_dir)
    rc, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "3")
    assert rc == 2 and str(labels) in err and "label file" in err
    assert files_of(run_dir) == before
    _label_file(tmp_path, digits, flip=300)  # the same bytes again
    rc, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "3")
    assert rc == 0, err


@pytest.mark.parametrize("argv", [["--noise", "asymmetric", "--rate", "0.3"],
                                  ["--rate", "0.3"]])
def test_case05_a_noise_file_with_synthetic_noise_settings_is_refused(capsys, tmp_path, digits,
                                                                      argv):
    labels = _label_file(tmp_path, digits)
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--noise-file", labels, *argv,
                         "--runs-root", tmp_path / "runs", "--dry-run")
    assert rc == 2 and "--noise-file" in err and "one or the other" in err


def test_case05_a_noise_npz_of_another_length_is_refused(capsys, run_copy, finished):
    with np.load(run_copy / "noise.npz") as z:
        other = {k: z[k] for k in z.files}
    with open(run_copy / "noise.npz", "wb") as f:
        np.savez(f, **{k: (v[:100] if v.ndim == 1 else v) for k, v in other.items()})
    rc, out, err = run_cli(capsys, "report", run_copy)
    assert rc == 2 and "noise.npz holds 100 labels" in err and "400" in err


def _png16(path, array):
    Image.fromarray(array.astype(np.uint16)).save(path)


def test_case02_16_bit_and_float_images_are_scaled_by_their_bit_depth(tmp_path):
    folder = tmp_path / "deep"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    gradient = np.tile(np.linspace(0, 65535, 32).round(), (32, 1))
    _png16(folder / "a" / "grad.png", gradient)
    Image.fromarray(np.full((32, 32), 0.5, np.float32)).save(folder / "b" / "half.tif")
    assert Image.open(folder / "a" / "grad.png").mode == "I;16"
    b = datasets.load_dataset(f"imagefolder:{folder}", channels=1, image_size=32)
    grad = b.train_images[b.train_labels == 0][0, :, :, 0]
    assert grad.min() == 0 and grad.max() == 255 and len(np.unique(grad)) == 32
    np.testing.assert_allclose(grad[0], gradient[0] / 257, atol=0.5)
    half = b.train_images[b.train_labels == 1][0]
    assert np.all(half == 128)  # 0.5 of full scale, not black
    # a float image outside [0, 1] is refused, naming it (no silent clipping)
    Image.fromarray(np.full((32, 32), 7.0, np.float32)).save(folder / "b" / "big.tif")
    with pytest.raises(ValueError, match=re.escape(str(folder / "b" / "big.tif"))):
        datasets.load_dataset(f"imagefolder:{folder}", channels=1)


def test_case04_images_in_hidden_folders_are_not_members_of_a_class(tmp_path, digits):
    folder = _image_folder(tmp_path / "images", digits, per_class=5)
    for hidden in (".ipynb_checkpoints", ".thumbs"):
        (folder / "digit0" / hidden).mkdir()
        Image.fromarray(digits.train_images[0, :, :, 0]).save(
            folder / "digit0" / hidden / "img-checkpoint.png")
    (folder / "digit1" / "sub" / ".cache").mkdir(parents=True)
    Image.fromarray(digits.train_images[0, :, :, 0]).save(folder / "digit1" / "sub" / ".cache"
                                                          / "x.png")
    b = datasets.load_dataset(f"imagefolder:{folder}", channels=1, image_size=8)
    assert len(b.train_paths) == 15 and not any("/." in p for p in b.train_paths)


def test_case06_detect_refuses_a_run_that_is_training(capsys, run_copy):
    with rundir.lock_run_dir(run_copy):  # e.g. `train --resume RUN --epochs 200` is running
        rc, _, err = run_cli(capsys, "detect", run_copy)
        assert rc == 2 and "in use" in err and str(run_copy) in err
    rc, _, err = run_cli(capsys, "detect", run_copy)
    assert rc == 0, err


def test_case06_a_damaged_metrics_row_of_a_checkpointed_epoch_is_kept(capsys, run_copy):
    path = run_copy / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = lines[0][:40]  # epoch 1's row, damaged
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
    assert rc == 2 and f"{path}, line 1" in err and "Repair that line" in err
    assert path.read_bytes() == before
    # a half-written LAST line is what a kill leaves: dropped, and the resume runs
    lines = before.decode().splitlines()
    path.write_text("\n".join([json.dumps({"epoch": 1, "lr": 0.1}), lines[1], '{"epo']) + "\n")
    rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
    assert rc == 0, err
    assert runs.read_metrics(run_copy)["epoch"].tolist() == [1, 2, 3]


# =========================================================================== data lost


def test_case08_overwrite_never_empties_a_folder_it_did_not_write(capsys, tmp_path):
    notarun = tmp_path / "notarun"
    notarun.mkdir()
    (notarun / "thesis.tex").write_text("years of work")
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", tmp_path, "--name", "notarun",
                         "--overwrite")
    assert rc == 2 and "not a run directory" in err
    assert files_of(notarun) == {"thesis.tex": b"years of work"}
    # a run directory holding a file a run does not write is not emptied either
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", tmp_path, "--name", "r")
    assert rc == 0, err
    (tmp_path / "r" / "notes.txt").write_text("mine")
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", tmp_path, "--name", "r",
                         "--overwrite")
    assert rc == 2 and "notes.txt" in err
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"
    (tmp_path / "r" / "notes.txt").unlink()
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", tmp_path, "--name", "r",
                         "--overwrite")
    assert rc == 0, err


def test_case08_finetune_overwrite_cannot_remove_the_base_runs_files(capsys, run_copy):
    before = files_of(run_copy)
    for name in ("embeddings", "."):
        rc, _, err = run_cli(capsys, "finetune", run_copy, "--epochs", "1", "--name", name,
                             "--overwrite")
        assert rc == 2, err
    assert files_of(run_copy) == before


def test_case09_resume_of_a_folder_that_is_not_a_run_touches_nothing(capsys, tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / ".passwd.abcd1234.tmp").write_text("keep")
    (folder / "hosts").write_text("keep")
    rc, _, err = run_cli(capsys, "train", "--resume", folder)
    assert rc == 2 and "not a run directory" in err
    assert sorted(p.name for p in folder.iterdir()) == [".passwd.abcd1234.tmp", "hosts"]
    rc, _, err = run_cli(capsys, "finetune", folder)
    assert rc == 2 and sorted(p.name for p in folder.iterdir()) == [".passwd.abcd1234.tmp",
                                                                    "hosts"]


def test_case10_a_stray_rank_in_the_environment_keeps_the_lock(capsys, run_copy, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # no torchrun: WORLD_SIZE, LOCAL_RANK unset
    before = files_of(run_copy)
    with rundir.lock_run_dir(run_copy):  # another process is training in it
        rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", run_copy.parent, "--name",
                             "m", "--overwrite")
        assert rc == 2 and "in use" in err
        rc, _, err = run_cli(capsys, "train", "--resume", run_copy, "--epochs", "3")
        assert rc == 2 and "in use" in err
    assert files_of(run_copy) == before
    rc, out, err = run_cli(capsys, "train", *SMOKE, "--runs-root", run_copy.parent, "--name",
                           "n")
    assert rc == 0 and "run directory:" in out  # a lone process reports as rank 0


def test_case11_export_label_issues_never_replaces_a_file(tmp_path):
    table = pd.DataFrame({"is_label_issue": [True, False], "given_label": [0, 1]})
    path = tmp_path / "exists.csv"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="exists"):
        label_issues.export_label_issues(table, path)
    assert path.read_text() == "precious"
    label_issues.export_label_issues(table, tmp_path / "new.csv")
    assert pd.read_csv(tmp_path / "new.csv", index_col="sample").shape == (2, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.csv", "new.csv"]


def test_case11_a_full_disk_during_detect_csv_leaves_no_file(capsys, run_copy, tmp_path,
                                                             monkeypatch):
    real = pd.DataFrame.to_csv

    def full_disk(self, path, *a, **kw):
        with open(path, "w") as f:
            f.write("sample,is_label_issue\n0,Tr")  # half a table, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    rc, _, err = run_cli(capsys, "detect", run_copy, "--csv", tmp_path / "t.csv")
    assert rc == 1 and "No space left" in err and "Traceback" not in err
    assert not (tmp_path / "t.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".t.csv")]
    monkeypatch.setattr(pd.DataFrame, "to_csv", real)
    rc, _, err = run_cli(capsys, "detect", run_copy, "--csv", tmp_path / "t.csv")
    assert rc == 0 and (tmp_path / "t.csv").is_file()


def test_case11_report_out_never_replaces_files(capsys, run_copy, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.md").write_text("my report")
    rc, _, err = run_cli(capsys, "report", run_copy, "--out", out)
    assert rc == 2 and "never replaces" in err and "Errno" not in err
    assert files_of(out) == {"report.md": b"my report"}
    (tmp_path / "file").write_text("x")
    rc, _, err = run_cli(capsys, "report", run_copy, "--out", tmp_path / "file")
    assert rc == 2 and "not a folder" in err and "Errno" not in err
    rc, _, err = run_cli(capsys, "report", run_copy, "--out", tmp_path / "new")
    assert rc == 0 and (tmp_path / "new" / "report.md").is_file()


# =========================================================================== security


class _Marker:
    """A pickle that, when loaded, creates a file (what a malicious CIFAR batch could do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("spelling", ["cifar10 ", "CIFAR_10", "Cifar10\t"])
def test_case12_no_spelling_of_a_dataset_name_escapes_the_data_root_check(capsys, run_copy,
                                                                          tmp_path, spelling):
    pickles = tmp_path / "pickles" / "cifar-10-batches-py"
    pickles.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (pickles / f).write_bytes(pickle.dumps(_Marker(marker)))
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg.update(dataset=spelling, data_root=str(pickles.parent))
    (run_copy / "config.json").write_text(json.dumps(cfg))
    for argv in (["finetune", run_copy, "--epochs", "1"],
                 ["report", run_copy, "--out", tmp_path / "rep"],
                 ["train", "--resume", run_copy, "--epochs", "3"]):
        rc, _, err = run_cli(capsys, *argv)
        assert rc == 2 and str(run_copy / "config.json") in err, (argv, err)
    run_cli(capsys, "detect", run_copy)  # reads the stored features only, never the data
    with pytest.raises(ValueError, match="config.json"):
        runs.load_run(run_copy).dataset()
    assert not marker.exists()


def test_case13_a_metrics_link_planted_during_training_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    run_dir = tmp_path / "runs" / "s"

    def plant(row):
        if row["epoch"] == 1:
            (run_dir / "metrics.jsonl").unlink()
            (run_dir / "metrics.jsonl").symlink_to(outside)

    with pytest.raises(ValueError, match="symbolic link"):
        train.train(presets.preset("smoke", runs_root=str(tmp_path / "runs"), name="s",
                                   epochs=2, lr_milestones=(1,)), on_epoch_end=plant)
    assert outside.read_text() == "keep\n"
    with pytest.raises(ValueError, match="symbolic link"):
        runs.load_run(run_dir)


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/tmp/x", ".."])
def test_case14_a_demo_name_cannot_escape_its_root(capsys, tmp_path, name):
    root = tmp_path / "root"
    root.mkdir()
    rc, _, err = run_cli(capsys, "demo", "--root", root, "--name", name, "--preset", "smoke",
                         "--no-progress")
    assert rc == 2 and "plain folder name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"] and not list(root.iterdir())


# =========================================================================== errors that help


def test_case15_report_has_the_data_root_flag_its_hint_names(capsys, run_copy, tmp_path):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg.update(dataset="fashion-mnist", data_root=str(tmp_path / "elsewhere"))
    (run_copy / "config.json").write_text(json.dumps(cfg))
    rc, _, err = run_cli(capsys, "report", run_copy, "--out", tmp_path / "a")
    assert rc == 2 and "--data-root" in err
    # the flag the hint names is one of report's
    args = cli.build_parser().parse_args(["report", str(run_copy), "--out", str(tmp_path / "b"),
                                          "--data-root", str(tmp_path / "elsewhere")])
    assert args.data_root == str(tmp_path / "elsewhere")


def test_case15_finetune_without_final_npz_gives_a_hint_that_works(capsys, run_copy):
    (run_copy / "embeddings" / "final.npz").unlink()
    rc, _, err = run_cli(capsys, "finetune", run_copy, "--epochs", "1")
    assert rc == 2 and "final.npz" in err and "deleted" in err
    for argv in hints(err):  # no hint to a command that then refuses ("already finished")
        rc2, _, err2 = run_cli(capsys, *argv)
        assert rc2 == 0, (argv, err2)


def test_case15_asymmetric_noise_without_a_flip_map_is_refused_by_dry_run(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--preset", "smoke", "--noise", "asymmetric",
                         "--dry-run")
    assert rc == 2 and "flip_map" not in err and "--noise symmetric" in err


def _no_traceback(capsys, argv, *needles, rc_expected=(1, 2)):
    rc, out, err = run_cli(capsys, *argv)  # an uncaught exception would raise here
    assert rc in rc_expected, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_case16_a_diverging_training_says_so_and_names_the_way_out(capsys, tmp_path):
    err = _no_traceback(capsys, ["train", *SMOKE, "--lr", "1e6", "--runs-root", tmp_path,
                                 "--name", "d"], "diverged", "--overwrite",
                        str(tmp_path / "d"))
    rc, _, err = run_cli(capsys, "train", *SMOKE, "--runs-root", tmp_path, "--name", "d",
                         "--overwrite")
    assert rc == 0, err


@pytest.mark.parametrize("flag", ["--alpha", "--lr", "--tau", "--weight-decay"])
def test_case16_an_infinite_setting_is_refused_before_training(capsys, tmp_path, flag):
    rc, _, err = run_cli(capsys, "train", *SMOKE, flag, "inf", "--runs-root", tmp_path)
    assert rc == 2 and "must be a finite number" in err and not list(tmp_path.iterdir())


def test_case16_a_full_disk_while_checkpointing_is_a_clear_error(capsys, tmp_path, monkeypatch):
    def full(*a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0"
                           "\nbasic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    err = _no_traceback(capsys, ["train", *SMOKE, "--runs-root", tmp_path, "--name", "f"],
                        "No space left on device", "checkpoint.pt")
    assert "basic_ios" not in err.splitlines()[0][:60]


def test_case16_a_read_only_run_directory_is_a_clear_error(capsys, run_copy, monkeypatch):
    """The tests run as root, for whom no folder is read-only: the operating system's refusal
    is simulated where a run writes its files (rundir's temporary files)."""
    def refuse(*a, dir=None, **kw):  # noqa: A002 -- tempfile.mkstemp's own name
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(rundir.tempfile, "mkstemp", refuse)
    err = _no_traceback(capsys, ["train", "--resume", run_copy, "--epochs", "3"],
                        "Permission denied", str(run_copy), "not writable by you")
    assert "Traceback" not in err


def test_case16_a_decompression_bomb_names_the_file(tmp_path, digits, monkeypatch):
    folder = _image_folder(tmp_path / "images", digits, per_class=2)
    big = folder / "digit0" / "big.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x 1000
    with pytest.raises(ValueError, match=re.escape(str(big)) + ".*decompression bomb"):
        datasets.load_dataset(f"imagefolder:{folder}", channels=1, image_size=8)


@pytest.mark.parametrize("field, value", [("k", "ten"), ("width", 1.5), ("classes", 3),
                                          ("n_train_actual", "400")])
def test_case16_a_bad_config_field_is_named_by_every_command(capsys, run_copy, field, value):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg[field] = value
    (run_copy / "config.json").write_text(json.dumps(cfg))
    for argv in (["finetune", run_copy, "--epochs", "1"], ["detect", run_copy],
                 ["report", run_copy], ["train", "--resume", run_copy, "--epochs", "3"]):
        _no_traceback(capsys, argv, str(run_copy / "config.json"), field)


def test_case16_a_checkpoint_of_other_shapes_is_a_clear_error(capsys, run_copy, tmp_path):
    other = train.train(presets.preset("smoke", runs_root=str(tmp_path), name="w", epochs=1,
                                       width=4))
    shutil.copyfile(other / "checkpoint.pt", run_copy / "checkpoint.pt")
    state = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    state["epoch"] = 2
    state.pop("config", None)  # as if from before configurations were stored in it
    torch.save(state, run_copy / "checkpoint.pt")
    _no_traceback(capsys, ["finetune", run_copy, "--epochs", "1"], "checkpoint",
                  "does not fit")
    _no_traceback(capsys, ["train", "--resume", run_copy, "--epochs", "3"], "checkpoint",
                  "does not fit")


def test_case16_a_model_too_large_for_memory_is_a_clear_error(tmp_path):
    """``--width 100000`` asks for 720 GB of weights: one line naming the flags to lower. Run
    in a process whose address space is capped, so the test never takes the machine's memory."""
    import resource  # noqa: PLC0415 -- POSIX only
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    r = subprocess.run([sys.executable, "-m", "moit_explore", "train", *SMOKE, "--width",
                        "100000", "--runs-root", str(tmp_path), "--name", "wide"],
                       capture_output=True, text=True, timeout=120, preexec_fn=cap,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "out of memory" in r.stderr and "--width" in r.stderr
    assert not (tmp_path / "wide").exists()  # nothing left that blocks the rerun


def test_case17_undecodable_bytes_name_the_file_and_line(capsys, run_copy, tmp_path, digits):
    metrics = run_copy / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes().replace(b'"lr"', b'"l\xb4r"', 1))
    _no_traceback(capsys, ["report", run_copy], f"{metrics}, line 1", "UTF-8")
    config = run_copy / "config.json"
    config.write_bytes(config.read_bytes().replace(b'"smoke"', b'"sm\xb4oke"', 1))
    _no_traceback(capsys, ["detect", run_copy], str(config), "UTF-8")
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"label\n" + b"1\n" * 5 + b"\xb4\n")
    _no_traceback(capsys, ["train", *SMOKE, "--noise-file", labels, "--noise", "none", "--rate",
                           "0", "--runs-root", tmp_path], f"{labels}: line 7", "UTF-8")


def test_case17_values_that_are_not_labels_or_numbers_are_named(capsys, run_copy, tmp_path):
    labels = tmp_path / "labels.npy"
    np.save(labels, np.array([1.0, np.inf] + [0.0] * 1435))
    err = _no_traceback(capsys, ["train", *SMOKE, "--noise-file", labels, "--runs-root",
                                 tmp_path], str(labels), "index 1")
    assert "9223372036854775808" not in err
    metrics = run_copy / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace('"test_acc": ', '"test_acc": "high", "x": ',
                                                   1))
    _no_traceback(capsys, ["report", run_copy], f"{metrics}, line 1", "test_acc", "not a number")
    _no_traceback(capsys, ["train", *SMOKE, "--seed", str(2**64), "--runs-root", tmp_path],
                  "seed must be < 2**63")


def test_case17_a_diverging_ce_run_is_not_reported_as_bad_features(capsys, tmp_path):
    # the whole smoke preset: in its 2nd epoch the eval-mode features overflow to NaN while
    # the training loss is still finite
    err = _no_traceback(capsys, ["train", "--preset", "smoke", "--no-progress", "--method",
                                 "ce", "--lr", "1e4",
                                 "--runs-root", tmp_path, "--name", "ce"], "diverged")
    assert "drop or repair those rows" not in err


def test_write_new_file_never_replaces_and_leaves_no_temporary(tmp_path):
    """write_new_file leaves no temporary file behind, whatever the outcome."""
    path = tmp_path / "a.bin"
    rundir.write_new_file(path, lambda p: p.write_bytes(b"x"))
    with pytest.raises(FileExistsError):
        rundir.write_new_file(path, lambda p: p.write_bytes(b"y"))
    assert path.read_bytes() == b"x" and sorted(os.listdir(tmp_path)) == ["a.bin"]


# =========================================================================== label issues


def _two_blobs(n_per_class=100):
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(0, 0.1, (n_per_class, 2)),
                           rng.normal(10, 0.1, (n_per_class, 2))]).astype(np.float32)


def test_case03_label_issues_do_not_depend_on_which_class_indices_are_used():
    x = _two_blobs()
    a = label_issues.label_issues_table(np.repeat([0, 1], 100), x, k=10, sort=False)
    b = label_issues.label_issues_table(np.repeat([3, 7], 100), x, k=10, sort=False)
    # classes nobody is labelled with (2..6, 8.. ) change nothing: same verdicts, same scores
    for col in a.columns:
        if col not in ("given_label", "suggested_label"):
            np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy(), err_msg=col)
    assert a["is_label_issue"].sum() <= 2  # two clean, far-apart blobs


def test_case07_a_k_as_large_as_the_data_does_not_flag_every_correct_label():
    x = _two_blobs()
    y = np.repeat([0, 1], 100)
    flagged = label_issues.find_label_issues(y, x, k=len(y) - 1)
    # the old rule flagged all 200 (each point's 199 neighbours: 99 of its class, 100 not)
    assert flagged.sum() <= 0.02 * len(y)


@pytest.mark.parametrize("digits_used, per_class", [((0, 1), 80), ((0, 1, 7), 30)])
def test_case15_notebook_06s_folder_run_trains_small_folders_as_they_are(tmp_path, monkeypatch,
                                                                         digits, digits_used,
                                                                         per_class):
    """Notebook 6 used to stop with "raise --xbm-per-class" / "pass a smaller --batch-size",
    flags a notebook has no parameter for, on a 2-class 160-image or 3-class 90-image folder."""
    from moit_explore.course import notebook_runs  # noqa: PLC0415 -- the notebook layer

    monkeypatch.setenv("MOIT_COURSE_RUNS", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    for c in digits_used:
        for i in rng.choice(np.flatnonzero(digits.train_labels == c), per_class, False):
            path = tmp_path / "images" / f"digit{c}" / f"img{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(digits.train_images[i, :, :, 0]).save(path)
    bundle = datasets.load_dataset(f"imagefolder:{tmp_path / 'images'}", channels=1,
                                   image_size=8)
    run = notebook_runs.folder_run(bundle, preset="smoke", progress=False, epochs=1)
    assert run.final()["features"].shape[0] == len(digits_used) * per_class


def test_case05_a_course_run_on_a_label_file_is_cached_as_it_is_recorded(tmp_path, monkeypatch):
    """The course's asymmetric digits run trains on a label file: its config.json records no
    synthetic noise, and the second call finds it in the cache instead of training again."""
    from moit_explore.course import notebook_runs  # noqa: PLC0415 -- the notebook layer

    monkeypatch.setenv("MOIT_COURSE_RUNS", str(tmp_path / "cache"))
    first = notebook_runs.course_run("moit", "asymmetric", 0.4, preset="digits",
                                     progress=False, epochs=1)
    assert first.config["noise"] == "none" and first.config["noise_file"]
    assert first.noise.kind == "file" and first.noise.actual_rate > 0.1
    stamp = (first.path / "checkpoint.pt").stat().st_mtime_ns
    again = notebook_runs.course_run("moit", "asymmetric", 0.4, preset="digits",
                                     progress=False, epochs=1)
    assert again.path == first.path
    assert (again.path / "checkpoint.pt").stat().st_mtime_ns == stamp
