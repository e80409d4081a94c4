"""Label issues in a data set, cleanlab ``find_label_issues`` style: the practitioner's entry
point.

``is_label_issue`` is a verdict on each label by itself: the given label is a label issue when
another class is better supported by the sample's ``k`` nearest neighbours, each class's vote
taken relative to that class's share of the given labels (see :func:`label_verdict`). It is
NOT the training selection: the detection's class-balanced clean selection (spec §3, balanced to
the median class) is a device of MOIT's training and leaves correct labels out of large classes;
it is reported as its own column, ``selected_for_training``.

- :func:`find_label_issues` ``(labels, features, *, ...)``: a bool mask, or the issues'
  indices ranked by severity;
- :func:`label_issues_table` ``(labels, features, *, ...)``: one row per sample, worst first;
- :func:`detection_issues_table` ``(detection, labels, *, ...)``: the same table for a
  detection already computed (a detection.Detection, or a run's final() arrays);
- :func:`run_issues_table` ``(run, *, ...)``: the table of a training run's final detection;
- :func:`export_label_issues`: the table to CSV;
- :func:`disagreement_confusion`: given label vs the neighbours' label, per class.

Each function has one input contract: arrays that could be swapped are positional in one
order (labels first, as cleanlab), everything else keyword-only; a wrong type gets an error
that names the function to use. True labels are optional: on a user's own image folder nobody
knows them, and the table then holds only what the given labels support.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moit_explore.maths import detection
from moit_explore.maths.validation import (
    check_choice,
    check_features,
    check_labels,
    check_mask,
    check_num_classes,
    default_k,
)
from moit_explore.training import runs

__all__ = [
    "RANKINGS",
    "detection_issues_table",
    "disagreement_confusion",
    "export_label_issues",
    "find_label_issues",
    "escape_csv_cell",
    "label_issues_table",
    "label_verdict",
    "run_issues_table",
]

RANKINGS = ("label_quality", "discrepancy")
_DETECTION_KEYS = ("soft_labels", "corrected_labels", "discrepancy", "clean",
                   "first_pass_soft_labels")
# a vote counts as higher than another only beyond this relative margin (float rounding)
_REL_TOL = 1e-9
# cells a spreadsheet would read as a formula (OWASP's CSV-injection list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------- inputs


def _not_array(value: Any, name: str) -> None:
    """A clear error for the objects that other functions of this module take."""
    fixes = {
        detection.Detection: "for a detection already computed use "
                             "detection_issues_table(detection, labels)",
        runs.Run: "for a run's own detection use run_issues_table(run)",
        str: "for a run directory use run_issues_table(run_dir)",
        Path: "for a run directory use run_issues_table(run_dir)",
    }
    for kind, fix in fixes.items():
        if isinstance(value, kind):
            raise TypeError(f"{name} must be an array, got a {type(value).__name__}: {fix}")


def _checked_arrays(labels: Any, features: Any) -> tuple[np.ndarray, np.ndarray]:
    """(labels, features) checked, with the fix named when they come in the other order."""
    _not_array(labels, "labels")
    _not_array(features, "features")
    if np.ndim(labels) == 2 and np.ndim(features) == 1:
        raise ValueError("labels must come first: find_label_issues(labels, features, ...) "
                         "(labels (N,), features (N, D), as cleanlab's order); the arguments "
                         "are swapped")
    x = check_features(features)
    return check_labels(labels, x.shape[0]), x


def _detect(labels: Any, features: Any, num_classes: int | None, k: int | None,
            balance: str) -> tuple[np.ndarray, detection.Detection]:
    y, x = _checked_arrays(labels, features)
    c = check_num_classes(num_classes, y)
    k = default_k(y) if k is None else k
    return y, detection.detect_noise(x, y, c, k=k, balance=balance)


def _detection_arrays(det: Any) -> dict[str, np.ndarray]:
    """The detection's arrays from a detection.Detection or a mapping (a run's final())."""
    if isinstance(det, Mapping):
        missing = [key for key in _DETECTION_KEYS if key not in det]
        if missing:
            raise ValueError(f"detection arrays lack {missing}; pass a detection.Detection or a "
                             "run's final() arrays from a run with detection switched on")
        return {key: np.asarray(det[key]) for key in _DETECTION_KEYS}
    if isinstance(det, detection.Detection):
        return {key: np.asarray(getattr(det, key)) for key in _DETECTION_KEYS}
    _not_array(det, "detection")
    raise TypeError(f"detection must be a detection.Detection or a mapping with "
                    f"{list(_DETECTION_KEYS)}, got {type(det).__name__}; for labels and features "
                    "use label_issues_table(labels, features)")


def label_verdict(first_pass_soft_labels: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """The per-sample verdict on each given label: (is_label_issue bool (N,), suggested int64 (N,)).

    first_pass_soft_labels: p1 (N, C), the fraction of each sample's k nearest neighbours
    carrying each given label (detection.Detection.first_pass_soft_labels). Each class's vote
    is divided by that class's share of the given labels, pi_c = n_c / N:
    ``support_c = p1(c) / pi_c`` (a kNN estimate of how typical the sample is of class c, its
    density ratio; classes without samples get 0). A label is an issue when another class has
    strictly more support than the given one; the suggested label is the best supported class
    (the given one on a tie). So

    - a sample whose neighbours all carry its label is never an issue (every other class has
      support 0), whatever the class sizes;
    - a small class is not outvoted merely for being small (k larger than the class);
    - the verdict depends on no other sample's verdict, on no selection, and not on
      ``num_classes`` (absent classes have no votes);
    - is_label_issue == (suggested != given).
    """
    p1 = np.asarray(first_pass_soft_labels, dtype=np.float64)
    if p1.ndim != 2:
        raise ValueError(f"first_pass_soft_labels must be 2-D (N, C), got shape {p1.shape}")
    n, c = p1.shape
    y = check_labels(labels, n, c)
    share = np.bincount(y, minlength=c) / max(n, 1)
    support = np.divide(p1, share, out=np.zeros_like(p1), where=share > 0)
    own = support[np.arange(n), y]
    best = support.argmax(axis=1)
    issue = support[np.arange(n), best] > own * (1 + _REL_TOL)
    return issue, np.where(issue, best, y).astype(np.int64)


def _issue_arrays(det: Any, labels: Any) -> dict[str, Any]:
    """Given / suggested labels, label quality, discrepancy, is_label_issue and the training
    selection of a detection."""
    d = _detection_arrays(det)
    soft = np.asarray(d["soft_labels"], dtype=np.float64)
    n, c = soft.shape
    y = check_labels(labels, n, c)
    p1 = np.asarray(d["first_pass_soft_labels"], dtype=np.float64)
    if p1.shape != soft.shape:
        raise ValueError(f"first_pass_soft_labels has shape {p1.shape}, soft_labels {soft.shape}; "
                         "pass the arrays of one detection")
    issue, suggested = label_verdict(p1, y)
    return {
        "given": y,
        "suggested": suggested,
        "quality": soft[np.arange(n), y],
        "discrepancy": np.asarray(d["discrepancy"], dtype=np.float64),
        "is_label_issue": issue,
        "selected_for_training": check_mask(d["clean"], n, "clean"),
        "num_classes": c,
    }


def _severity_order(quality: np.ndarray, discrepancy: np.ndarray, by: str) -> np.ndarray:
    """All indices, worst first. Ties: the other score, then the sample index (deterministic)."""
    idx = np.arange(quality.shape[0])
    if by == "label_quality":
        return np.lexsort((idx, -discrepancy, quality))
    return np.lexsort((idx, quality, -discrepancy))


# --------------------------------------------------------------------------- API


def find_label_issues(
    labels: Any,
    features: Any,
    *,
    num_classes: int | None = None,
    k: int | None = None,
    balance: str = "median",
    return_indices_ranked_by: str | None = None,
) -> np.ndarray:
    """Samples whose given label the embedding's neighbourhood contradicts (cleanlab style).

    labels (N,) integer class indices; features (N, D) an embedding of the same samples, in
    the same order. detection.detect_noise runs with ``k`` (None: validation.default_k; for
    features of a training run pass its ``run.k``) and ``balance``. A label issue: another
    class is better supported by the neighbours than the given label, each class's vote
    relative to its share of the labels (:func:`label_verdict`); ``balance`` only changes the
    ``selected_for_training`` column of the tables, never the issues.

    Returns a bool mask (N,), or with ``return_indices_ranked_by`` ("label_quality":
    ascending pass-2 probability of the given label; "discrepancy": descending) the indices of
    the issues only, worst first, ties broken by the other score and then by index.
    """
    if return_indices_ranked_by is not None:
        check_choice("return_indices_ranked_by", return_indices_ranked_by, RANKINGS)
    y, det = _detect(labels, features, num_classes, k, balance)
    a = _issue_arrays(det, y)
    if return_indices_ranked_by is None:
        return a["is_label_issue"]
    order = _severity_order(a["quality"], a["discrepancy"], return_indices_ranked_by)
    return order[a["is_label_issue"][order]]


def detection_issues_table(
    detection_result: Any,
    labels: Any,
    *,
    true_labels: Any = None,
    class_names: list[str] | None = None,
    paths: list[str] | None = None,
    sort: bool = True,
) -> pd.DataFrame:
    """Per-sample label-issue table of a detection, worst first (``sort``), indexed by sample.

    detection_result: a detection.Detection, or a mapping with its arrays (a run's final());
    labels: the given labels (N,) it was computed with.

    Columns: is_label_issue (the neighbours support another class better than the given label,
    :func:`label_verdict`), label_quality (in [0, 1], lower is worse: pass-2 soft-label
    probability of the given label), given_label, suggested_label (the best supported class;
    differs from given_label exactly on the issues), selected_for_training (the detection's
    class-balanced clean selection, MOIT's training device: not a verdict on the label),
    discrepancy; given_name / suggested_name with ``class_names``; path with ``paths``;
    true_label / is_noisy with ``true_labels``.
    """
    a = _issue_arrays(detection_result, labels)
    n = a["given"].shape[0]
    table = pd.DataFrame({
        "is_label_issue": a["is_label_issue"],
        "label_quality": a["quality"],
        "given_label": a["given"],
        "suggested_label": a["suggested"],
        "selected_for_training": a["selected_for_training"],
    })
    if class_names is not None:
        names = np.asarray(list(class_names), dtype=object)
        if len(names) < a["num_classes"]:
            raise ValueError(f"class_names has {len(names)} names for {a['num_classes']} classes")
        table["given_name"] = names[a["given"]]
        table["suggested_name"] = names[a["suggested"]]
    if paths is not None:
        if len(paths) != n:
            raise ValueError(f"paths has {len(paths)} entries for {n} samples; pass one per sample")
        table["path"] = [str(p) for p in paths]
    table["discrepancy"] = a["discrepancy"]
    if true_labels is not None:
        true = check_labels(true_labels, n, name="true_labels")
        table["true_label"] = true
        table["is_noisy"] = a["given"] != true
    table.index.name = "sample"
    if sort:
        table = table.iloc[_severity_order(a["quality"], a["discrepancy"], "label_quality")]
    return table


def label_issues_table(
    labels: Any,
    features: Any,
    *,
    class_names: list[str] | None = None,
    paths: list[str] | None = None,
    sort: bool = True,
    num_classes: int | None = None,
    k: int | None = None,
    balance: str = "median",
) -> pd.DataFrame:
    """:func:`detection_issues_table` of the detection :func:`find_label_issues` runs on
    ``labels`` (N,) and ``features`` (N, D) (same ``num_classes``, ``k`` and ``balance``)."""
    y, det = _detect(labels, features, num_classes, k, balance)
    return detection_issues_table(det, y, class_names=class_names, paths=paths, sort=sort)


def run_issues_table(
    run: Any, *, paths: list[str] | None = None, sort: bool = True
) -> pd.DataFrame:
    """:func:`detection_issues_table` of a run's final detection (``embeddings/final.npz``),
    with the run's class names, and its true labels when they are known.

    run: a runs.Run or its directory. paths: the images' files (e.g. an image folder's
    ``train_paths``).
    """
    if isinstance(run, detection.Detection):
        raise TypeError("run must be a runs.Run or its directory, got a Detection: use "
                        "detection_issues_table(detection, labels)")
    run = runs.load_run(run)
    final = run.final()
    if "soft_labels" not in final:
        raise ValueError(f"run {run.path} has no detection in final.npz (trained without "
                         "detection); find the issues from its features instead: "
                         "find_label_issues(labels, run.final()['features'], k=run.k)")
    true = final.get("labels_true") if run.true_labels_known else None
    return detection_issues_table(final, final["labels_given"], true_labels=true,
                                  class_names=run.classes or None, paths=paths, sort=sort)


def escape_csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would read as a formula (starting with =, +, -, @, a tab or a
    carriage return) prefixed with a single quote; anything else unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def export_label_issues(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a label-issue table to CSV (sample index as the first column).

    Text cells that a spreadsheet would run as a formula (a class folder or file named
    ``=HYPERLINK(...)``, ``+x``, ``-x``, ``@x``) are written with a leading single quote
    (:func:`escape_csv_cell`); numbers are written as they are. Read it back with
    ``pandas.read_csv(path, index_col="sample")``.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected the DataFrame of label_issues_table, got {type(df).__name__}")
    path = Path(path).expanduser()
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(escape_csv_cell)
    out.index.name = out.index.name or "sample"
    # CRLF line ends (RFC 4180): the csv writer then quotes a cell holding a bare \r or \n
    out.to_csv(path, index=True, lineterminator="\r\n")
    return path


def disagreement_confusion(
    given: Any, corrected: Any, num_classes: int | None = None
) -> np.ndarray:
    """Counts M[g, c] of samples with given label g whose neighbours' corrected label is c.

    (N,), (N,) -> int64 (C, C); off-diagonal mass = labels the neighbours contradict.
    """
    g = check_labels(given, name="given")
    s = check_labels(corrected, g.shape[0], name="corrected")
    c = check_num_classes(num_classes, g, s)
    return np.bincount(g * c + s, minlength=c * c).reshape(c, c)
