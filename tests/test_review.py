"""Review and fix: every decision on disk as it is made, resumed after a restart, one review
of a log at a time, and an exported label file that training reads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from moit_explore.analysis import label_issues, review
from moit_explore.maths import noise
from moit_explore.training import datasets, presets


@pytest.fixture(scope="module")
def digits_issues(digits):
    """The digits' pixels with 30 % symmetric noise: (LabelIssues, true labels)."""
    x = digits.train_images.reshape(len(digits.train_labels), -1).astype(np.float32)
    nz = noise.inject_noise(digits.train_labels, "symmetric", 0.3, 10, seed=0)
    return label_issues.examine_labels(nz.noisy, x), nz.clean


def test_decisions_are_saved_as_made_and_resumed(tmp_path, digits_issues):
    issues, _ = digits_issues
    log = tmp_path / "review.jsonl"
    with review.Review(issues, log) as r:
        first = r.pending()[:5].tolist()
        assert first == [i for i in issues.ranked() if issues.is_label_issue[i]][:5]
        assert r.accept(first[0]) == "accept"
        assert r.keep(first[1]) == "keep"
        other = next(c for c in range(10) if c not in (issues.labels[first[2]],
                                                       issues.suggested_label[first[2]]))
        assert r.decide(first[2], other) == "relabel"
        # on disk at once: header + 3 decisions, before anything is closed
        lines = log.read_text().splitlines()
        assert len(lines) == 4 and json.loads(lines[3])["label"] == other
    # a new Review on the same log (a restarted kernel) resumes
    with review.Review(issues, log) as r:
        assert r.n_decided == 3 and r.next() == first[3]
        table = r.decisions()
        assert table.loc[first[0], "label"] == issues.suggested_label[first[0]]
        assert table.loc[first[1], "decision"] == "keep"
        # deciding again: the latest decision counts
        r.accept(first[2])
        assert r.corrected_labels()[first[2]] == issues.suggested_label[first[2]]
    with review.Review(issues, log) as r:
        assert r.decisions().loc[first[2], "decision"] == "accept" and r.n_decided == 3


def test_a_second_review_of_the_same_log_is_refused(tmp_path, digits_issues):
    issues, _ = digits_issues
    log = tmp_path / "review.jsonl"
    r = review.Review(issues, log)
    with pytest.raises(review.ReviewInUseError, match="another review holds"):
        review.Review(issues, log)
    # another process too (a second kernel or terminal)
    code = ("import sys, numpy as np\nfrom moit_explore.analysis import review, label_issues\n"
            "try:\n    review._lock(review.Path(sys.argv[1]))\nexcept review.ReviewInUseError:\n"
            "    sys.exit(3)\n")
    lock = str(log) + ".lock"
    assert subprocess.run([sys.executable, "-c", code, lock]).returncode == 3
    r.accept(r.next())
    r.close()
    with pytest.raises(RuntimeError, match="closed"):
        r.accept(0)
    assert subprocess.run([sys.executable, "-c", code, lock]).returncode == 0
    with review.Review(issues, log) as again:
        assert again.n_decided == 1


def test_a_torn_last_line_is_dropped_and_other_damage_named(tmp_path, digits_issues):
    issues, _ = digits_issues
    log = tmp_path / "review.jsonl"
    with review.Review(issues, log) as r:
        i, j = r.pending()[:2].tolist()
        r.accept(i)
    with open(log, "ab") as f:  # a write cut short by a crash
        f.write(b'{"sample": 12, "giv')
    with review.Review(issues, log) as r:
        assert r.n_decided == 1
        r.accept(j)
    with review.Review(issues, log) as r:
        assert sorted(r.decisions().index) == sorted([i, j])
    text = log.read_text().splitlines()
    log.write_text("\n".join(text[:1] + ["not json"] + text[1:]) + "\n")
    with pytest.raises(ValueError, match="line 2 is not a JSON decision"):
        review.Review(issues, log)


def test_a_log_of_other_labels_is_refused(tmp_path, digits_issues):
    issues, _ = digits_issues
    log = tmp_path / "review.jsonl"
    review.Review(issues, log).close()
    y = issues.labels.copy()
    y[0] = (y[0] + 1) % 10
    rng = np.random.default_rng(0)
    other = label_issues.examine_labels(y, rng.normal(size=(len(y), 8)).astype(np.float32))
    with pytest.raises(ValueError, match="belongs to another data set"):
        review.Review(other, log)
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match="not a review log"):
        review.Review(issues, tmp_path / "x.jsonl")


def test_accepting_suggestions_removes_wrong_labels(tmp_path, digits_issues):
    """A reviewer who accepts every suggestion on the digits fixes far more labels than it
    breaks: the corrected labels hold less than half the noise."""
    issues, true = digits_issues
    with review.Review(issues, tmp_path / "r.jsonl") as r:
        assert len(r.accept_suggested(10**6)) == r.n_issues and r.next() is None
        fixed = r.corrected_labels()
    before, after = (issues.labels != true).mean(), (fixed != true).mean()
    assert before == pytest.approx(0.3, abs=0.01) and after < before / 2


def test_export_is_a_label_file_that_training_reads(tmp_path, digits_issues, digits):
    issues, _ = digits_issues
    with review.Review(issues, tmp_path / "r.jsonl") as r:
        r.accept_suggested(20)
        fixed = r.corrected_labels()
        csv_path = r.export_labels(tmp_path / "labels.csv")
        npy_path = r.export_labels(tmp_path / "labels.npy")
        with pytest.raises(FileExistsError, match="never replaces"):
            r.export_labels(csv_path)
        with pytest.raises(ValueError, match=".csv or .npy"):
            r.export_labels(tmp_path / "labels.txt")
    assert np.array_equal(noise.read_label_file(csv_path), fixed)
    assert np.array_equal(noise.read_label_file(npy_path), fixed)
    assert pd.read_csv(csv_path).columns.tolist() == ["label"]
    # the training's own loader reads it as the given labels
    cfg = presets.preset("digits", noise_file=str(csv_path)).validate()
    _, nz = datasets.load_data(cfg, download=False)
    assert nz.kind == "file" and np.array_equal(nz.noisy, fixed)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporaries left


def test_export_of_a_subset_fills_the_full_training_set(tmp_path, digits):
    """A run trained on a subset: the file holds the full set, the reviewed images at their
    positions (the run's stratified subset), every other image's label as shipped."""
    full = digits.train_labels
    marked = datasets.subset(
        datasets.DatasetBundle(**{**digits.__dict__, "given_train_labels": np.arange(len(full))}),
        300, 0, seed=0)
    positions = marked.given_train_labels
    x = marked.train_images.reshape(300, -1).astype(np.float32)
    nz = noise.inject_noise(marked.train_labels, "symmetric", 0.3, 10, seed=1)
    issues = label_issues.examine_labels(nz.noisy, x)
    with review.Review(issues, tmp_path / "r.jsonl") as r:
        r.accept_suggested(30)
        out = r.export_labels(tmp_path / "full.npy", full_labels=full, positions=positions)
        with pytest.raises(ValueError, match="together"):
            r.export_labels(tmp_path / "x.npy", full_labels=full)
        with pytest.raises(ValueError, match="300 indices"):
            r.export_labels(tmp_path / "x.npy", full_labels=full, positions=positions[:5])
    labels = noise.read_label_file(out)
    assert labels.shape == full.shape
    assert np.array_equal(labels[positions], r.corrected_labels())
    rest = np.setdiff1d(np.arange(len(full)), positions)
    assert np.array_equal(labels[rest], full[rest])
    # training with --n-train 300 and this file trains on exactly the corrected labels
    cfg = presets.preset("digits", n_train=300, noise_file=str(out)).validate()
    _, nz2 = datasets.load_data(cfg, download=False)
    assert np.array_equal(nz2.noisy, r.corrected_labels())
