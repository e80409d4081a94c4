"""What a run trained on, recorded when it starts and checked before anything reuses it.

``trained_on.json`` in a run directory holds the fingerprint of its training data:

- ``images``: an image folder's training files in training order, each with its size and the
  SHA-256 of its bytes (what ``detect --csv`` names);
- ``label_file``: the ``--noise-file`` and the SHA-256 of its bytes;
- ``arrays``: SHA-256 of the training images, the given labels and the true labels as loaded
  (any data set: a replaced Fashion-MNIST file shows here).

:func:`check_data` compares the data as loaded now with the record (resume, MOIT+), and
:func:`check_image_files` the recorded files as they are on disk (``detect --csv``); both raise
:class:`DataChangedError` naming what changed and the ways out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from moit_explore.training import runs

__all__ = ["TRAINED_ON_FILE", "DataChangedError", "check_data", "check_image_files",
           "data_fingerprint", "file_sha256", "recorded_image_paths", "save_fingerprint"]

TRAINED_ON_FILE = "trained_on.json"
_SHOWN = 5  # files named per kind of change in a message


class DataChangedError(ValueError):
    """The data a run trained on is not the data found now."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _array_sha256(a: Any) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def data_fingerprint(bundle: Any, noisy: Any, label_file: str | None) -> dict:
    """The record of a training set: ``bundle`` (datasets.DatasetBundle, the subset trained on),
    ``noisy`` (noise.NoisyLabels) and the label file the given labels came from (or None)."""
    images = None
    if bundle.train_paths is not None:
        images = []
        for p in bundle.train_paths:
            f = Path(p).expanduser().resolve()
            images.append({"path": str(f), "size": f.stat().st_size, "sha256": file_sha256(f)})
    labels = None
    if label_file:
        f = Path(label_file).expanduser().resolve()
        labels = {"path": str(f), "sha256": file_sha256(f)}
    return {"images": images, "label_file": labels, "arrays": _arrays(bundle, noisy)}


def _arrays(bundle: Any, noisy: Any) -> dict:
    return {"train_images": _array_sha256(bundle.train_images),
            "labels_given": _array_sha256(noisy.noisy), "labels_true": _array_sha256(noisy.clean)}


def save_fingerprint(run_dir: str | Path, record: dict) -> Path:
    """Write ``record`` (:func:`data_fingerprint`) as ``run_dir/trained_on.json``, atomically."""
    path = Path(run_dir) / TRAINED_ON_FILE
    runs.write_json_atomic(path, record)
    return path


def _load(run_dir: Path) -> dict | None:
    path = run_dir / TRAINED_ON_FILE
    if not path.is_file() and not path.is_symlink():
        return None
    record = runs.read_json(path)
    images = record.get("images") if isinstance(record, dict) else None
    ok = isinstance(record, dict) and isinstance(record.get("arrays"), dict) and (
        images is None or (isinstance(images, list) and all(
            isinstance(e, dict) and isinstance(e.get("path"), str)
            and isinstance(e.get("sha256"), str) for e in images)))
    if not ok:
        raise ValueError(f"{path} is damaged (expected the record of the data the run trained "
                         "on: images, label_file, arrays). Restore it from a copy, or train the "
                         "run again with the same flags plus --overwrite")
    return record


def recorded_image_paths(run_dir: str | Path) -> list[str] | None:
    """The image files an image-folder run trained on, in training order (None: no record)."""
    record = _load(Path(run_dir))
    return None if record is None or record["images"] is None else \
        [e["path"] for e in record["images"]]


def _names(paths: list[str]) -> str:
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(paths[:_SHOWN]) + more


def _image_changes(recorded: list[dict], now: list[str] | None) -> list[str]:
    """What differs between the recorded files and ``now`` (None: the recorded paths as they
    are on disk), as phrases."""
    by_path = {e["path"]: e for e in recorded}
    current = [str(Path(p).expanduser().resolve()) for p in now] if now is not None \
        else list(by_path)
    out, now_set = [], set(current)
    added = [p for p in current if p not in by_path]
    removed = [p for p in by_path if p not in now_set]
    missing = [p for p in current if p in by_path and not os.path.isfile(p)]
    gone = set(missing)
    edited = [p for p in current if p in by_path and p not in gone
              and (os.path.getsize(p) != by_path[p].get("size")
                   or file_sha256(p) != by_path[p]["sha256"])]
    if added:
        out.append(f"{len(added)} image(s) added: {_names(added)}")
    if removed or missing:
        out.append(f"{len(removed) + len(missing)} image(s) moved or deleted: "
                   f"{_names(removed + missing)}")
    if edited:
        out.append(f"{len(edited)} image(s) changed content: {_names(edited)}")
    if not out and now is not None and current != list(by_path):
        out.append("the images are in another order")
    return out


def check_data(run_dir: str | Path, bundle: Any, noisy: Any, label_file: str | None, *,
               action: str, fix: str) -> None:
    """Raise :class:`DataChangedError` when the data loaded now (``bundle``, ``noisy``, from
    ``label_file``) is not what ``run_dir`` recorded (``trained_on.json``); a run without the
    record (an older version) passes. ``action``: what is refused ("resume it"); ``fix``: the
    way out that starts afresh (a command)."""
    run_dir = Path(run_dir)
    record = _load(run_dir)
    if record is None:
        return
    changes = []
    if record["images"] is not None:
        changes += _image_changes(record["images"], bundle.train_paths or [])
    old_lf, lf = record.get("label_file"), None
    if label_file:
        p = str(Path(label_file).expanduser().resolve())
        lf = {"path": p, "sha256": file_sha256(p) if os.path.isfile(p) else "missing"}
    if (old_lf or {}).get("sha256") != (lf or {}).get("sha256"):
        where = (lf or old_lf or {}).get("path")
        changes.append(f"the label file {where} changed since (SHA-256 "
                       f"{(old_lf or {}).get('sha256', 'none')[:12]} then, "
                       f"{(lf or {}).get('sha256', 'none')[:12]} now)")
    if not changes:
        now = _arrays(bundle, noisy)
        what = {"train_images": "the training images", "labels_given": "the given labels",
                "labels_true": "the true labels"}
        changes = [f"{what[k]} of {bundle.name} differ from those trained on"
                   for k in what if record["arrays"].get(k) != now[k]]
    if changes:
        raise DataChangedError(
            f"refusing to {action}: {run_dir} was trained on other data than is found now: "
            f"{'; '.join(changes)}. Its model, memory and detection belong to the data it "
            "trained on; continuing would mix the two and name the wrong images. Put the files "
            f"back as they were, or start afresh on the data as they are now: {fix}")


def check_image_files(run_dir: str | Path, *, action: str, fix: str) -> list[str] | None:
    """The recorded image files of ``run_dir`` (None: no record or not an image folder), after
    checking each still holds the bytes trained on; a moved, deleted or edited file raises
    :class:`DataChangedError` naming it."""
    run_dir = Path(run_dir)
    record = _load(run_dir)
    if record is None or record["images"] is None:
        return None
    changes = _image_changes(record["images"], None)
    if changes:
        raise DataChangedError(
            f"refusing to {action}: the image files {run_dir} trained on changed since: "
            f"{'; '.join(changes)}. Its features belong to the images as they were, so a table "
            f"naming the files now would be wrong. Put the files back as they were, or {fix}")
    return [e["path"] for e in record["images"]]
