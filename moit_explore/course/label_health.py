"""The figure of a data set's label health (analysis.health): per class, the estimated share
of wrong labels; beside it, the most confused pairs of classes.

What to see: the classes whose bars are long hold most of the label issues, and the pairs say
where their labels probably belong; with true labels known (a synthetic-noise experiment), the
black ticks show the real share of wrong labels for comparison.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from moit_explore.analysis.health import HealthReport

__all__ = ["plot_health"]


def plot_health(report: HealthReport, *, true_wrong_share: Any = None, fig: Any = None):
    """Two panels: est_wrong_share per class (bars, worst on top) and the most confused pairs
    (bars of label issues). true_wrong_share: (C,) the real share of wrong labels per class,
    drawn as ticks when known. Returns the figure."""
    if not isinstance(report, HealthReport):
        raise TypeError(f"report must be a health.HealthReport, got {type(report).__name__}")
    classes = report.classes.iloc[::-1]  # worst on top
    fig = fig or plt.figure(figsize=(10, 0.32 * max(len(classes), 5) + 1.4),
                            layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    pos = np.arange(len(classes))
    ax.barh(pos, classes["est_wrong_share"], color="tab:red", alpha=0.7,
            label="estimated (label issues / labels)")
    if true_wrong_share is not None:
        true = np.asarray(true_wrong_share, dtype=float)[classes.index.to_numpy()]
        ax.scatter(true, pos, marker="|", s=220, color="black", label="true share")
    ticks = [f"{c} {n}" for c, n in zip(classes.index, classes["name"], strict=True)]
    ax.set_yticks(pos, ticks, fontsize="small")
    ax.set_xlabel("share of the class's given labels")
    ax.set_xlim(0, 1)
    ax.set_title(f"estimated wrong labels: {report.overall['est_wrong_share']:.1%} overall",
                 fontsize="medium")
    ax.legend(fontsize="small", loc="lower right")
    pairs = report.pairs.iloc[::-1]
    if pairs.empty:
        ax2.text(0.5, 0.5, "no label issues", ha="center", va="center")
        ax2.set_axis_off()
    else:
        p = np.arange(len(pairs))
        ax2.barh(p, pairs["n_label_issues"], color="tab:blue", alpha=0.7,
                 label="label issues (given → suggested)")
        ticks = [f"{g} → {s}" for g, s in zip(pairs["given_name"], pairs["suggested_name"],
                                                strict=True)]
        ax2.set_yticks(p, ticks, fontsize="small")
        ax2.set_xlabel("label issues")
        ax2.set_title("most confused pairs", fontsize="medium")
        ax2.legend(fontsize="small", loc="lower right")
    return fig
