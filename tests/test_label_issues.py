"""is_label_issue is a verdict on each label, not the training selection (issue 12).

Data: well separated clusters (a correctly filed data set) with a few labels moved, where the
right answer is known by construction; the training selection stays its own column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moit_explore.analysis import label_issues
from moit_explore.maths import detection, neighbors


def clusters(sizes, dim=8, seed=0, spread=0.05):
    """One tight cluster per class, along its own axis (separable under cosine similarity)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, n in enumerate(sizes):
        centre = np.zeros(dim)
        centre[c] = 1.0
        xs.append(centre + spread * rng.normal(size=(n, dim)))
        ys.append(np.full(n, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def test_correctly_filed_imbalanced_folder_has_no_label_issues():
    """60 images of one class and 8 of another, all filed right: nothing is a label issue,
    though the class-balanced training selection leaves most of the large class out."""
    x, y = clusters([60, 8])
    table = label_issues.label_issues_table(y, x, k=20)
    assert not table["is_label_issue"].any()
    assert (table["suggested_label"] == table["given_label"]).all()
    # the training selection is its own column, and it does leave images out
    assert "selected_for_training" in table and not table["selected_for_training"].all()
    assert not label_issues.find_label_issues(y, x, k=20).any()


@pytest.mark.parametrize("num_classes", [None, 2, 10])
def test_separable_95_5_has_no_issues_whatever_num_classes(num_classes):
    x, y = clusters([95, 5])
    mask = label_issues.find_label_issues(y, x, num_classes=num_classes)
    assert mask.shape == (100,) and not mask.any()


def test_moved_labels_are_the_issues_and_absent_classes_change_nothing():
    x, y = clusters([80, 80, 40])
    given = y.copy()
    moved = np.array([3, 90, 170])
    given[moved] = [1, 2, 0]
    mask = label_issues.find_label_issues(given, x, k=15)
    assert np.flatnonzero(mask).tolist() == moved.tolist()
    wide = label_issues.find_label_issues(given, x, k=15, num_classes=12)
    assert np.array_equal(mask, wide)
    table = label_issues.label_issues_table(given, x, k=15, sort=False)
    assert table.loc[moved, "suggested_label"].tolist() == y[moved].tolist()
    ranked = label_issues.find_label_issues(given, x, k=15,
                                            return_indices_ranked_by="label_quality")
    assert sorted(ranked.tolist()) == moved.tolist()


def test_a_sample_whose_neighbours_all_share_its_label_is_never_an_issue():
    """Random labels and features, many k: where every neighbour carries the sample's label
    the verdict is 'no issue', whatever the class sizes (checked against a brute-force kNN)."""
    rng = np.random.default_rng(3)
    for trial in range(5):
        x, y = clusters([120, 30, 6], seed=trial, spread=0.4)
        y = y.copy()
        flip = rng.random(len(y)) < 0.15
        y[flip] = rng.integers(0, 3, flip.sum())
        for k in (3, 10, 40):
            nb = neighbors.knn_search(x, k)
            unanimous = (y[nb.indices] == y[:, None]).all(axis=1)
            mask = label_issues.find_label_issues(y, x, k=k)
            assert not (mask & unanimous).any()


def test_issue_arrays_of_a_detection_and_its_selection():
    x, y = clusters([50, 50, 10])
    given = y.copy()
    given[:4] = 1
    det = detection.detect_noise(x, given, 3, k=12)
    table = label_issues.detection_issues_table(det, given, true_labels=y, sort=False)
    assert np.array_equal(table["selected_for_training"].to_numpy(), det.clean)
    assert np.flatnonzero(table["is_label_issue"].to_numpy()).tolist() == [0, 1, 2, 3]
    # a run's final() arrays give the same table
    final = {"soft_labels": det.soft_labels, "corrected_labels": det.corrected_labels,
             "discrepancy": det.discrepancy, "clean": det.clean,
             "first_pass_soft_labels": det.first_pass_soft_labels}
    pd.testing.assert_frame_equal(label_issues.detection_issues_table(final, given, sort=False),
                                  label_issues.detection_issues_table(det, given, sort=False))


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "+x", "-x", "@x",
                                  "\tx", "\rx", "=1+1"])
def test_csv_cells_are_escaped_against_formula_injection(tmp_path, text):
    x, y = clusters([20, 20])
    names = [text, "plain"]
    paths = [f"/data/{names[c]}/{text}{i}.png" if i == 0 else f"{text}{i}.png"
             for i, c in enumerate(y)]
    table = label_issues.label_issues_table(y, x, k=5, class_names=names, paths=paths, sort=False)
    out = label_issues.export_label_issues(table, tmp_path / "issues.csv")
    back = pd.read_csv(out, index_col="sample", keep_default_na=False)
    assert back.loc[0, "given_name"] == "'" + text
    assert back.loc[1, "path"] == "'" + f"{text}1.png"
    assert back.loc[0, "path"] == paths[0]  # starts with '/': left as it is
    assert back.loc[30, "given_name"] == "plain"
    # the table itself is untouched: escaping is for the file only
    assert table.loc[0, "given_name"] == text
    # numbers stay numbers
    assert back["label_quality"].dtype.kind == "f"


def test_escape_cell_convention():
    esc = label_issues.escape_csv_cell
    assert [esc(v) for v in ("=a", "+a", "-a", "@a", "\ta", "\ra", "a=b", "", "-")] == \
        ["'=a", "'+a", "'-a", "'@a", "'\ta", "'\ra", "a=b", "", "'-"]
    assert esc(-1.5) == -1.5 and esc(3) == 3
