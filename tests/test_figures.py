"""course.figures: every figure draws on real data, with its legend and labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from moit_explore.analysis import label_issues, projection, reports  # noqa: E402
from moit_explore.course import figures
from moit_explore.maths import detection, noise


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def noisy_digits(digits):
    x = digits.train_images.reshape(len(digits.train_labels), -1).astype(np.float32)
    nz = noise.inject_noise(digits.train_labels, "symmetric", 0.3, 10, seed=0)
    det = detection.detect_noise(x, nz.noisy, 10, k=20, backend="torch")
    return x, nz, det


def _render(fig: Figure) -> None:
    fig.canvas.draw()  # a real Agg render: layout, text and images all resolved


def _metrics(n: int, offset: float = 0.0) -> pd.DataFrame:
    e = np.arange(1, n + 1)
    return pd.DataFrame({"epoch": e, "test_acc": 0.5 + offset + 0.01 * e,
                         "train_acc_given": 0.4 + 0.05 * e, "train_acc_true": 0.6 - 0.01 * e,
                         "det_precision": 0.6 + 0.01 * e, "det_recall": 0.7 + 0.0 * e,
                         "det_f1": 0.65 + 0.005 * e})


def test_plot_embedding_points_and_noisy_marks(noisy_digits):
    x, nz, _ = noisy_digits
    proj = projection.embedding_projection(x, method="pca")
    fig = figures.plot_embedding(proj, nz.clean, is_noisy=nz.is_noisy, classes=list("abcdefghij"))
    _render(fig)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    cols = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert len(cols) == 2
    assert len(cols[0].get_offsets()) == len(x)
    assert len(cols[1].get_offsets()) == nz.is_noisy.sum()
    assert np.allclose(cols[1].get_offsets(), proj.coords[nz.is_noisy])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "a" in legend and "noisy label" in legend
    # a subsampled projection picks its own rows of the labels
    sub = projection.embedding_projection(x, method="pca", subsample=100)
    fig2 = figures.plot_embedding(sub, nz.clean, is_noisy=nz.is_noisy)
    offsets = fig2.axes[0].collections[1].get_offsets()
    assert len(offsets) == nz.is_noisy[sub.indices].sum()
    with pytest.raises(ValueError, match="labels for"):
        figures.plot_embedding(proj.coords, nz.clean[:10])


def test_plot_embedding_into_given_ax_and_grid(noisy_digits):
    x, nz, _ = noisy_digits
    proj = projection.embedding_projection(x, method="pca")
    fig, axes = plt.subplots(1, 2)
    assert figures.plot_embedding(proj, nz.noisy, ax=axes[1]) is fig
    assert len(axes[1].collections) == 1 and len(axes[0].collections) == 0
    arrays = {("supcon", 0.3): {"labels_true": nz.clean, "labels_given": nz.noisy},
              ("icl", 0.3): {"labels_true": nz.clean, "labels_given": nz.noisy}}
    grid = figures.plot_embedding_grid({k: proj for k in arrays}, arrays, ncols=3)
    _render(grid)
    visible = [ax for ax in grid.axes if ax.get_visible()]
    assert len(visible) == 2 and visible[0].get_title() == "supcon · 0.3"


def test_plot_soft_label_histograms_counts(noisy_digits):
    x, nz, det = noisy_digits
    table = label_issues.label_issues_table(nz.noisy, x, true_labels=nz.clean)
    fig = figures.plot_soft_label_histograms(table, bins=10)
    _render(fig)
    patches = fig.axes[0].patches
    assert len(patches) == 20
    heights = np.array([p.get_height() for p in patches])
    assert heights[:10].sum() == (~nz.is_noisy).sum() and heights[10:].sum() == nz.is_noisy.sum()
    # noisy samples get little support for their given label: mass in the low bins
    assert heights[10:15].sum() > heights[15:].sum()


def test_plot_discrepancy_histograms(noisy_digits):
    _, nz, det = noisy_digits
    fig = figures.plot_discrepancy_histograms(det.discrepancy, nz.is_noisy, bins=12)
    assert sum(p.get_height() for p in fig.axes[0].patches) == len(nz.noisy)


def test_plot_confusion_and_transition_cells():
    m = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    fig = figures.plot_confusion(m, ["a", "b", "c"])
    _render(fig)
    ax = fig.axes[0]
    assert np.array_equal(ax.images[0].get_array(), m)
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in m.ravel())
    norm = figures.plot_confusion(m, normalize=True)
    assert np.allclose(norm.axes[0].images[0].get_array().sum(axis=1), 1)
    t = np.array([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.2, 0.0, 0.8]])
    fig = figures.plot_transition_matrix(t, ["a", "b", "c"], title="T")
    _render(fig)
    assert len(fig.axes[0].texts) == 5  # the non-zero cells
    assert fig.axes[0].get_title() == "T"
    with pytest.raises(ValueError, match="square"):
        figures.plot_transition_matrix(np.ones((2, 3)))


def test_training_and_detection_curves():
    runs = {"CE": _metrics(5), "MOIT": _metrics(7, 0.1), "mixup": _metrics(3)}
    fig = figures.plot_training_curves(runs)
    _render(fig)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3 and len(lines[1].get_xdata()) == 7
    assert [t.get_text() for t in fig.axes[0].get_legend().texts] == ["CE", "MOIT", "mixup"]
    runs["CE"] = runs["CE"].drop(columns=["det_precision", "det_recall", "det_f1"])
    fig = figures.plot_detection_curves(runs)
    _render(fig)
    assert len(fig.axes) == 3
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)  # CE has no detection
    assert list(fig.axes[2].get_lines()[0].get_ydata()) == list(runs["MOIT"]["det_f1"])
    with pytest.raises(ValueError, match="no run has"):
        figures.plot_detection_curves({"CE": runs["CE"]})


def test_plot_memorization():
    fig = figures.plot_memorization(_metrics(4), noise_rate=0.4)
    _render(fig)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4  # given, true, test, and the 1 - noise rate line
    assert lines[-1].get_ydata()[0] == pytest.approx(0.6)


def test_image_grid_and_flagged_images(fashion_mnist):
    imgs = fashion_mnist.train_images[:11]
    fig = figures.plot_image_grid(imgs, titles=[f"#{i}" for i in range(11)], ncols=4)
    _render(fig)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 12 and len(visible) == 11
    assert np.array_equal(visible[3].images[0].get_array(), imgs[3, ..., 0])
    assert visible[10].get_title() == "#10"
    given = fashion_mnist.train_labels[:11]
    suggested = (given + 1) % 10
    fig = figures.plot_flagged_images(imgs, given, suggested, fashion_mnist.classes,
                                  indices=[4, 2], true=given)
    _render(fig)
    assert len(fig.axes) == 2
    title = fig.axes[0].get_title()
    assert f"given {fashion_mnist.classes[given[4]]}" in title
    assert f"sugg. {fashion_mnist.classes[suggested[4]]}" in title
    with pytest.raises(ValueError, match="titles for"):
        figures.plot_image_grid(imgs, titles=["x"])


def test_plot_neighbors_and_soft_labels(digits):
    imgs, y = digits.train_images, digits.train_labels
    true = y.copy()
    given = y.copy()
    given[5] = (given[5] + 1) % 10
    fig = figures.plot_neighbors(imgs, 0, [5, 6, 7], given, classes=digits.classes,
                             true_labels=true)
    _render(fig)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4
    assert visible[0].get_title().startswith("query")
    assert "(true" in visible[1].get_title() and "(true" not in visible[2].get_title()
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    fig = figures.plot_soft_labels(p, given=[0, 1], true=[1, 1], classes=["a", "b", "c"])
    _render(fig)
    heights = [b.get_height() for b in fig.axes[0].patches]
    assert np.allclose(heights, p[0])
    assert fig.axes[0].patches[1].get_hatch() == "//"


def test_plot_knn_over_epochs_one_line_per_run_and_the_shown_epoch():
    a = pd.DataFrame({"epoch": [1, 3, 5], "knn_acc_true": [0.5, 0.7, 0.6]})
    b = pd.DataFrame({"epoch": [1, 3, 5], "knn_acc_true": [0.4, 0.8, 0.9]})
    fig = figures.plot_knn_over_epochs({"supcon": a, "icl": b}, epoch=3)
    _render(fig)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"supcon", "icl", "shown"}
    assert list(lines["icl"].get_ydata()) == [0.4, 0.8, 0.9]
    assert list(lines["shown"].get_xdata()) == [3, 3]
    with pytest.raises(ValueError, match="knn_acc_given"):
        figures.plot_knn_over_epochs({"a": a}, "knn_acc_given")


def test_plot_per_class_detection_bars(noisy_digits):
    _, nz, det = noisy_digits
    tables = {balance: reports.per_class_detection(clean, nz.is_noisy, nz.noisy, 10)
              for balance, clean in (("median", det.clean), ("none", det.agree))}
    fig = figures.plot_per_class_detection(tables, ("precision", "recall", "n_selected"))
    _render(fig)
    assert len(fig.axes) == 3
    bars = fig.axes[2].patches  # n_selected: 10 classes x 2 tables
    assert len(bars) == 20
    heights = sorted(b.get_height() for b in bars[:10])
    assert heights == sorted(tables["median"]["n_selected"].astype(float))
    with pytest.raises(ValueError, match="no tables"):
        figures.plot_per_class_detection({})
