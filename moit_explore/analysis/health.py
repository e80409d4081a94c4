"""A data set's label health, without true labels: how many labels look wrong, in which
classes, and between which pairs of classes.

Every figure is a count of label issues (:mod:`label_issues`): the estimated share of wrong
labels of a class is the share of its labels that are issues, and a confused pair (given g,
suggested s) counts the issues labelled g whose suggested label is s. So the report, the
label-issue table and the review agree by construction. The estimate sees only the embedding:
classes that overlap in it (a shirt among T-shirts) look noisier than they are, so on a weak
embedding the shares run high (benchmarks/RESULTS.md, "Label issues against cleanlab").

- :func:`health_report` ``(issues, *, class_names=None, top_pairs=5)``: from a
  :class:`~moit_explore.analysis.label_issues.LabelIssues`;
- :func:`health_summary` ``(labels, features, *, ...)``: the same from labels and features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from moit_explore.analysis import label_issues

__all__ = ["HealthReport", "health_report", "health_summary"]


@dataclass(frozen=True)
class HealthReport:
    """classes: one row per class (index ``class``): name, n (labels given), label_quality
    (mean), n_label_issues, est_wrong_share (n_label_issues / n), worst first by
    est_wrong_share. pairs: the most confused pairs, one row each: given, suggested, given_name,
    suggested_name, n_label_issues, share_of_given. overall: n, n_label_issues, est_wrong_share,
    label_quality (mean), k."""

    classes: pd.DataFrame
    pairs: pd.DataFrame
    overall: dict[str, Any]

    def text(self) -> str:
        """The report as plain text (what ``detect --report`` prints)."""
        o = self.overall
        lines = [f"label health: {o['n_label_issues']:,} of {o['n']:,} labels are label issues "
                 f"(estimated share of wrong labels {o['est_wrong_share']:.1%}; mean label "
                 f"quality {o['label_quality']:.3f}; k = {o['k']})",
                 "", "per class (given label), worst first:",
                 f"  {'class':<22s} {'n':>7s} {'issues':>7s} {'est. wrong':>10s} "
                 f"{'quality':>8s}"]
        for c, row in self.classes.iterrows():
            lines.append(f"  {str(c) + ' ' + str(row['name']):<22.22s} {row['n']:>7,d} "
                         f"{row['n_label_issues']:>7,d} {row['est_wrong_share']:>10.1%} "
                         f"{row['label_quality']:>8.3f}")
        lines += ["", "most confused pairs (given -> suggested, label issues):"]
        if self.pairs.empty:
            lines.append("  none")
        for _, row in self.pairs.iterrows():
            lines.append(f"  {row['given_name']} -> {row['suggested_name']}: "
                         f"{row['n_label_issues']:,} ({row['share_of_given']:.1%} of "
                         f"{row['given_name']})")
        return "\n".join(lines)


def health_report(issues: label_issues.LabelIssues, *, class_names: list[str] | None = None,
                  top_pairs: int = 5) -> HealthReport:
    """The health report of :func:`label_issues.examine_labels`'s result (see the module)."""
    if not isinstance(issues, label_issues.LabelIssues):
        raise TypeError(f"issues must be a label_issues.LabelIssues (examine_labels(labels, "
                        f"features)), got {type(issues).__name__}; from labels and features "
                        "use health_summary(labels, features)")
    c = issues.num_classes
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    if len(names) < c:
        raise ValueError(f"class_names has {len(names)} names for {c} classes")
    y, flagged = issues.labels, issues.is_label_issue
    n = np.bincount(y, minlength=c)
    n_issues = np.bincount(y[flagged], minlength=c)
    quality = np.bincount(y, weights=issues.label_quality, minlength=c)
    present = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        classes = pd.DataFrame({
            "name": names[:c], "n": n, "label_quality": np.where(present, quality / n, np.nan),
            "n_label_issues": n_issues, "est_wrong_share": np.where(present, n_issues / n,
                                                                    np.nan)})
    classes.index.name = "class"
    classes = classes[present].sort_values(["est_wrong_share", "n"], ascending=[False, False],
                                           kind="stable")
    pair_counts = np.bincount(y[flagged] * c + issues.suggested_label[flagged],
                              minlength=c * c).reshape(c, c)
    order = np.argsort(-pair_counts, axis=None, kind="stable")[:max(0, int(top_pairs))]
    rows = [(int(i // c), int(i % c), int(pair_counts.flat[i])) for i in order
            if pair_counts.flat[i] > 0]
    pairs = pd.DataFrame({
        "given": [g for g, _, _ in rows], "suggested": [s for _, s, _ in rows],
        "given_name": [names[g] for g, _, _ in rows],
        "suggested_name": [names[s] for _, s, _ in rows],
        "n_label_issues": [m for _, _, m in rows],
        "share_of_given": [m / n[g] for g, _, m in rows],
    })
    total = int(y.shape[0])
    overall = {"n": total, "n_label_issues": int(flagged.sum()),
               "est_wrong_share": float(flagged.mean()) if total else float("nan"),
               "label_quality": float(issues.label_quality.mean()), "k": issues.k}
    return HealthReport(classes=classes, pairs=pairs, overall=overall)


def health_summary(labels: Any, features: Any, *, class_names: list[str] | None = None,
                   top_pairs: int = 5, num_classes: int | None = None, k: int | None = None,
                   backend: str = "auto") -> HealthReport:
    """:func:`health_report` of ``examine_labels(labels, features, ...)``: labels (N,),
    features (N, D) or their Neighbors."""
    res = label_issues.examine_labels(labels, features, num_classes=num_classes, k=k,
                                      backend=backend)
    return health_report(res, class_names=class_names, top_pairs=top_pairs)
