"""The course's run cache: reused when the settings match, trained again when they do not."""

from __future__ import annotations

import json

import pytest

from moit_explore import course


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
    run = course.course_run("ce", preset="smoke", progress=False)
    assert run.path.parent == cache
    first = _stamp(run)
    assert _stamp(course.course_run("ce", preset="smoke", progress=False)) == first

    # a run written by an older version of the package (a field it did not know yet)
    _edit_config(run.path, lambda c: c.pop("drop_last"))
    again = course.course_run("ce", preset="smoke", progress=False)
    assert _stamp(again) != first and again.config["drop_last"] is False
    second = _stamp(again)

    # a run trained with other settings under the same name
    _edit_config(run.path, lambda c: c.update(epochs=c["epochs"] + 1))
    third = course.course_run("ce", preset="smoke", progress=False)
    assert _stamp(third) != second and third.config["epochs"] == 3
    assert not list(cache.glob(".*tmp*"))  # no temporary folder left behind


def test_moit_plus_cache_follows_its_fine_tuning_settings(cache):
    plus = course.course_run("moit+", preset="smoke", progress=False)
    first = _stamp(plus)
    assert _stamp(course.course_run("moit+", preset="smoke", progress=False)) == first
    _edit_config(plus.path, lambda c: c["finetune"].update(lr=0.5))
    again = course.course_run("moit+", preset="smoke", progress=False)
    assert _stamp(again) != first and again.config["finetune"]["lr"] == 0.001
    assert again.path.name == "finetune" and "train_mask" in again.final()
    assert not list(again.path.parent.glob(".*tmp*"))  # trained aside, renamed into place
