"""The command line: flags mirror the config, bad input fails before training, the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli

from moit_explore.course import demo
from moit_explore.training import config, presets, runs


def test_every_config_field_is_a_flag_with_its_help(capsys):
    rc, out, _ = run_cli(capsys, "train", "--help")
    assert rc == 0
    for name in config.TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out, name
    assert "--no-progress" in out and "--resume" in out
    assert "cross-batch memory is used from epoch > xbm_begin" in " ".join(out.split())


def test_dry_run_parses_types(capsys, tmp_path):
    rc, out, _ = run_cli(capsys, "train", "--preset", "smoke", "--dry-run", "--rate", "0.2",
                         "--lr-milestones", "5,7", "--no-progress", "--n-test", "none",
                         "--k", "12", "--noise", "symmetric")
    assert rc == 0
    lines = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    assert lines["rate"] == "0.2" and lines["lr_milestones"] == "(5, 7)"
    assert lines["progress"] == "False" and lines["n_test"] == "None" and lines["k"] == "12"
    assert lines["preset"] == "smoke" and lines["dataset"] == "digits"


@pytest.mark.parametrize("argv, message", [
    (["--bogus-flag", "1"], "unrecognized arguments: --bogus-flag"),
    (["--rate", "1.5"], "rate must be in"),
    # issue 20 case 15: refused before any data is loaded, without a flag the CLI lacks
    (["--noise", "asymmetric"], "'digits' does not have"),
    (["--seed", str(2**64)], "seed must be < 2**63"),
    (["--rate", "abc"], "expected a number"),
    (["--k", "400"], "k=400 is out of range for N=400 training images"),
    (["--method", "moitt"], "invalid choice: 'moitt'"),
    (["--lr-milestones", "a,b"], "comma list of integers"),
    (["--epochs", "0"], "epochs must be >= 1"),
])
def test_invalid_input_fails_before_training(capsys, tmp_path, argv, message):
    rc, out, err = run_cli(capsys, "train", "--preset", "smoke", "--runs-root", tmp_path, *argv)
    assert rc == 2
    assert message in err
    assert list(tmp_path.iterdir()) == []  # no run directory was created


def test_k_checked_against_the_loaded_data_before_training(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--preset", "smoke", "--runs-root", tmp_path,
                         "--n-train", "none", "--k", "2000")
    assert rc == 2 and "k=2000 is out of range for N=1437 training images" in err
    assert list(tmp_path.iterdir()) == []


def test_train_detect_report_finetune_resume(capsys, tmp_path):
    rc, out, err = run_cli(capsys, "train", "--preset", "smoke", "--runs-root", tmp_path,
                           "--name", "m", "--epochs", "2", "--lr-milestones", "1")
    assert rc == 0, err
    run_dir = tmp_path / "m"
    assert "test acc" in out and len(runs.load_run(run_dir).metrics) == 2

    # the same name again is refused, with the ways out
    rc, _, err = run_cli(capsys, "train", "--preset", "smoke", "--runs-root", tmp_path,
                         "--name", "m", "--epochs", "2")
    assert rc == 2 and "--overwrite" in err and "--resume" in err

    # detect: prints metrics, writes nothing
    before = sorted(p.name for p in run_dir.rglob("*"))
    final_bytes = (run_dir / "embeddings" / "final.npz").read_bytes()
    rc, out, err = run_cli(capsys, "detect", run_dir, "--k", "5", "--balance", "none")
    assert rc == 0, err
    assert "k=5" in out and "precision" in out and "recall" in out
    assert sorted(p.name for p in run_dir.rglob("*")) == before
    assert (run_dir / "embeddings" / "final.npz").read_bytes() == final_bytes
    rc, _, err = run_cli(capsys, "detect", run_dir, "--k", "400")
    assert rc == 2 and "k=400 is out of range" in err
    rc, _, err = run_cli(capsys, "detect", run_dir, "--out",
                         run_dir / "embeddings" / "final.npz")
    assert rc == 2 and "never overwrites" in err

    # resume extends; only trajectory-neutral fields may change
    rc, _, err = run_cli(capsys, "train", "--resume", run_dir, "--lr", "0.3")
    assert rc == 2 and "--lr" in err
    rc, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "3")
    assert rc == 0, err
    assert runs.load_run(run_dir).metrics["epoch"].tolist() == [1, 2, 3]

    # MOIT+ (the smoke fine-tuning preset follows from the run's preset)
    rc, out, err = run_cli(capsys, "finetune", run_dir, "--epochs", "1")
    assert rc == 0, err
    ft = runs.load_run(run_dir / "finetune")
    assert ft.config["method"] == "moit+" and len(ft.metrics) == 1

    # report: a table with both runs, and figures
    rc, out, err = run_cli(capsys, "report", run_dir, "--out", tmp_path / "rep")
    assert rc == 0, err
    assert "moit+" in out and "test_acc_last" in out
    assert (tmp_path / "rep" / "report.md").is_file()
    assert (tmp_path / "rep" / "accuracy.png").stat().st_size > 1000
    rc, _, err = run_cli(capsys, "report", tmp_path)
    assert rc == 2 and "not a run directory" in err


def test_overwrite_flag_replaces_the_run(capsys, tmp_path):
    for extra in ([], ["--overwrite"]):
        rc, _, err = run_cli(capsys, "train", "--preset", "smoke", "--runs-root", tmp_path,
                             "--name", "o", "--epochs", "1", "--method", "ce", *extra)
        assert rc == 0, err
    lines = (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]


def test_demo_never_overwrites_and_writes_figures(capsys, tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "keep.txt").write_text("an earlier demo")
    out = demo.run_demo(root=tmp_path, preset="smoke", progress=False)
    text = capsys.readouterr().out
    assert out == tmp_path / "demo-2" and "writing this demo to" in text
    assert (tmp_path / "demo" / "keep.txt").read_text() == "an earlier demo"
    for name in ("accuracy.png", "detection.png", "flagged.png", "summary.md"):
        assert (out / name).is_file(), name
    assert "| CE |" in text and "| MOIT |" in text and "| MOIT+ |" in text
    ce, moit = runs.load_run(out / "ce"), runs.load_run(out / "moit")
    assert ce.config["method"] == "ce" and moit.has_finetune
    acc = moit.metrics["test_acc"].iloc[-1]
    assert f"{acc:.3f}" in text  # the printed table is the run's own number
    np.testing.assert_array_equal(ce.noise.noisy, moit.noise.noisy)  # same noisy labels
    # the summary's words follow this run's numbers
    summary = (out / "summary.md").read_text()
    fits_more = ce.metrics["train_acc_given"].iloc[-1] > 1 - ce.noise.actual_rate
    assert ("CE memorises the noise" in summary) == fits_more
    assert ("CE does not memorise" in summary) == (not fits_more)
    plus = moit.finetune().metrics["test_acc"].iloc[-1]
    assert f"MOIT+ ends at {plus:.3f}" in summary


def test_presets_command_lists_them(capsys):
    rc, out, _ = run_cli(capsys, "presets")
    assert rc == 0
    for name in presets.PRESETS:
        assert name in out


def test_label_issues_of_an_image_folder_from_the_command_line(capsys, tmp_path, digits):
    """The practitioner's path: a class-per-folder PNG tree with a few misfiled images, MOIT
    trained on it from the command line, then ``detect --csv`` lists the images worst first."""
    from PIL import Image

    rng = np.random.default_rng(0)
    classes = (0, 1, 7)
    folder, misfiled = tmp_path / "images", set()
    for pos, c in enumerate(classes):
        for n, i in enumerate(rng.choice(np.flatnonzero(digits.train_labels == c), 60, False)):
            dest = classes[(pos + 1) % 3] if n < 3 else c  # 3 per class in the wrong folder
            path = folder / f"digit{dest}" / f"img{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(digits.train_images[i, :, :, 0]).save(path)
            if dest != c:
                misfiled.add(str(path))
    rc, out, err = run_cli(capsys, "train", "--preset", "digits", "--dataset",
                           f"imagefolder:{folder}", "--image-channels", "1", "--image-size", "8",
                           "--noise", "none", "--rate", "0", "--k", "10", "--xbm-per-class", "30",
                           "--runs-root",
                           tmp_path / "runs", "--name", "folder", "--no-progress")
    assert rc == 0, err
    run_dir = tmp_path / "runs" / "folder"
    assert runs.load_run(run_dir).config["image_shape"][2] == 1  # read as grayscale
    csv = tmp_path / "issues.csv"
    rc, out, err = run_cli(capsys, "detect", run_dir, "--csv", csv)
    assert rc == 0, err
    assert f"wrote {csv}" in out
    table = __import__("pandas").read_csv(csv, index_col="sample")
    assert len(table) == 180 and set(table["given_name"]) == {"digit0", "digit1", "digit7"}
    assert table["label_quality"].is_monotonic_increasing  # worst first
    top = set(table["path"].head(2 * len(misfiled)))
    assert len(top & misfiled) >= len(misfiled) - 2, (top & misfiled, misfiled)
    # never overwritten
    rc, _, err = run_cli(capsys, "detect", run_dir, "--csv", csv)
    assert rc == 2 and "exists" in err
