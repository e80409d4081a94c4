"""Label issues in a data set, cleanlab ``find_label_issues`` style: the practitioner's entry
point.

A **label issue** is the verdict on one given label: the embedding's neighbourhood says it is
wrong. It is found from features and their neighbours in two passes (MOIT's idea, with
confident learning's calibration, :mod:`confident`):

1. each sample's ``k`` nearest neighbours (cosine) vote with their given labels, nearer ones
   counting more (by rank): p1 (N, C), the posterior of the NOISY labels;
2. confident learning on p1 estimates the joint of given and true labels (per-class
   thresholds, counts calibrated to the label counts) and, for each pair of classes (i, j),
   picks the ``N * joint[i, j]`` samples labelled i with the largest lead of j over i: the
   suspects;
3. the neighbours vote again, a suspect neighbour counting ``confident.SUSPECT_WEIGHT`` (0.1)
   of its weight: ``pred_probs`` (N, C), a posterior less biased by the wrong labels around a
   sample;
4. confident learning again, on pred_probs: its joint (``LabelIssues.joint``) and its picks,
   the label issues.

``label_quality`` = pred_probs[i, given_i] (in [0, 1], lower is worse); the **suggested
label** of a label issue is its best supported other class (argmax of pred_probs over the
classes other than the given one), of any other sample the given label. "Selected for
training" is a different thing: MOIT's class-balanced clean selection (detection.py, spec
§3), a device of the training that leaves correct labels of large classes out; tables can
show it as its own column.

- :func:`examine_labels` ``(labels, features, *, ...)``: everything at once, a
  :class:`LabelIssues` (``.table()`` for the table, the estimated joint for the health report);
- :func:`find_label_issues` ``(labels, features, *, ...)``: a bool mask, or the issues'
  indices ranked by severity;
- :func:`label_issues_table` ``(labels, features, *, ...)``: one row per sample, worst first;
- :func:`run_issues_table` ``(run, *, ...)``: the table of a training run's final features;
- :func:`export_label_issues`: the table to CSV;
- :func:`disagreement_confusion`: given label vs another labelling, per class.

``features`` is an embedding (N, D), or the :class:`~moit_explore.maths.neighbors.Neighbors`
of one ``knn_search`` so that several calls share one search. Arrays that could be swapped are
positional in one order (labels first, as cleanlab), everything else keyword-only; a wrong
type gets an error that names the function to use. True labels are optional: on a user's own
image folder nobody knows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moit_explore.analysis import confident
from moit_explore.maths import detection
from moit_explore.maths.neighbors import Neighbors, knn_search
from moit_explore.maths.validation import (
    check_choice,
    check_features,
    check_labels,
    check_mask,
    check_num_classes,
    k_within_classes,
    resolve_k,
)
from moit_explore.training import rundir, runs

__all__ = [
    "RANKINGS",
    "LabelIssues",
    "default_k",
    "disagreement_confusion",
    "escape_csv_cell",
    "examine_labels",
    "export_label_issues",
    "find_label_issues",
    "label_issues_table",
    "run_issues_table",
]

RANKINGS = ("label_quality", "margin")
# k = round(sqrt(N) / 2) within these bounds (measured: benchmarks/RESULTS.md, "Label issues
# against cleanlab": k = 50 at N = 10,000)
K_MIN, K_MAX = 5, 100
# cells a spreadsheet would read as a formula (OWASP's CSV-injection list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------- inputs


def default_k(labels: Any) -> int:
    """k of the label-issue search: round(sqrt(N) / 2) in [5, 100], at most half the median
    class size (a k far beyond a class's size lets other classes outvote it) and N - 1."""
    y = check_labels(labels)
    return k_within_classes(min(K_MAX, max(K_MIN, int(round(np.sqrt(y.size) / 2)))), y)


def _not_array(value: Any, name: str) -> None:
    """A clear error for the objects that other functions of this module take."""
    fixes = {
        detection.Detection: "label issues come from features, not from a training "
                             "detection: pass the features it ran on (for a run: "
                             "run_issues_table(run))",
        runs.Run: "for a run use run_issues_table(run)",
        str: "for a run directory use run_issues_table(run_dir)",
        Path: "for a run directory use run_issues_table(run_dir)",
    }
    for kind, fix in fixes.items():
        if isinstance(value, kind):
            raise TypeError(f"{name} must be an array, got a {type(value).__name__}: {fix}")


def _looks_like_pred_probs(x: np.ndarray) -> bool:
    """Every row non-negative and summing to 1: predicted probabilities or one-hot labels."""
    return bool(x.shape[1] > 1 and (x >= 0).all()
                and np.allclose(x.sum(axis=1), 1.0, atol=1e-3))


def _checked_inputs(labels: Any, features: Any) -> tuple[np.ndarray, Any]:
    """(labels, features array or Neighbors) checked, the fix named for the usual mix-ups."""
    _not_array(labels, "labels")
    _not_array(features, "features")
    if isinstance(features, Neighbors):
        return check_labels(labels, features.indices.shape[0]), features
    if np.ndim(labels) == 2 and np.ndim(features) == 1:
        raise ValueError("labels must come first: find_label_issues(labels, features, ...) "
                         "(labels (N,), features (N, D), as cleanlab's order); the arguments "
                         "are swapped")
    x = check_features(features)
    y = check_labels(labels, x.shape[0])
    if _looks_like_pred_probs(x):
        raise ValueError(
            f"features look like predicted probabilities (every row of the {x.shape} array is "
            "non-negative and sums to 1): label issues are found from an embedding (N, D) of "
            "the samples, e.g. a network's penultimate layer or PCA of the pixels. For "
            "out-of-fold pred_probs use cleanlab.filter.find_label_issues(labels, pred_probs)")
    return y, x


# --------------------------------------------------------------------------- the method


@dataclass(frozen=True)
class LabelIssues:
    """The label issues of one data set, from one kNN search.

    labels int64 (N,): the given labels; is_label_issue bool (N,); label_quality float64 (N,)
    in [0, 1]; suggested_label int64 (N,); pred_probs float64 (N, C): the neighbours'
    second-pass vote; joint float64 (C, C): the estimated joint P(given i, true j) of
    confident learning on pred_probs (sums to 1); k: the neighbours used.
    """

    labels: np.ndarray
    is_label_issue: np.ndarray
    label_quality: np.ndarray
    suggested_label: np.ndarray
    pred_probs: np.ndarray
    joint: np.ndarray
    k: int

    @property
    def num_classes(self) -> int:
        return int(self.pred_probs.shape[1])

    def margin(self) -> np.ndarray:
        """float64 (N,) in [-1, 1]: pred_probs of the given label minus the best other class."""
        n = self.labels.shape[0]
        other = self.pred_probs.copy()
        other[np.arange(n), self.labels] = -np.inf
        return self.label_quality - other.max(axis=1)

    def ranked(self, by: str = "label_quality") -> np.ndarray:
        """All indices, worst first by ``by`` ("label_quality" or "margin"), ties by index."""
        check_choice("by", by, RANKINGS)
        score = self.label_quality if by == "label_quality" else self.margin()
        return np.lexsort((np.arange(score.shape[0]), score))

    def table(self, *, class_names: list[str] | None = None, paths: list[str] | None = None,
              true_labels: Any = None, selected_for_training: Any = None,
              sort: bool = True) -> pd.DataFrame:
        """One row per sample, worst label_quality first (``sort``), indexed by sample.

        Columns: is_label_issue, label_quality, given_label, suggested_label (differs from
        given_label exactly on the issues); given_name / suggested_name with
        ``class_names``; path with ``paths``; selected_for_training (bool (N,), MOIT's
        training selection, not a verdict) when given; true_label / is_noisy with
        ``true_labels``.
        """
        n = self.labels.shape[0]
        table = pd.DataFrame({
            "is_label_issue": self.is_label_issue,
            "label_quality": self.label_quality,
            "given_label": self.labels,
            "suggested_label": self.suggested_label,
        })
        if class_names is not None:
            names = np.asarray(list(class_names), dtype=object)
            if len(names) < self.num_classes:
                raise ValueError(f"class_names has {len(names)} names for "
                                 f"{self.num_classes} classes")
            table["given_name"] = names[self.labels]
            table["suggested_name"] = names[self.suggested_label]
        if paths is not None:
            if len(paths) != n:
                raise ValueError(f"paths has {len(paths)} entries for {n} samples; pass one "
                                 "per sample")
            table["path"] = [str(p) for p in paths]
        if selected_for_training is not None:
            table["selected_for_training"] = check_mask(selected_for_training, n,
                                                        "selected_for_training")
        if true_labels is not None:
            true = check_labels(true_labels, n, name="true_labels")
            table["true_label"] = true
            table["is_noisy"] = self.labels != true
        table.index.name = "sample"
        return table.iloc[self.ranked()] if sort else table


def examine_labels(
    labels: Any, features: Any, *,
    num_classes: int | None = None, k: int | None = None, backend: str = "auto",
) -> LabelIssues:
    """The label issues of ``labels`` (N,) given ``features`` (N, D) or their ``Neighbors``.

    k: neighbours (None: :func:`default_k`; at most the Neighbors' k_max). backend: the kNN
    search's (neighbors.knn_search). num_classes: the width of pred_probs and joint (default
    max label + 1); classes nobody is labelled with get no votes and change nothing.
    """
    y, feats = _checked_inputs(labels, features)
    c = check_num_classes(num_classes, y)
    n = y.shape[0]
    k_max = feats.k_max if isinstance(feats, Neighbors) else None
    k = resolve_k(k, y, n, k_max=k_max, default=default_k)
    indices = feats.indices[:, :k] if k_max else knn_search(feats, k, backend=backend).indices
    p1 = confident.neighbour_votes(indices, y, c)
    suspect = confident.prune_by_noise_rate(p1, y, confident.calibrated_joint(p1, y))
    probs = confident.neighbour_votes(
        indices, y, c, vote_weight=np.where(suspect, confident.SUSPECT_WEIGHT, 1.0))
    # the verdict: confident learning again, on the second pass (where the suspects of the
    # first count less, a trained embedding's absorbed wrong labels show: see RESULTS.md)
    joint = confident.calibrated_joint(probs, y)
    issue = confident.prune_by_noise_rate(probs, y, joint)
    rows = np.arange(n)
    other = probs.copy()
    other[rows, y] = -np.inf
    suggested = np.where(issue, other.argmax(axis=1), y).astype(np.int64)
    return LabelIssues(labels=y, is_label_issue=issue, label_quality=probs[rows, y],
                       suggested_label=suggested, pred_probs=probs, joint=joint, k=int(k))


# --------------------------------------------------------------------------- API


def find_label_issues(
    labels: Any, features: Any, *,
    num_classes: int | None = None, k: int | None = None, backend: str = "auto",
    return_indices_ranked_by: str | None = None,
) -> np.ndarray:
    """Samples whose given label the embedding's neighbourhood contradicts (cleanlab style).

    labels (N,) integer class indices; features (N, D) an embedding of the same samples in the
    same order, or their Neighbors (knn_search) to share one search between calls. The
    method, ``k`` and ``num_classes``: :func:`examine_labels`.

    Returns a bool mask (N,), or with ``return_indices_ranked_by`` ("label_quality":
    ascending; "margin": label_quality minus the best other class, ascending) the indices of
    the issues only, worst first, ties by index.
    """
    if return_indices_ranked_by is not None:
        check_choice("return_indices_ranked_by", return_indices_ranked_by, RANKINGS)
    res = examine_labels(labels, features, num_classes=num_classes, k=k, backend=backend)
    if return_indices_ranked_by is None:
        return res.is_label_issue
    order = res.ranked(return_indices_ranked_by)
    return order[res.is_label_issue[order]]


def label_issues_table(
    labels: Any, features: Any, *,
    class_names: list[str] | None = None, paths: list[str] | None = None,
    true_labels: Any = None, selected_for_training: Any = None, sort: bool = True,
    num_classes: int | None = None, k: int | None = None, backend: str = "auto",
) -> pd.DataFrame:
    """:meth:`LabelIssues.table` of :func:`examine_labels` on ``labels`` (N,) and
    ``features`` (N, D) or their Neighbors: the mask of :func:`find_label_issues` is its
    ``is_label_issue`` column, so one call gives both."""
    res = examine_labels(labels, features, num_classes=num_classes, k=k, backend=backend)
    return res.table(class_names=class_names, paths=paths, true_labels=true_labels,
                     selected_for_training=selected_for_training, sort=sort)


def examine_run(run: Any, *, k: int | None = None) -> tuple[LabelIssues, runs.Run]:
    """:func:`examine_labels` on a run's final features (``embeddings/final.npz``) and given
    labels: (result, the loaded runs.Run). run: a runs.Run or its directory."""
    if isinstance(run, detection.Detection):
        raise TypeError("run must be a runs.Run or its directory, got a Detection: label "
                        "issues come from features: label_issues_table(labels, features)")
    run = runs.load_run(run)
    final = run.final()
    if "features" not in final:
        raise ValueError(f"run {run.path} has no final features in embeddings/final.npz; "
                         "train it to the end (or resume it) first")
    num_classes = int(run.config.get("num_classes", int(final["labels_given"].max()) + 1))
    res = examine_labels(final["labels_given"], final["features"], num_classes=num_classes,
                         k=k)
    return res, run


def run_issues_table(
    run: Any, *, paths: list[str] | None = None, sort: bool = True, k: int | None = None
) -> pd.DataFrame:
    """The label-issue table of a run's final features, with the run's class names, its
    training selection (selected_for_training) and its true labels when they are known.

    run: a runs.Run or its directory. paths: the images' files (e.g. an image folder's
    ``train_paths``). k: :func:`examine_labels`'s.
    """
    res, run = examine_run(run, k=k)
    final = run.final()
    true = final.get("labels_true") if run.true_labels_known else None
    return res.table(class_names=run.classes or None, paths=paths, true_labels=true,
                     selected_for_training=final.get("clean"), sort=sort)


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
    ``pandas.read_csv(path, index_col="sample")``. An existing ``path`` is never replaced
    (FileExistsError), and a failed write (a full disk) leaves no file behind.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected the DataFrame of label_issues_table, got {type(df).__name__}")
    path = Path(path).expanduser()
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(escape_csv_cell)
    out.index.name = out.index.name or "sample"
    # CRLF line ends (RFC 4180): the csv writer then quotes a cell holding a bare \r or \n
    return rundir.write_new_file(
        path, lambda tmp: out.to_csv(tmp, index=True, lineterminator="\r\n"),
        "a new file name")


def disagreement_confusion(
    given: Any, corrected: Any, num_classes: int | None = None
) -> np.ndarray:
    """Counts M[g, c] of samples with given label g and label c in another labelling (e.g. the
    suggested labels, or a reviewer's).

    (N,), (N,) -> int64 (C, C); off-diagonal mass = labels the two labellings disagree on.
    """
    g = check_labels(given, name="given")
    s = check_labels(corrected, g.shape[0], name="corrected")
    c = check_num_classes(num_classes, g, s)
    return np.bincount(g * c + s, minlength=c * c).reshape(c, c)
