"""Run directories: what a training run writes, and :func:`load_run` to read it back.

Layout of ``runs/<name>/`` (written by :mod:`moit_explore.train`)::

    config.json          the TrainConfig as a dict (+ "method", "preset", "classes", ...)
    noise.npz            clean, noisy, is_noisy, transition (noise.save_noise)
    metrics.jsonl        one JSON object per epoch
    checkpoint.pt        model / optimizer / scheduler / memory / clean mask / RNG states;
                         written atomically, loadable with torch.load(weights_only=True)
    embeddings/epoch_XXXX.npz   features (float16), labels_given, labels_true, epoch
    embeddings/final.npz        features, soft_labels, corrected_labels, discrepancy, clean,
                                first_pass_soft_labels, labels_given, labels_true, k, balance
    finetune/            a MOIT+ run directory of the same form

Every file is written atomically (a temporary file in the same folder, then ``os.replace``),
so an interrupted run never leaves a half-written checkpoint or array behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from moit_explore import datasets, noise
from moit_explore.config import TrainConfig

__all__ = [
    "Run",
    "append_metrics",
    "atomic_target",
    "create_run_dir",
    "is_run_dir",
    "jsonable",
    "load_checkpoint",
    "load_run",
    "read_json",
    "read_metrics",
    "save_checkpoint",
    "save_final",
    "save_noise",
    "save_npz_atomic",
    "save_snapshot",
    "truncate_metrics",
    "unique_run_dir",
    "write_json_atomic",
]

CONFIG_FILE = "config.json"
NOISE_FILE = "noise.npz"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
EMBEDDINGS_DIR = "embeddings"
FINAL_FILE = "final.npz"
_SNAPSHOT_RE = re.compile(r"^epoch_(\d{4,})\.npz$")


# --------------------------------------------------------------------------- directories


def create_run_dir(root: str | Path, name: str, *, overwrite: bool = False) -> Path:
    """Create ``root/name`` for a new run and return it.

    An existing non-empty folder is never reused silently: it raises FileExistsError naming the
    folder and the ways out, unless ``overwrite=True``, which empties it first.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"run name must be a plain folder name, got {name!r}; "
                         "pass e.g. --name moit-sym40")
    path = Path(root).expanduser() / name
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; choose another --name")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"run directory {path} already exists and is not empty. Choose another name "
                f"(--name NEW_NAME), replace it (--overwrite), or continue it "
                f"(--resume {path})."
            )
        _empty_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def unique_run_dir(root: str | Path, name: str) -> Path:
    """``root/name`` if free (missing or empty), else the first free ``root/name-2``, ``-3`` ..."""
    root = Path(root).expanduser()
    candidate, n = root / name, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate


def _empty_dir(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds a run's config.json."""
    return (Path(path) / CONFIG_FILE).is_file()


# --------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_target(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; run folders are meant to be shared
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # make the bytes durable before the rename
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def jsonable(obj: Any) -> Any:
    """Plain JSON values: NumPy scalars/arrays, tuples and Paths converted; NaN/inf -> null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN becomes null, tuples lists)."""
    path = Path(path)
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file gets an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is damaged: restore it or "
                         "re-run the training that wrote it") from e


def append_metrics(run_dir: str | Path, row: dict) -> None:
    """Append one JSON line to ``run_dir/metrics.jsonl`` (flushed and fsynced)."""
    path = Path(run_dir) / METRICS_FILE
    line = json.dumps(jsonable(row), allow_nan=False)
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """``metrics.jsonl`` as a DataFrame (one row per epoch; null -> NaN); empty if missing.

    A truncated last line (a run killed while writing) is skipped.
    """
    path = Path(run_dir) / METRICS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    df = pd.DataFrame(rows)
    return df.astype({c: float for c in df.columns if df[c].isna().all()})


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop metric rows after ``last_epoch`` (a resume continues from the checkpoint)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("epoch", 0)) <= last_epoch:
                keep.append(line)
        except (json.JSONDecodeError, ValueError, TypeError, AttributeError):
            continue
    with atomic_target(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in keep))


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, state: dict) -> None:
    """``torch.save(state)`` atomically (temporary file in the same folder + os.replace).

    ``state`` must hold only tensors, numbers, strings, lists, tuples and dicts, so that
    :func:`load_checkpoint` can read it with ``weights_only=True``.
    """
    path = Path(path)
    with atomic_target(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on CPU).

    A missing, truncated or corrupt file raises an error naming the file and the fix.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; the run has not finished an epoch yet. "
            "Train it (python -m moit_explore train ...) or point at another run directory"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {first}). Delete "
            "it and re-run the training (or train again with --overwrite)"
        ) from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a dict; "
                         "it was not written by moit_explore: re-run the training")
    return state


# --------------------------------------------------------------------------- embeddings


def save_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """``np.savez(path, **arrays)``, atomically."""
    with atomic_target(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def save_noise(run_dir: str | Path, noisy: noise.NoisyLabels) -> Path:
    """Write the run's given and true labels, ``noise.npz`` (:func:`noise.save_noise`),
    atomically."""
    path = Path(run_dir) / NOISE_FILE
    with atomic_target(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            noise.save_noise(f, noisy)
    return path


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor on any device
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def snapshot_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / EMBEDDINGS_DIR / f"epoch_{int(epoch):04d}.npz"


def save_snapshot(run_dir: str | Path, epoch: int, features: Any, labels_given: Any,
                  labels_true: Any) -> Path:
    """Write ``embeddings/epoch_XXXX.npz``: features (N, D) as float16, labels, epoch."""
    path = snapshot_path(run_dir, epoch)
    save_npz_atomic(path, {
        "features": _to_numpy(features).astype(np.float16),
        "labels_given": _to_numpy(labels_given).astype(np.int64),
        "labels_true": _to_numpy(labels_true).astype(np.int64),
        "epoch": np.array(int(epoch), dtype=np.int64),
    })
    return path


def save_final(run_dir: str | Path, features: Any, detection: Any, labels_given: Any,
               labels_true: Any, **extra: np.ndarray) -> Path:
    """Write ``embeddings/final.npz`` from the final features and a detection.Detection.

    ``detection`` None (detection switched off) writes only features and labels. ``extra``:
    further arrays of the run (MOIT+: ``train_mask``, the samples it trained on).
    """
    arrays: dict[str, Any] = {
        "features": _to_numpy(features).astype(np.float32),
        "labels_given": _to_numpy(labels_given).astype(np.int64),
        "labels_true": _to_numpy(labels_true).astype(np.int64),
    }
    if detection is not None:
        arrays.update(
            soft_labels=np.asarray(detection.soft_labels, dtype=np.float32),
            corrected_labels=np.asarray(detection.corrected_labels, dtype=np.int64),
            discrepancy=np.asarray(detection.discrepancy, dtype=np.float32),
            clean=np.asarray(detection.clean, dtype=bool),
            first_pass_soft_labels=np.asarray(detection.first_pass_soft_labels,
                                              dtype=np.float32),
            k=np.array(int(detection.k), dtype=np.int64),
            balance=np.array(str(detection.balance)),
        )
    arrays.update(extra)
    path = Path(run_dir) / EMBEDDINGS_DIR / FINAL_FILE
    save_npz_atomic(path, arrays)
    return path


def _load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        raise ValueError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); "
                         "re-run the training that wrote it") from e


# --------------------------------------------------------------------------- reading runs


@dataclass
class Run:
    """A run directory read back.

    path: the folder; config: config.json as a dict; metrics: metrics.jsonl as a DataFrame;
    noise: noise.NoisyLabels (given vs true labels); snapshot_epochs: epochs with an
    ``embeddings/epoch_XXXX.npz``; classes: class names.
    """

    path: Path
    config: dict
    metrics: pd.DataFrame
    noise: Any
    snapshot_epochs: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        return str(self.config.get("method", "?"))

    @property
    def k(self) -> int | None:
        """The k of the run's kNN detection (config.json), None when it recorded none."""
        k = self.config.get("k")
        return None if k is None else int(k)

    @property
    def true_labels_known(self) -> bool:
        """False for data whose true labels nobody knows (an image folder's labels as given)."""
        return bool(self.config.get("true_labels_known", True))

    def snapshot(self, epoch: int) -> dict[str, np.ndarray]:
        """Arrays of ``embeddings/epoch_XXXX.npz`` (features float16, labels, epoch)."""
        if int(epoch) not in self.snapshot_epochs:
            raise ValueError(f"run {self.path} has no snapshot of epoch {epoch}; available: "
                             f"{self.snapshot_epochs} (set --snapshot-epochs when training)")
        return _load_npz(snapshot_path(self.path, epoch), "snapshot")

    def final(self) -> dict[str, np.ndarray]:
        """Arrays of ``embeddings/final.npz`` (features, detection outputs, labels)."""
        return _load_npz(self.path / EMBEDDINGS_DIR / FINAL_FILE,
                         "final embeddings (written when training finishes)")

    @property
    def has_finetune(self) -> bool:
        return is_run_dir(self.path / "finetune")

    def finetune(self) -> Run:
        """The MOIT+ run in ``finetune/``."""
        return load_run(self.path / "finetune")

    def dataset(self):
        """Reload the data set the run used (same subset): a datasets.DatasetBundle."""
        return datasets.training_subset(TrainConfig.from_dict(self.config), download=False)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, method={self.method!r}, epochs={len(self.metrics)}, "
                f"snapshots={self.snapshot_epochs})")


def load_run(path: str | Path | Run) -> Run:
    """Read a run directory written by :func:`moit_explore.train.train` (or its finetune/);
    a Run already read is returned as it is."""
    if isinstance(path, Run):
        return path
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist; pass a folder written by "
                                "`python -m moit_explore train` (e.g. runs/<name>)")
    if not is_run_dir(path):
        hint = ""
        subs = sorted(p.name for p in path.iterdir() if is_run_dir(p))
        if subs:
            hint = f" It contains run directories: {', '.join(subs[:8])}."
        raise ValueError(f"{path} is not a run directory (no {CONFIG_FILE}).{hint} Pass a folder "
                         "written by `python -m moit_explore train`")
    config = read_json(path / CONFIG_FILE)
    noisy = noise.load_noise(path / NOISE_FILE) if (path / NOISE_FILE).is_file() else None
    emb = path / EMBEDDINGS_DIR
    epochs = sorted(int(m.group(1)) for p in (emb.iterdir() if emb.is_dir() else [])
                    if (m := _SNAPSHOT_RE.match(p.name)))
    return Run(path=path, config=config, metrics=read_metrics(path), noise=noisy,
               snapshot_epochs=epochs, classes=list(config.get("classes", [])))
