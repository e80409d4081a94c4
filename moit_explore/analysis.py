"""The analysis API in one namespace (``from moit_explore import analysis``), as the notebooks
use it. Each concept lives in its own module:

- :mod:`moit_explore.label_issues`: label issues in a data set, cleanlab style (the
  practitioner's entry point): find_label_issues, label_issues_table, detection_issues_table,
  run_issues_table, export_label_issues, disagreement_confusion, label_verdict;
- :mod:`moit_explore.collapse`: does the embedding memorise the noisy labels? knn_predict,
  knn_accuracy, class_distance_ratio, noisy_neighbourhood, collapse_metrics,
  collapse_over_epochs, knn_accuracy_table, run_collapse_metrics;
- :mod:`moit_explore.projection`: 2-D pictures of an embedding (embedding_projection);
- :mod:`moit_explore.reports`: detection quality and run summaries: detection_report,
  pr_curve, roc_curve, per_class_detection, detection_over_epochs, continued_metrics,
  summarize_runs, memorisation.

True labels are optional everywhere: on a user's own image folder nobody knows them, and the
functions then return only what the given labels support.
"""

from __future__ import annotations

from moit_explore.collapse import (
    class_distance_ratio,
    collapse_metrics,
    collapse_over_epochs,
    knn_accuracy,
    knn_accuracy_table,
    knn_predict,
    noisy_neighbourhood,
    run_collapse_metrics,
)
from moit_explore.label_issues import (
    detection_issues_table,
    disagreement_confusion,
    export_label_issues,
    find_label_issues,
    label_issues_table,
    label_verdict,
    run_issues_table,
)
from moit_explore.projection import Projection, embedding_projection
from moit_explore.reports import (
    Memorisation,
    continued_metrics,
    detection_over_epochs,
    detection_report,
    memorisation,
    per_class_detection,
    pr_curve,
    roc_curve,
    summarize_runs,
)

__all__ = [
    "Memorisation",
    "Projection",
    "class_distance_ratio",
    "collapse_metrics",
    "collapse_over_epochs",
    "continued_metrics",
    "detection_issues_table",
    "detection_over_epochs",
    "detection_report",
    "disagreement_confusion",
    "embedding_projection",
    "export_label_issues",
    "find_label_issues",
    "knn_accuracy",
    "knn_accuracy_table",
    "knn_predict",
    "label_issues_table",
    "label_verdict",
    "memorisation",
    "noisy_neighbourhood",
    "per_class_detection",
    "pr_curve",
    "roc_curve",
    "run_collapse_metrics",
    "run_issues_table",
    "summarize_runs",
]
