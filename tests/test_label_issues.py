"""Label issues: a verdict on each label from features and their neighbours (issues 12, 19).

Data: well separated clusters (a correctly filed data set) with a few labels moved, where the
right answer is known by construction; the scikit-learn digits; Fashion-MNIST against
cleanlab (the pinned dev dependency) on the same features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moit_explore.analysis import confident, label_issues
from moit_explore.maths import detection, neighbors, noise
from moit_explore.training import rundir, runs


@pytest.fixture(scope="module")
def digits_noisy(digits):
    """The digits' pixels with 30 % symmetric noise: (features, given, true)."""
    x = digits.train_images.reshape(len(digits.train_labels), -1).astype(np.float32)
    nz = noise.inject_noise(digits.train_labels, "symmetric", 0.3, 10, seed=0)
    return x, nz.noisy, nz.clean


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
    det = detection.detect_noise(x, y, 2, k=20)
    table = label_issues.label_issues_table(y, x, k=20, selected_for_training=det.clean)
    assert not table["is_label_issue"].any()
    assert (table["suggested_label"] == table["given_label"]).all()
    # the training selection is its own column, and it does leave images out
    assert not table["selected_for_training"].all()
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


# --------------------------------------------------------------------------- the maths


def test_confident_learning_hand_case():
    """Two classes, votes written by hand: thresholds, the calibrated joint and the pruning."""
    labels = np.array([0, 0, 0, 0, 1, 1])
    probs = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.0, 1.0]])
    t = confident.thresholds(probs, labels)
    assert t == pytest.approx([(1.0 + 0.9 + 0.8 + 0.1) / 4, 0.9])
    # sample 3 (labelled 0) is confidently 1 (0.9 >= 0.9); sample 4 reaches neither threshold
    counts = confident.confident_counts(probs, labels)
    assert counts.tolist() == [[3, 1], [0, 1]]
    joint = confident.calibrated_joint(probs, labels)
    assert joint.sum() == pytest.approx(1.0)
    assert joint * 6 == pytest.approx(np.array([[3, 1], [0, 2]]))  # rows scaled to 4 and 2
    assert np.flatnonzero(confident.prune_by_noise_rate(probs, labels, joint)).tolist() == [3]
    # a class nobody is labelled with can never be confidently anyone's
    assert confident.thresholds(np.c_[probs, np.zeros(6)], labels)[2] == np.inf


def test_votes_are_rank_weighted_and_suspects_count_less():
    idx = np.array([[1, 2, 3], [0, 2, 3]])
    labels = np.array([0, 0, 1, 1])
    w = confident.rank_weights(3)
    assert w.sum() == pytest.approx(1.0) and np.all(np.diff(w) < 0)  # nearer counts more
    v = confident.neighbour_votes(idx, labels, 2)
    assert v[0] == pytest.approx([w[0], w[1] + w[2]])
    low = confident.neighbour_votes(idx, labels, 2, vote_weight=np.array([1, 1, 0.1, 0.1]))
    assert low[0, 0] > v[0, 0] and low.sum(axis=1) == pytest.approx([1, 1])


# --------------------------------------------------------------------------- the API


def test_one_search_serves_every_call_and_the_table_holds_the_mask(digits_noisy):
    x, given, _ = digits_noisy
    nb = neighbors.knn_search(x, 40, backend="torch")
    res = label_issues.examine_labels(given, nb, k=30)
    assert res.k == 30
    assert np.array_equal(res.is_label_issue, label_issues.find_label_issues(given, x, k=30))
    by_search = label_issues.label_issues_table(given, nb, k=30)
    pd.testing.assert_frame_equal(by_search, label_issues.label_issues_table(given, x, k=30))
    assert np.array_equal(by_search.sort_index()["is_label_issue"].to_numpy(),
                          res.is_label_issue)
    # the suggested label differs from the given one exactly on the issues
    assert np.array_equal(res.suggested_label != given, res.is_label_issue)
    assert np.allclose(res.pred_probs.sum(axis=1), 1.0)
    assert np.allclose(res.label_quality, res.pred_probs[np.arange(len(given)), given])
    assert res.joint.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k_max=40"):
        label_issues.examine_labels(given, nb, k=41)


def test_rankings_are_worst_first_with_ties_by_index(digits_noisy):
    x, given, _ = digits_noisy
    res = label_issues.examine_labels(given, x, k=20)
    for by, score in (("label_quality", res.label_quality), ("margin", res.margin())):
        ranked = label_issues.find_label_issues(given, x, k=20, return_indices_ranked_by=by)
        assert sorted(ranked.tolist()) == np.flatnonzero(res.is_label_issue).tolist()
        s = score[ranked]
        assert np.all(np.diff(s) >= 0)
        for value in np.unique(s):
            assert np.all(np.diff(ranked[s == value]) > 0)
    with pytest.raises(ValueError, match="return_indices_ranked_by"):
        label_issues.find_label_issues(given, x, return_indices_ranked_by="discrepancy")


def test_pred_probs_or_one_hot_labels_passed_as_features_are_refused(digits_noisy):
    x, given, _ = digits_noisy
    logits = np.random.default_rng(0).normal(size=(len(given), 10))
    pred_probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    with pytest.raises(ValueError, match=r"predicted probabilities.*cleanlab\.filter"):
        label_issues.find_label_issues(given, pred_probs)
    with pytest.raises(ValueError, match="predicted probabilities"):
        label_issues.label_issues_table(given, np.eye(10)[given])


def test_swapped_and_wrong_typed_arguments_name_the_fix(digits_noisy, tmp_path):
    """One contract, labels first (as cleanlab): anything else fails naming the fix."""
    x, given, _ = digits_noisy
    with pytest.raises(ValueError, match=r"labels must come first.*swapped"):
        label_issues.find_label_issues(x, given, k=20)
    det = detection.detect_noise(x, given, 10, k=20)
    with pytest.raises(TypeError, match=r"run_issues_table\(run\)"):
        label_issues.find_label_issues(given, det)
    with pytest.raises(TypeError, match=r"run_issues_table\(run_dir\)"):
        label_issues.label_issues_table(given, tmp_path)
    with pytest.raises(TypeError, match="positional"):  # num_classes etc. are keyword-only
        label_issues.find_label_issues(given, x, 10)
    with pytest.raises(ValueError, match="in the same order"):
        label_issues.find_label_issues(given[:-1], x)


def test_table_without_true_labels_round_trips_csv(tmp_path, digits):
    x = digits.train_images.reshape(len(digits.train_labels), -1).astype(np.float32)
    y = digits.train_labels  # the digits as shipped: no known noise, like a user's own folder
    names = [f"digit {i}" for i in range(10)]
    paths = [f"/data/{y[i]}/img_{i:04d}.png" for i in range(len(y))]
    t = label_issues.label_issues_table(y, x, class_names=names, paths=paths)
    assert list(t.columns) == ["is_label_issue", "label_quality", "given_label",
                               "suggested_label", "given_name", "suggested_name", "path"]
    assert t["label_quality"].between(0, 1).all()
    assert np.all(np.diff(t["label_quality"].to_numpy()) >= 0)  # worst first
    assert t.index.name == "sample" and sorted(t.index) == list(range(len(y)))
    i = int(t.index[0])
    assert t.loc[i, "path"] == paths[i] and t.loc[i, "given_name"] == names[y[i]]
    # the digits are almost all filed right: few issues
    assert t["is_label_issue"].mean() < 0.05
    out = label_issues.export_label_issues(t, tmp_path / "issues.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out, index_col="sample"), t)
    with pytest.raises(FileNotFoundError, match="create it first"):
        label_issues.export_label_issues(t, tmp_path / "missing" / "x.csv")


def test_a_runs_table_has_its_selection_truth_and_names(tmp_path, digits_noisy):
    x, given, true = digits_noisy
    path = rundir.create_run_dir(tmp_path, "r")
    runs.write_json_atomic(path / runs.CONFIG_FILE,
                           {"method": "moit", "true_labels_known": True, "num_classes": 10,
                            "classes": [f"c{i}" for i in range(10)]})
    noise.save_noise(path / runs.NOISE_FILE, noise.NoisyLabels(
        noisy=given, clean=true, is_noisy=given != true, transition=np.eye(10),
        kind="symmetric", rate=0.3, seed=0))
    det = detection.detect_noise(x, given, 10, k=15, backend="torch")
    runs.save_final(path, x, det, given, true)
    t = label_issues.run_issues_table(path, sort=False)
    assert np.array_equal(t["selected_for_training"].to_numpy(), det.clean)
    assert np.array_equal(t["is_label_issue"].to_numpy(),
                          label_issues.find_label_issues(given, x, num_classes=10))
    assert np.array_equal(t["is_noisy"].to_numpy(), given != true)
    assert t.loc[0, "given_name"] == f"c{given[0]}"
    # the verdict finds the moved digits: most issues are noisy, most noisy are issues
    assert t.loc[t["is_label_issue"], "is_noisy"].mean() > 0.8
    assert t.loc[t["is_noisy"], "is_label_issue"].mean() > 0.8


def test_confusion_of_two_labellings():
    m = label_issues.disagreement_confusion([0, 0, 1, 2], [0, 1, 1, 0], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


# --------------------------------------------------------------------------- against cleanlab


@pytest.fixture(scope="module")
def fmnist_pca(fashion_mnist):
    from sklearn.decomposition import PCA

    from moit_explore.training.datasets import subset

    data = subset(fashion_mnist, n_train=4000, n_test=0, seed=0)
    pixels = data.train_images.reshape(len(data.train_labels), -1) / 255.0
    return PCA(64, random_state=0).fit_transform(pixels).astype(np.float32), data.train_labels


@pytest.mark.parametrize(("kind", "seed"), [("symmetric", 1), ("asymmetric", 2)])
def test_ahead_of_cleanlab_on_the_same_features(fmnist_pca, kind, seed):
    """Fashion-MNIST, PCA-64 of 4,000 images, 40 % noise: F1 and AUROC of the package above
    cleanlab's documented pipeline (out-of-fold logistic-regression pred_probs) on the same
    features and labels (measured margins at this size, seeds 1-3: F1 +0.013 ... +0.07, AUROC
    +0.009 ... +0.066; benchmarks/RESULTS.md has the 10,000-image table)."""
    import warnings

    import cleanlab  # the pinned dev dependency (pyproject's dev extra)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = fmnist_pca
    nz = noise.inject_noise(y, kind, 0.4, 10, seed=seed, dataset="fashion-mnist")
    res = label_issues.examine_labels(nz.noisy, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes
        pred_probs = cross_val_predict(LogisticRegression(max_iter=1000), x, nz.noisy,
                                       cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                       method="predict_proba")
    flagged = cleanlab.filter.find_label_issues(nz.noisy, pred_probs)
    quality = cleanlab.rank.get_label_quality_scores(nz.noisy, pred_probs)
    assert f1_score(nz.is_noisy, res.is_label_issue) > f1_score(nz.is_noisy, flagged)
    assert roc_auc_score(nz.is_noisy, -res.label_quality) > roc_auc_score(nz.is_noisy, -quality)


def test_k_shrinks_to_half_the_median_class():
    """A k sized for a large data set votes within a class on a small one: half the median class
    size (the median, so one tiny class does not shrink it), never below 1."""
    from moit_explore.maths import validation

    y = np.repeat([0, 1, 2], [40, 10, 30])
    assert validation.k_within_classes(250, y) == 15
    assert validation.k_within_classes(5, y) == 5
    assert validation.k_within_classes(250, [0, 1]) == 1
    assert validation.default_k(y) == 15 and label_issues.default_k(y) == 5
    with pytest.raises(ValueError, match="at least 2"):
        validation.k_within_classes(3, [0])
