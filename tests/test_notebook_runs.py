"""The course's run cache: reused when the settings match, trained again when they do not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moit_explore.course import book, notebook_runs
from moit_explore.maths import noise
from moit_explore.training import presets, runs


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOIT_COURSE_RUNS", str(tmp_path))
    return tmp_path


def _stamp(run) -> int:
    return (run.path / "embeddings" / "final.npz").stat().st_mtime_ns


def _edit_config(path, edit) -> None:
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def test_a_cached_run_is_reused_only_while_its_settings_match(cache):
    run = notebook_runs.course_run("ce", preset="smoke", progress=False)
    assert run.path.parent == cache
    first = _stamp(run)
    assert _stamp(notebook_runs.course_run("ce", preset="smoke", progress=False)) == first

    # a run written by an older version of the package (a field it did not know yet)
    _edit_config(run.path, lambda c: c.pop("drop_last"))
    again = notebook_runs.course_run("ce", preset="smoke", progress=False)
    assert _stamp(again) != first and again.config["drop_last"] is False
    second = _stamp(again)

    # a run trained with other settings under the same name
    _edit_config(run.path, lambda c: c.update(epochs=c["epochs"] + 1))
    third = notebook_runs.course_run("ce", preset="smoke", progress=False)
    assert _stamp(third) != second and third.config["epochs"] == 3
    assert not list(cache.glob(".*tmp*"))  # no temporary folder left behind


def test_moit_plus_cache_follows_its_fine_tuning_settings(cache):
    plus = notebook_runs.course_run("moit+", preset="smoke", progress=False)
    first = _stamp(plus)
    assert _stamp(notebook_runs.course_run("moit+", preset="smoke", progress=False)) == first
    _edit_config(plus.path, lambda c: c["finetune"].update(lr=0.5))
    again = notebook_runs.course_run("moit+", preset="smoke", progress=False)
    assert _stamp(again) != first and again.config["finetune"]["lr"] == 0.001
    assert again.path.name == "finetune" and "train_mask" in again.final()
    assert not list(again.path.parent.glob(".*tmp*"))  # trained aside, renamed into place


def test_a_folder_run_records_the_folder_it_trained_on(cache, tmp_path, digits):
    """config.json names the image folder, so run.dataset() reloads those images (not the
    preset's data set), and the preset's k shrinks to half a class of the folder."""
    from PIL import Image

    from moit_explore.training import datasets

    folder = tmp_path / "images"
    for c in (0, 1):
        for i in np.flatnonzero(digits.train_labels == c)[:16]:
            path = folder / f"digit{c}" / f"img{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(digits.train_images[i, :, :, 0]).save(path)
    bundle = datasets.load_dataset(f"imagefolder:{folder}", channels=1, image_size=8)
    run = notebook_runs.folder_run(bundle, preset="smoke", progress=False, xbm_per_class=40,
                            batch_size=16)
    assert run.config["dataset"] == f"imagefolder:{folder}"
    assert run.config["image_size"] == 8 and run.config["image_channels"] == 1
    assert presets.preset("smoke").k == 10 and run.k == 8  # 16 images a class
    again = run.dataset()
    assert again.name == bundle.name and again.train_paths == bundle.train_paths
    np.testing.assert_array_equal(again.train_images, bundle.train_images)
    assert not run.true_labels_known
    # cached: the same folder and settings reuse the run
    assert _stamp(notebook_runs.folder_run(bundle, preset="smoke", progress=False,
                                    xbm_per_class=40, batch_size=16)) == _stamp(run)
    with pytest.raises(ValueError, match="image folder"):
        notebook_runs.folder_run(digits, preset="smoke")


def test_preset_data_is_the_runs_training_subset(cache):
    data = notebook_runs.preset_data("smoke")
    run = notebook_runs.course_run("ce", preset="smoke", progress=False)
    assert np.array_equal(data.train_labels, run.dataset().train_labels)
    assert np.array_equal(data.train_images, run.dataset().train_images)
    assert notebook_runs.projection_cache().parent == cache


def test_flip_maps_of_the_course_data_sets():
    assert notebook_runs.flip_map("fashion-mnist") == noise.FASHION_MNIST_FLIP_MAP
    digits_map = notebook_runs.flip_map("digits")
    assert len(digits_map) == 5 and all(s != d for s, d in digits_map.items())
    with pytest.raises(ValueError, match="no flip map"):
        notebook_runs.flip_map("cifar10")


def test_prepare_course_trains_every_run_the_notebooks_then_reuse(cache, monkeypatch):
    monkeypatch.setenv("MOIT_SEED", "2")
    # a share of the full list, in seconds (the smoke preset cannot train notebook 6's folder)
    monkeypatch.setattr(notebook_runs, "COURSE_RUNS", (("moit+", 0.4), ("supcon", 0.8),
                                                       ("ce", 0.4)))
    assert not book.course_ready("smoke")  # the book's full mode waits for these runs
    folders = notebook_runs.prepare_course("smoke", jobs=2, progress=False)
    assert book.course_ready("smoke")
    assert sorted(folders) == sorted(str(notebook_runs.course_run_dir(m, "symmetric", r, "smoke"))
                                     for m, r in notebook_runs.COURSE_RUNS)
    assert len(set(folders)) == len(notebook_runs.COURSE_RUNS)
    stamps = {f: _stamp(runs.load_run(f)) for f in folders}
    # every run a notebook then asks for is the cached one (not trained again), with the seed
    # of MOIT_SEED
    for method, rate in notebook_runs.COURSE_RUNS:
        if method != "folder":
            run = notebook_runs.course_run(method, "symmetric", rate, "smoke", progress=False)
            assert str(run.path) in stamps and _stamp(run) == stamps[str(run.path)]
    moit = notebook_runs.course_run("moit", preset="smoke", progress=False)
    assert moit.config["seed"] == 2 and moit.has_finetune
    monkeypatch.setenv("MOIT_SEED", "two")
    with pytest.raises(ValueError, match="MOIT_SEED='two' is not an integer"):
        notebook_runs.course_run("ce", preset="smoke", progress=False)
    with pytest.raises(ValueError, match="jobs"):
        notebook_runs.prepare_course("smoke", jobs=0)
