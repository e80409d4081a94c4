"""Review and fix label issues: go through them worst first, decide each, keep every decision.

A :class:`Review` works on one data set's :class:`~moit_explore.analysis.label_issues.
LabelIssues` and one decision log, a JSON-lines file:

- every decision is appended to the log as it is made (one ``write`` of one line, then
  ``fsync``): a crash or a kernel restart loses nothing, and opening the same log again resumes
  where the review stopped (the latest decision on a sample counts, so a sample can be decided
  again); a last line cut short by a crash (no newline) was never a confirmed decision and is
  cut off when the log is next opened;
- the log's first line records the data set (its size, classes and a hash of its given labels):
  a log is never applied to other labels;
- while a Review is open it holds an OS lock on ``<log>.lock`` (released when it is closed or
  its process ends), so a second review of the same log, in another kernel or terminal, stops
  with :class:`ReviewInUseError` instead of interleaving its decisions;
- :meth:`Review.export_labels` writes the corrected labels as a label file that ``train
  --noise-file`` reads (one label per image of the full training set), to a NEW file (written
  to a temporary file and linked into place: never a partial file, never a replaced one).

A decision sets a sample's label: the suggested label ("accept"), the given one ("keep") or
another class ("relabel").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moit_explore.analysis.label_issues import LabelIssues
from moit_explore.maths.validation import check_labels
from moit_explore.training import datasets, runs

__all__ = ["DECISIONS", "LOG_FORMAT", "Review", "ReviewInUseError", "labels_digest",
           "run_label_positions"]

LOG_FORMAT = "moit-explore review 1"
DECISIONS = ("accept", "keep", "relabel")


class ReviewInUseError(RuntimeError):
    """Another open Review (this process or another) holds the decision log's lock."""


def labels_digest(labels: np.ndarray) -> str:
    """A short hash of int64 labels (N,): which labels a decision log belongs to."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ReviewInUseError(
            f"another review holds {path} (a notebook kernel or a terminal reviewing the same "
            "log); close it first (review.close(), or restart that kernel), or review into "
            "another log") from None
    return fd


def _read_log(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """(header, decisions, length of the complete lines). A torn last line (a write cut short
    by a crash: no newline at its end) is not a decision; any other unreadable line is an
    error naming it."""
    if not path.exists():
        return None, [], 0
    raw = path.read_bytes()
    complete = raw.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(raw[:complete].split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line {number} is not a JSON decision; the log is "
                             "damaged: move it aside and review into a new log") from None
    if not records:
        return None, [], complete
    header, decisions = records[0], records[1:]
    if header.get("format") != LOG_FORMAT:
        raise ValueError(f"{path} is not a review log of this package (its first line is not "
                         f"a {LOG_FORMAT!r} header); pass a new file")
    return header, decisions, complete


class Review:
    """Decide the label issues of ``issues`` worst first, saving to ``log`` (see the module).

    issues: a LabelIssues (label_issues.examine_labels). log: the decision log's path (created
    with its header when missing; resumed when it exists). class_names: for messages and the
    table. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, issues: LabelIssues, log: str | Path, *,
                 class_names: list[str] | None = None) -> None:
        if not isinstance(issues, LabelIssues):
            raise TypeError(f"issues must be a label_issues.LabelIssues (examine_labels(labels, "
                            f"features)), got {type(issues).__name__}")
        self.issues = issues
        self.log = Path(log).expanduser()
        if not self.log.parent.is_dir():
            raise FileNotFoundError(f"folder {self.log.parent} does not exist; create it first")
        self.class_names = (list(class_names) if class_names is not None
                            else [str(c) for c in range(issues.num_classes)])
        self._fd = _lock(self.log.with_name(self.log.name + ".lock"))
        try:
            self._labels: dict[int, int] = {}
            self._kinds: dict[int, str] = {}
            self._open_log()
        except BaseException:
            self.close()
            raise

    # -- the log
    def _header(self) -> dict[str, Any]:
        return {"format": LOG_FORMAT, "n": int(self.issues.labels.shape[0]),
                "num_classes": self.issues.num_classes,
                "labels_sha256_16": labels_digest(self.issues.labels)}

    def _open_log(self) -> None:
        header, decisions, complete = _read_log(self.log)
        if self.log.exists() and self.log.stat().st_size > complete:
            # a torn last line, never a confirmed decision: cut it off (we hold the lock)
            os.truncate(self.log, complete)
        mine = self._header()
        if header is None:
            self._append(mine)
            return
        if {k: header.get(k) for k in mine} != mine:
            raise ValueError(f"{self.log} belongs to another data set ({header.get('n')} "
                             f"labels, {header.get('num_classes')} classes, labels hash "
                             f"{header.get('labels_sha256_16')}; these: {mine['n']}, "
                             f"{mine['num_classes']}, {mine['labels_sha256_16']}); review "
                             "these labels into a new log")
        for d in decisions:
            self._labels[int(d["sample"])] = int(d["label"])
            self._kinds[int(d["sample"])] = str(d["decision"])

    def _write(self, data: bytes) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)  # one write of one line in append mode
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append(self, record: dict[str, Any]) -> None:
        self._write(json.dumps(record, ensure_ascii=False).encode() + b"\n")

    def _check_open(self) -> None:
        if self._fd is None:
            raise RuntimeError(f"this review of {self.log} is closed; open a new Review to go on")

    def close(self) -> None:
        """Release the log's lock (decisions are already on disk)."""
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a dropped Review releases its lock (the OS would at exit)
        self.close()

    def __enter__(self) -> Review:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the queue
    def pending(self) -> np.ndarray:
        """int64: the label issues not decided yet, worst label_quality first."""
        order = self.issues.ranked()
        order = order[self.issues.is_label_issue[order]]
        done = np.fromiter(self._labels, dtype=np.int64, count=len(self._labels))
        return order[~np.isin(order, done)]

    def next(self) -> int | None:
        """The next sample to decide, or None when every label issue is decided."""
        p = self.pending()
        return int(p[0]) if p.size else None

    @property
    def n_issues(self) -> int:
        return int(self.issues.is_label_issue.sum())

    @property
    def n_decided(self) -> int:
        return len(self._labels)

    # -- decisions
    def decide(self, sample: int, label: int) -> str:
        """Set ``sample``'s label to ``label`` and save the decision; returns its kind
        ("accept": the suggested label, "keep": the given one, "relabel": another class)."""
        self._check_open()
        n, c = self.issues.labels.shape[0], self.issues.num_classes
        if isinstance(sample, bool) or not isinstance(sample, int | np.integer) \
                or not 0 <= sample < n:
            raise ValueError(f"sample must be an index in [0, {n}), got {sample!r}")
        if isinstance(label, bool) or not isinstance(label, int | np.integer) \
                or not 0 <= label < c:
            raise ValueError(f"label must be a class index in [0, {c}), got {label!r}")
        sample, label = int(sample), int(label)
        given = int(self.issues.labels[sample])
        suggested = int(self.issues.suggested_label[sample])
        kind = "keep" if label == given else "accept" if label == suggested else "relabel"
        self._append({"sample": sample, "given": given, "suggested": suggested,
                      "label": label, "decision": kind,
                      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self._labels[sample], self._kinds[sample] = label, kind
        return kind

    def accept(self, sample: int) -> str:
        """Give ``sample`` its suggested label."""
        return self.decide(sample, int(self.issues.suggested_label[sample]))

    def keep(self, sample: int) -> str:
        """Keep ``sample``'s given label (the issue was a false alarm)."""
        return self.decide(sample, int(self.issues.labels[sample]))

    def accept_suggested(self, n: int) -> list[int]:
        """Accept the suggested label of the next ``n`` pending issues; returns them."""
        picked = [int(i) for i in self.pending()[:max(0, int(n))]]
        for i in picked:
            self.accept(i)
        return picked

    # -- results
    def decisions(self) -> pd.DataFrame:
        """One row per decided sample (its latest decision): given_label, suggested_label,
        label, decision; given_name / name from class_names."""
        idx = np.array(sorted(self._labels), dtype=np.int64)
        names = np.asarray(self.class_names, dtype=object)
        label = np.array([self._labels[i] for i in idx], dtype=np.int64)
        table = pd.DataFrame({
            "given_label": self.issues.labels[idx],
            "suggested_label": self.issues.suggested_label[idx],
            "label": label,
            "decision": [self._kinds[i] for i in idx],
            "given_name": names[self.issues.labels[idx]],
            "name": names[label],
        }, index=pd.Index(idx, name="sample"))
        return table

    def corrected_labels(self) -> np.ndarray:
        """int64 (N,): the given labels with every decision applied."""
        out = self.issues.labels.copy()
        for i, label in self._labels.items():
            out[i] = label
        return out

    def export_labels(self, path: str | Path, *, full_labels: Any = None,
                      positions: Any = None) -> Path:
        """Write the corrected labels to a NEW label file (``.csv`` with a ``label`` column, or
        ``.npy``) that ``train --noise-file`` reads.

        The file holds one label per image of the FULL training set, in its order: when the
        reviewed samples are a subset of it (a run trained with ``--n-train``), pass
        ``full_labels`` (M,), the full set's labels, and ``positions`` (N,), where each reviewed
        sample sits in it; the other images keep ``full_labels``.
        """
        labels = self.corrected_labels()
        if (full_labels is None) != (positions is None):
            raise ValueError("pass full_labels and positions together (a subset of a larger "
                             "training set), or neither")
        if full_labels is not None:
            full = check_labels(full_labels, name="full_labels")
            pos = np.asarray(positions)
            if pos.shape != labels.shape or not np.issubdtype(pos.dtype, np.integer) \
                    or pos.size and (pos.min() < 0 or pos.max() >= full.shape[0]):
                raise ValueError(f"positions must be {labels.shape[0]} indices into the "
                                 f"{full.shape[0]} full_labels, one per reviewed sample")
            full[pos] = labels
            labels = full
        path = Path(path).expanduser()
        if path.suffix.lower() not in (".csv", ".npy"):
            raise ValueError(f"{path}: a label file is .csv or .npy (what --noise-file reads)")
        if path.exists():
            raise FileExistsError(f"{path} exists; pass a new file name (an export never "
                                  "replaces a file)")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            if path.suffix.lower() == ".npy":
                with open(tmp, "wb") as f:
                    np.save(f, labels)
            else:
                pd.DataFrame({"label": labels}).to_csv(tmp, index=False)
            os.link(tmp, path)  # fails if path appeared meanwhile: never replaces
        except FileExistsError:
            raise FileExistsError(f"{path} exists; pass a new file name (an export never "
                                  "replaces a file)") from None
        finally:
            tmp.unlink(missing_ok=True)
        return path


def run_label_positions(run: Any, *, data_root: str | Path | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(full_labels (M,), positions (N,)) of a run's training images in its FULL training set,
    for :meth:`Review.export_labels`: the full set's labels (the run's label file's when it
    trained with one, else as shipped) and where each of the run's N images sits in it (the
    run's stratified subset, redrawn from its configuration). data_root: where the data set
    is (default: the run's)."""
    run = runs.load_run(run)
    cfg = run.config
    noise_file = cfg.get("noise_file")
    bundle = datasets.load_dataset(cfg["dataset"], data_root or cfg.get("data_root", "data"),
                                   download=False, image_size=cfg.get("image_size"),
                                   channels=cfg.get("image_channels", 3),
                                   noisy_labels=noise_file)
    full = np.asarray(bundle.given_train_labels if noise_file else bundle.train_labels,
                      dtype=np.int64)
    # the subset's images carry their positions along as "given labels"
    marked = replace(bundle, given_train_labels=np.arange(full.shape[0], dtype=np.int64))
    picked = datasets.subset(marked, cfg.get("n_train"), 0, seed=cfg.get("subset_seed", 0))
    return full, np.asarray(picked.given_train_labels, dtype=np.int64)
