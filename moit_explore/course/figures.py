"""Plots for the course and the demo (matplotlib; safe under the Agg backend).

Every function returns the matplotlib Figure it drew on. Functions drawing a single panel take
an optional ``ax`` (drawn into, its figure returned), grids an optional ``fig`` (its subplots
are made there); without them they make a new figure with pyplot, so a notebook shows it
inline (the widgets pass pyplot-free figures). Inputs are NumPy arrays, DataFrames from
:mod:`moit_explore.analysis`, or runs.Run objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from moit_explore.analysis import reports

__all__ = [
    "embedding_figure_legend",
    "embedding_legend_handles",
    "plot_confusion",
    "plot_detection_curves",
    "plot_discrepancy_histograms",
    "plot_embedding",
    "plot_embedding_grid",
    "plot_flagged_images",
    "plot_image_grid",
    "plot_knn_over_epochs",
    "plot_memorization",
    "plot_neighbors",
    "plot_per_class_detection",
    "plot_soft_label_histograms",
    "plot_soft_labels",
    "plot_training_curves",
    "plot_transition_matrix",
]

CLEAN_COLOR, NOISY_COLOR = "tab:blue", "tab:red"


def _fig_ax(ax: Any = None, figsize: tuple[float, float] = (5.0, 4.0)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _grid(n: int, ncols: int, panel: float = 1.6, extra_h: float = 0.0, fig: Any = None):
    """A grid of n panels: in ``fig`` (resized to fit) when given, else a new pyplot figure."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    size = (panel * ncols, (panel + extra_h) * nrows)
    if fig is None:
        fig = plt.figure(figsize=size, layout="constrained")
    else:
        fig.set_size_inches(*size)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _name(classes: Sequence[str] | None, c: int) -> str:
    return str(classes[c]) if classes is not None and 0 <= c < len(classes) else str(c)


def _as_images(images: Any) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 3:  # (N, H, W) grey
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be (N, H, W, C) with C in (1, 3, 4) (uint8 as datasets "
                         f"stores them), got shape {a.shape}")
    return a


def _show_image(ax: Any, img: np.ndarray) -> None:
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255 if img.dtype == np.uint8 else None)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- embeddings


def plot_embedding(
    projection: Any,
    labels: Any,
    *,
    is_noisy: Any = None,
    classes: Sequence[str] | None = None,
    ax: Any = None,
    title: str | None = None,
    point_size: float = 6.0,
    legend: bool | None = None,
):
    """Scatter of a 2-D projection coloured by ``labels`` (true or given: the caller picks).

    projection: an analysis.Projection (its ``indices`` select the labels of a subsample) or an
    (N, 2) array. is_noisy (N,): noisy samples are drawn again as black crosses on top.
    legend: one entry per class (default: when there are at most 20 classes).
    """
    coords = np.asarray(getattr(projection, "coords", projection), dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"projection must be (N, 2) coordinates, got shape {coords.shape}")
    idx = getattr(projection, "indices", None)
    y = np.asarray(labels)
    y = y[idx] if idx is not None and y.shape[0] != coords.shape[0] else y
    if y.shape[0] != coords.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for {coords.shape[0]} points")
    fig, ax = _fig_ax(ax)
    n_classes = int(y.max()) + 1 if y.size else 1
    cmap = matplotlib.colormaps["tab10" if n_classes <= 10 else "tab20"]
    ax.scatter(coords[:, 0], coords[:, 1], c=y % cmap.N, cmap=cmap, vmin=0, vmax=cmap.N - 1,
               s=point_size, linewidths=0)
    if is_noisy is not None:
        noisy = np.asarray(is_noisy, dtype=bool)
        noisy = noisy[idx] if idx is not None and noisy.shape[0] != coords.shape[0] else noisy
        if noisy.shape[0] != coords.shape[0]:
            raise ValueError(f"is_noisy has {noisy.shape[0]} entries for {coords.shape[0]} points")
        # translucent crosses, larger than the dots so the two read apart; at 40-80 % noise
        # opaque ones would hide the class colours
        ax.scatter(coords[noisy, 0], coords[noisy, 1], marker="x", c="black", alpha=0.5,
                   s=point_size * 3, linewidths=0.5, label="noisy label")
    if legend if legend is not None else n_classes <= 20:
        ax.legend(handles=embedding_legend_handles(y, classes, noisy=is_noisy is not None),
                  fontsize="x-small", markerscale=0.8, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    method = getattr(projection, "method", None)
    ax.set_title(title if title is not None else (method.upper() if method else ""))
    return fig


def embedding_legend_handles(labels: Any, classes: Sequence[str] | None = None, *,
                             noisy: bool = True) -> list[Line2D]:
    """Legend entries of :func:`plot_embedding`: a dot per class colour, a cross for a noisy
    label (the dot under it has its TRUE class's colour)."""
    y = np.asarray(labels)
    n_classes = int(y.max()) + 1 if y.size else 1
    cmap = matplotlib.colormaps["tab10" if n_classes <= 10 else "tab20"]
    handles = [Line2D([], [], marker="o", ls="", color=cmap(c % cmap.N), label=_name(classes, c))
               for c in np.unique(y)]
    if noisy:
        handles.append(Line2D([], [], marker="x", ls="", color="black",
                              label="noisy label"))
    return handles


def embedding_figure_legend(fig: Any, labels: Any, classes: Sequence[str] | None = None, *,
                            noisy: bool = True) -> None:
    """One legend for a figure of embedding panels drawn with ``legend=False``, below them."""
    handles = embedding_legend_handles(labels, classes, noisy=noisy)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
               fontsize="x-small", frameon=False)


def plot_embedding_grid(
    projections: Mapping[Any, Any],
    arrays: Mapping[Any, Mapping[str, np.ndarray]],
    *,
    color_by: str = "labels_true",
    ncols: int = 3,
    classes: Sequence[str] | None = None,
):
    """One :func:`plot_embedding` per key: ``projections[key]`` coloured by
    ``arrays[key][color_by]`` (e.g. a run's final() arrays), noisy samples marked."""
    keys = list(projections)
    fig, axes = _grid(len(keys), ncols, panel=3.2)
    for ax, key in zip(axes, keys, strict=False):
        a = arrays[key]
        noisy = None
        if "labels_true" in a and "labels_given" in a:
            noisy = np.asarray(a["labels_given"]) != np.asarray(a["labels_true"])
        label = key if isinstance(key, str) else " · ".join(str(k) for k in np.atleast_1d(key))
        plot_embedding(projections[key], a[color_by], is_noisy=noisy, classes=classes, ax=ax,
                       title=label, point_size=4, legend=False)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if keys:
        first = arrays[keys[0]]
        shown = np.concatenate([np.asarray(arrays[k][color_by]) for k in keys])
        embedding_figure_legend(fig, shown, classes,
                                noisy="labels_true" in first and "labels_given" in first)
    return fig


def plot_knn_over_epochs(
    tables: Mapping[str, pd.DataFrame],
    metric: str = "knn_acc_true",
    *,
    epoch: float | None = None,
    ax: Any = None,
    title: str | None = None,
):
    """One line per run of ``metric`` (a column of analysis.collapse_over_epochs, default the
    kNN accuracy against the true labels) against epoch; ``epoch`` draws a vertical marker
    (e.g. the epoch a slider shows). tables: run name -> collapse_over_epochs DataFrame."""
    fig, ax = _fig_ax(ax, figsize=(5, 3.5))
    drawn = 0
    for name, table in tables.items():
        if "epoch" in table and metric in table and table[metric].notna().any():
            ax.plot(table["epoch"], table[metric], marker="o", ms=3, label=str(name))
            drawn += 1
    if not drawn:
        raise ValueError(f"no table has an 'epoch' and a {metric!r} column (expected "
                         "analysis.collapse_over_epochs tables)")
    if epoch is not None:
        ax.axvline(epoch, color="0.3", ls=":", lw=1.2, label="shown")
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), ylim=(-0.02, 1.02),
           title=title if title is not None else f"{metric.replace('_', ' ')} over epochs")
    ax.legend(fontsize="small")
    return fig


# --------------------------------------------------------------------------- soft labels


def _clean_noisy_hist(ax: Any, values: np.ndarray, noisy: np.ndarray, bins: Any,
                      labels: tuple[str, str]) -> None:
    ax.hist(values[~noisy], bins=bins, color=CLEAN_COLOR, alpha=0.6, label=labels[0])
    ax.hist(values[noisy], bins=bins, color=NOISY_COLOR, alpha=0.6, label=labels[1])
    small, large = sorted([int(noisy.sum()), int((~noisy).sum())])
    if 0 < small * 20 < large:  # a linear axis would hide the small group's bars
        ax.set_yscale("log")
        ax.set_ylabel("samples (log scale)")
    else:
        ax.set_ylabel("samples")
    ax.legend(fontsize="small")


def plot_soft_label_histograms(
    p_given: Any, is_noisy: Any = None, *, bins: int = 20, ax: Any = None
):
    """Histograms of the soft-label probability of the given label, clean vs noisy samples.

    p_given (N,) and is_noisy (N,), or a label-issue table (analysis.label_issues_table with
    true_labels: its label_quality and is_noisy columns).
    """
    if isinstance(p_given, pd.DataFrame):
        table = p_given
        if is_noisy is None:
            if "is_noisy" not in table:
                raise ValueError("the table has no is_noisy column (true labels unknown); pass "
                                 "is_noisy, e.g. the table's is_label_issue")
            is_noisy = table["is_noisy"].to_numpy()
        p_given = table["label_quality"].to_numpy()
    if is_noisy is None:
        raise ValueError("pass is_noisy (N,) to split clean from noisy samples")
    p = np.asarray(p_given, dtype=np.float64)
    noisy = np.asarray(is_noisy, dtype=bool)
    fig, ax = _fig_ax(ax)
    _clean_noisy_hist(ax, p, noisy, np.linspace(0, 1, bins + 1), ("clean", "noisy"))
    ax.set_xlabel("soft-label probability of the given label")
    ax.set_title("do the neighbours back the label?")
    return fig


def plot_discrepancy_histograms(
    discrepancy: Any, is_noisy: Any, *, bins: int | Sequence[float] = 30, ax: Any = None,
    labels: tuple[str, str] = ("clean", "noisy"), title: str | None = None,
):
    """Histograms of the discrepancy d = -log p2(given) for the two groups of ``is_noisy``
    (the second group is True). bins: a number of bins from 0 to the largest d, or the edges."""
    d = np.asarray(discrepancy, dtype=np.float64)
    fig, ax = _fig_ax(ax)
    if np.ndim(bins) == 0:
        top = max(float(d.max()) if d.size else 1.0, 1e-3)
        bins = np.linspace(0, top, int(bins) + 1)
    _clean_noisy_hist(ax, d, np.asarray(is_noisy, dtype=bool), bins, labels)
    ax.set_xlabel("discrepancy  -log p(given label)")
    if title is not None:
        ax.set_title(title)
    return fig


def plot_soft_labels(
    soft_labels: Any,
    *,
    given: Any = None,
    true: Any = None,
    classes: Sequence[str] | None = None,
    ncols: int = 2,
):
    """Bar charts of soft labels (n, C), one panel per row; the given label's bar is outlined
    in red and the true label's bar hatched."""
    p = np.atleast_2d(np.asarray(soft_labels, dtype=np.float64))
    n, c = p.shape
    fig, axes = _grid(n, ncols, panel=3.4)
    names = [_name(classes, j) for j in range(c)]
    for r, ax in enumerate(axes[:n]):
        bars = ax.bar(np.arange(c), p[r], color="0.7")
        if given is not None:
            g = int(np.asarray(given)[r])
            bars[g].set_edgecolor(NOISY_COLOR)
            bars[g].set_linewidth(2)
            bars[g].set_label("given")
        if true is not None:
            t = int(np.asarray(true)[r])
            bars[t].set_hatch("//")
            bars[t].set_facecolor("tab:green")
        ax.set_xticks(np.arange(c), names, rotation=60, fontsize="x-small", ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction of neighbours")
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def plot_confusion(
    matrix: Any,
    classes: Sequence[str] | None = None,
    *,
    normalize: bool = False,
    ax: Any = None,
    title: str = "given label vs neighbours' label",
    xlabel: str = "corrected (neighbours) label",
    ylabel: str = "given label",
):
    """Heat map of a (C, C) count matrix (analysis.disagreement_confusion) with the counts
    written in the cells (up to 20 classes). normalize: rows scaled to sum to 1."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square (C, C), got shape {m.shape}")
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    c = m.shape[0]
    fig, ax = _fig_ax(ax, figsize=(0.62 * c + 2.5, 0.62 * c + 2))
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    names = [_name(classes, j) for j in range(c)]
    ax.set_xticks(np.arange(c), names, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(np.arange(c), names, fontsize="small")
    if c <= 20:
        hi = m.max() if m.size else 0
        for i in range(c):
            for j in range(c):
                text = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize="xx-small",
                        color="white" if m[i, j] > hi / 2 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def plot_transition_matrix(
    transition: Any,
    classes: Sequence[str] | None = None,
    *,
    title: str = "noise transition matrix",
    ax: Any = None,
):
    """Heat map of a (C, C) transition matrix T[i, j] = P(given j | true i), values in cells."""
    return _plot_transition(np.asarray(transition, dtype=np.float64), classes, title, ax)


def _plot_transition(t: np.ndarray, classes: Sequence[str] | None, title: str, ax: Any):
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"transition must be square (C, C), got shape {t.shape}")
    c = t.shape[0]
    fig, ax = _fig_ax(ax, figsize=(0.62 * c + 2.5, 0.62 * c + 2))
    im = ax.imshow(t, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8)
    names = [_name(classes, j) for j in range(c)]
    ax.set_xticks(np.arange(c), names, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(np.arange(c), names, fontsize="small")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if t[i, j] > 0:
                    ax.text(j, i, f"{t[i, j]:.2f}".lstrip("0") if t[i, j] < 1 else "1",
                            ha="center", va="center", fontsize=7.5 if c <= 10 else 6,
                            color="black" if t[i, j] > 0.5 else "white")
    ax.set_xlabel("given (noisy) label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- detection


def plot_per_class_detection(
    tables: Mapping[str, pd.DataFrame],
    metrics: Sequence[str] = ("precision", "recall", "n_selected"),
    *,
    classes: Sequence[str] | None = None,
    axes: Sequence[Any] | None = None,
):
    """Grouped bars per class, one axis per metric and one bar colour per table.

    tables: name (e.g. a balancing criterion) -> analysis.per_class_detection DataFrame.
    """
    names = list(tables)
    if not names:
        raise ValueError("no tables to plot; pass name -> analysis.per_class_detection(...)")
    cols = [m for m in metrics if all(m in t for t in tables.values())]
    if not cols:
        raise ValueError(f"none of {list(metrics)} are columns of every table")
    if axes is None:
        fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.4),
                                 layout="constrained", squeeze=False)
        axes = axes.ravel()
    fig = axes[0].figure
    width = 0.8 / len(names)
    for ax, col in zip(axes, cols, strict=False):
        for j, name in enumerate(names):
            table = tables[name]
            x = np.arange(len(table))
            ax.bar(x + (j - (len(names) - 1) / 2) * width, table[col].to_numpy(dtype=float),
                   width=width, label=str(name))
        ticks = [_name(classes, int(c)) for c in tables[names[0]].index]
        ax.set_xticks(np.arange(len(ticks)), ticks, rotation=60, ha="right", fontsize="x-small")
        ax.set_title(col.replace("_", " "))
        if col in ("precision", "recall", "f1", "selected_noise_rate"):
            ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize="small")
    return fig


def _per_run_lines(ax: Any, runs: Mapping[str, Any], column: str) -> int:
    drawn = 0
    for name, run in runs.items():
        m = reports.metrics_frame(run)
        if column in m and m[column].notna().any():
            rows = m[["epoch", column]].dropna()
            ax.plot(rows["epoch"], rows[column], marker="o", ms=3, label=str(name))
            drawn += 1
    return drawn


def plot_training_curves(
    runs: Mapping[str, Any], metric: str = "test_acc", *, ax: Any = None, title: str | None = None,
    reference: tuple[float, str] | None = None,
):
    """``metric`` (default test accuracy) over epochs, one line per run.

    runs: name -> runs.Run or its metrics DataFrame (see analysis.continued_metrics to put
    MOIT+ after MOIT). Runs without the column are skipped. reference: (value, label) of a
    dashed horizontal line, e.g. (1 - noise rate, "labels that are right").
    """
    fig, ax = _fig_ax(ax, figsize=(6, 4))
    if not _per_run_lines(ax, runs, metric):
        first = list(reports.metrics_frame(next(iter(runs.values()))).columns) if runs else []
        raise ValueError(f"no run has a {metric!r} column; available in the first: {first}")
    if reference is not None:
        ax.axhline(reference[0], color="0.4", ls="--", lw=1, label=reference[1])
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"{metric.replace('_', ' ')} per epoch")
    ax.legend(fontsize="small")
    return fig


def plot_detection_curves(runs: Mapping[str, Any]):
    """Detection precision, recall and F1 (noisy class) over epochs: three axes, one line per
    run (runs: name -> runs.Run or metrics DataFrame with det_* columns)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained", sharey=True)
    drawn = 0
    for ax, key in zip(axes, ("precision", "recall", "f1"), strict=True):
        drawn += _per_run_lines(ax, runs, f"det_{key}")
        ax.set(xlabel="epoch", title=f"detection {key}", ylim=(-0.02, 1.02))
    if not drawn:
        raise ValueError("no run has det_precision/det_recall/det_f1 metrics (detection runs "
                         "in MOIT training with known true labels)")
    axes[0].set_ylabel("noisy class")
    axes[-1].legend(fontsize="small")
    return fig


def plot_memorization(metrics: Any, noise_rate: float | None = None, *, ax: Any = None):
    """Training accuracy against the GIVEN and the TRUE labels (and test accuracy) per epoch.

    Memorising noise shows as train_acc_given rising towards 1 while train_acc_true falls; the
    dashed line at 1 - noise_rate is where a model fitting only the clean labels would sit.
    """
    m = reports.metrics_frame(metrics)
    fig, ax = _fig_ax(ax, figsize=(6, 4))
    styles = {"train_acc_given": ("acc. vs given labels", NOISY_COLOR),
              "train_acc_true": ("acc. vs true labels", "tab:green"),
              "test_acc": ("test accuracy", "0.3")}
    drawn = 0
    for col, (label, color) in styles.items():
        if col in m and m[col].notna().any():
            ax.plot(m["epoch"], m[col], marker="o", ms=3, color=color, label=label)
            drawn += 1
    if not drawn:
        raise ValueError("metrics have no train_acc_given / train_acc_true / test_acc columns")
    if noise_rate is not None:
        ax.axhline(1 - noise_rate, color="0.5", ls="--", lw=1, label="1 - noise rate")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02), title="memorisation")
    ax.legend(fontsize="small")
    return fig


# --------------------------------------------------------------------------- images


def plot_image_grid(
    images: Any,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    panel: float = 1.5,
    title_colors: Sequence[str] | None = None,
    suptitle: str | None = None,
    fig: Any = None,
):
    """Images uint8 (N, H, W, C) in a grid, each with an optional title (drawn into ``fig``
    when given)."""
    imgs = _as_images(images)
    n = imgs.shape[0]
    if n == 0:
        raise ValueError("no images to show")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    extra = 0.25 * max((str(t).count("\n") + 1 for t in titles), default=0) if titles else 0
    fig, axes = _grid(n, ncols, panel=panel, extra_h=extra, fig=fig)
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_visible(False)
            continue
        _show_image(ax, imgs[i])
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(str(titles[i]), fontsize="x-small", color=color)
    if suptitle:
        fig.suptitle(suptitle, fontsize="small")
    return fig


def plot_flagged_images(
    images: Any,
    given: Any,
    suggested: Any,
    classes: Sequence[str] | None = None,
    *,
    indices: Any = None,
    true: Any = None,
    ncols: int = 8,
    max_images: int = 32,
):
    """Flagged samples with "given X / suggested Y" titles (and "true Z" when known, green when
    the suggestion is right, red when not).

    indices: which samples to show, in order (e.g. analysis.find_label_issues ranked indices);
    default all. images/given/suggested/true are indexed by them. At most ``max_images``.
    """
    imgs = _as_images(images)
    idx = np.arange(imgs.shape[0]) if indices is None else np.asarray(indices, dtype=np.int64)
    idx = idx[:max_images]
    g, s = np.asarray(given), np.asarray(suggested)
    titles, colors = [], []
    for i in idx:
        text = f"given {_name(classes, int(g[i]))}\nsugg. {_name(classes, int(s[i]))}"
        color = "black"
        if true is not None:
            t = int(np.asarray(true)[i])
            text += f"\ntrue {_name(classes, t)}"
            color = "tab:green" if int(s[i]) == t else NOISY_COLOR
        titles.append(text)
        colors.append(color)
    return plot_image_grid(imgs[idx], titles, ncols=ncols, title_colors=colors)


def plot_neighbors(
    images: Any, index: int, neighbor_indices: Any, labels: Any, *,
    classes: Sequence[str] | None = None,
    true_labels: Any = None,
    ncols: int = 8,
):
    """A query image followed by its neighbours, each titled with its given label (and the
    true one when known; red titles mark neighbours whose given label is wrong)."""
    imgs = _as_images(images)
    order = [int(index), *np.asarray(neighbor_indices, dtype=np.int64).tolist()]
    y = np.asarray(labels)
    titles, colors = [], []
    for r, i in enumerate(order):
        text = ("query\n" if r == 0 else f"#{r}\n") + _name(classes, int(y[i]))
        color = "black"
        if true_labels is not None:
            t = int(np.asarray(true_labels)[i])
            if t != int(y[i]):
                text += f"\n(true {_name(classes, t)})"
                color = NOISY_COLOR
        titles.append(text)
        colors.append(color)
    fig = plot_image_grid(imgs[order], titles, ncols=ncols, title_colors=colors)
    fig.axes[0].patch.set_edgecolor("black")
    for side in fig.axes[0].spines.values():
        side.set_linewidth(3)
    return fig
