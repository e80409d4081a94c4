"""The label-health report: its counts are the label issues', and its estimates follow the true
noise on Fashion-MNIST (checked against the labels the test flips itself)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from moit_explore.analysis import health, label_issues
from moit_explore.course import label_health
from moit_explore.maths import noise
from moit_explore.training.datasets import subset


@pytest.fixture(scope="module")
def fmnist_pca(fashion_mnist):
    data = subset(fashion_mnist, n_train=4000, n_test=0, seed=0)
    pixels = data.train_images.reshape(len(data.train_labels), -1) / 255.0
    x = PCA(64, random_state=0).fit_transform(pixels).astype(np.float32)
    return x, data.train_labels, fashion_mnist.classes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_asymmetric_noise_the_confused_pairs_are_the_flips(fmnist_pca, seed):
    """40 % asymmetric noise (the package's flip map): the five flips, read as given ->
    suggested = flipped-to -> true class, are among the six most confused pairs, and at least
    four of the top five (pullover <-> coat also overlap in pixel-PCA features)."""
    x, y, names = fmnist_pca
    nz = noise.inject_noise(y, "asymmetric", 0.4, 10, seed=seed, dataset="fashion-mnist")
    report = health.health_summary(nz.noisy, x, class_names=names, top_pairs=6)
    flips = {(dst, src) for src, dst in noise.FASHION_MNIST_FLIP_MAP.items()}
    top = list(zip(report.pairs["given"], report.pairs["suggested"], strict=True))
    assert flips <= set(top) and len(flips & set(top[:5])) >= 4
    # overall: the true share of wrong labels, overestimated by at most 8 points (classes that
    # overlap in pixel-PCA features look noisy)
    assert nz.actual_rate <= report.overall["est_wrong_share"] <= nz.actual_rate + 0.08
    # the three classes nobody flips are the three cleanest
    untouched = set(range(10)) - set(noise.FASHION_MNIST_FLIP_MAP)
    untouched -= set(noise.FASHION_MNIST_FLIP_MAP.values())
    assert set(report.classes.index[-3:]) == untouched


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_estimates_follow_per_class_noise(fmnist_pca, seed):
    """30 % of the labels flipped, the wrong label drawn with probability proportional to its
    class index (class 0 receives none, class 9 the most): the given classes' true shares of
    wrong labels run from 0 to about 45 %. The estimates follow them (measured, seeds 0-2:
    correlation 0.76-0.79, mean absolute error 0.095-0.097, at most 3.1 points short) and
    mostly overshoot (classes that overlap in pixel-PCA features add label issues)."""
    x, y, _ = fmnist_pca
    rng = np.random.default_rng(seed)
    given = y.copy()
    weight = np.arange(10.0)
    for i in rng.choice(len(y), int(0.3 * len(y)), replace=False):
        p = weight.copy()
        p[y[i]] = 0
        given[i] = rng.choice(10, p=p / p.sum())
    report = health.health_summary(given, x)
    est = report.classes.sort_index()["est_wrong_share"].to_numpy()
    true = np.array([(y[given == c] != c).mean() for c in range(10)])
    assert np.corrcoef(est, true)[0, 1] > 0.7
    assert np.abs(est - true).mean() < 0.12
    assert np.all(est >= true - 0.06)


def test_report_counts_are_the_label_issues_and_the_figure_draws(fmnist_pca):
    x, y, names = fmnist_pca
    nz = noise.inject_noise(y, "symmetric", 0.2, 10, seed=3)
    res = label_issues.examine_labels(nz.noisy, x)
    report = health.health_report(res, class_names=names, top_pairs=3)
    classes = report.classes.sort_index()
    assert classes["n"].tolist() == np.bincount(nz.noisy, minlength=10).tolist()
    assert classes["n_label_issues"].tolist() == np.bincount(
        nz.noisy[res.is_label_issue], minlength=10).tolist()
    assert report.overall["n_label_issues"] == int(res.is_label_issue.sum())
    assert np.all(np.diff(report.classes["est_wrong_share"].to_numpy()) <= 0)  # worst first
    assert len(report.pairs) == 3
    first = report.pairs.iloc[0]
    assert first["n_label_issues"] == int(np.sum(res.is_label_issue
                                                 & (nz.noisy == first["given"])
                                                 & (res.suggested_label == first["suggested"])))
    text = report.text()
    assert f"{report.overall['n_label_issues']:,} of 4,000 labels are label issues" in text
    assert f"{first['given_name']} -> {first['suggested_name']}" in text
    true = [(nz.clean[nz.noisy == c] != c).mean() for c in range(10)]
    fig = label_health.plot_health(report, true_wrong_share=true)
    fig.canvas.draw()
    bars, pairs = fig.axes
    assert len(bars.patches) == 10 and len(pairs.patches) == 3
    assert {t.get_text() for t in bars.get_legend().get_texts()} == {
        "estimated (label issues / labels)", "true share"}


def test_a_clean_separable_data_set_is_healthy_and_errors_name_the_fix():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.eye(4)[c] + 0.05 * rng.normal(size=(50, 4)) for c in range(3)])
    y = np.repeat(np.arange(3), 50)
    report = health.health_summary(y, x.astype(np.float32))
    assert report.overall["n_label_issues"] == 0 and report.pairs.empty
    assert "none" in report.text()
    with pytest.raises(TypeError, match=r"health_summary\(labels, features\)"):
        health.health_report(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="class_names has 2 names for 3 classes"):
        health.health_summary(y, x.astype(np.float32), class_names=["a", "b"])
