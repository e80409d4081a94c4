"""Run directories: what a training run writes, and :func:`load_run` to read it back.

Layout of ``runs/<name>/`` (written by :mod:`moit_explore.training.train`)::

    config.json          the TrainConfig as a dict (+ "method", "preset", "classes", ...)
    noise.npz            clean, noisy, is_noisy, transition (noise.save_noise)
    metrics.jsonl        one JSON object per epoch
    checkpoint.pt        model / optimizer / scheduler / memory / clean mask / RNG states;
                         written atomically, loadable with torch.load(weights_only=True)
    embeddings/epoch_XXXX.npz   features (float16), labels_given, labels_true, epoch
    embeddings/final.npz        features, soft_labels, corrected_labels, discrepancy, clean,
                                first_pass_soft_labels, labels_given, labels_true, k, balance
    finetune/            a MOIT+ run directory of the same form (--name: another folder)

    trained_on.json      what it trained on (training/fingerprint.py)

Every file is written atomically, a file of the run is never read or written through a
symbolic link, and a process training in it holds its lock: :mod:`moit_explore.training.rundir`.
:func:`load_run` checks every setting of config.json once, the same way for every command.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from moit_explore.maths import noise
from moit_explore.training import datasets
from moit_explore.training.config import FinetuneConfig, TrainConfig
from moit_explore.training.methods import METHODS
from moit_explore.training.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EMBEDDINGS_DIR,
    FINAL_FILE,
    METRICS_FILE,
    NOISE_FILE,
    atomic_target,
    check_no_symlinks,
    is_run_dir,
    not_a_run_dir,
    open_run_file,
)

__all__ = [
    "Run",
    "append_metrics",
    "check_training_state",
    "command",
    "is_finished",
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
    "snapshot_path",
    "truncate_metrics",
    "trusted_data_root",
    "write_json_atomic",
]

_SNAPSHOT_RE = re.compile(r"^epoch_(\d{4,})\.npz$")
_TRAINING_STATE_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng")


def command(*args: Any) -> str:
    """A command line of this package as the messages print it: in backticks, quoted for a
    POSIX shell, so that it can be copied (and tests can run every hint)."""
    return "`python -m moit_explore " + shlex.join(str(a) for a in args) + "`"


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


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: bytes that are not UTF-8 text (0x"
                         f"{data[e.start:e.start + 1].hex()} at byte {e.start}); the file is "
                         "damaged: restore it from a copy, or re-run the training that wrote "
                         "it") from None


def read_json(path: str | Path) -> Any:
    """Read a JSON file (not through a symbolic link); a missing, undecodable or malformed file
    gets an error naming it."""
    path = Path(path)
    if not path.is_file() and not path.is_symlink():
        raise FileNotFoundError(f"{path} does not exist")
    with open_run_file(path) as f:
        text = _text(path, f.read())
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is damaged: restore it or "
                         "re-run the training that wrote it") from e


def append_metrics(run_dir: str | Path, row: dict) -> None:
    """Append one JSON line to ``run_dir/metrics.jsonl`` (flushed and fsynced; never through a
    symbolic link)."""
    path = Path(run_dir) / METRICS_FILE
    line = json.dumps(jsonable(row), allow_nan=False)
    with open_run_file(path, "ab") as f:
        f.write((line + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def _metric_lines(path: Path) -> list[tuple[int, str, dict | None]]:
    """(line number, text, parsed row or None when damaged) of each non-empty line."""
    if not path.is_file() and not path.is_symlink():
        return []
    with open_run_file(path) as f:
        text = _text(path, f.read())
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if row is not None and not isinstance(row, dict):
            raise ValueError(f"{path}, line {i}: {line.strip()[:60]!r} is not a JSON object of "
                             "one epoch's metrics; the file is damaged: delete that line (or "
                             "re-train the run with --overwrite)")
        out.append((i, line, row))
    return out


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """``metrics.jsonl`` as a DataFrame (one row per epoch; null -> NaN); empty if missing.

    A damaged line (a run killed while writing its last line) is skipped.
    """
    path = Path(run_dir) / METRICS_FILE
    rows = []
    for i, _, row in _metric_lines(path):
        if row is None:
            continue
        for key, v in row.items():
            if v is not None and not isinstance(v, (int, float)):
                raise ValueError(f"{path}, line {i}: {key} is {v!r}, not a number; the file is "
                                 "damaged or was edited: restore that value (or delete the "
                                 "line)")
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.astype({c: float for c in df.columns if df[c].isna().all()})


def is_finished(run_dir: str | Path) -> bool:
    """True when the training run at ``run_dir`` finished: ``embeddings/final.npz`` is written
    (after the last epoch) and metrics.jsonl has a row for every epoch config.json asks for, so a
    run that ``--resume`` is extending counts as unfinished until its new last epoch."""
    path = Path(run_dir)
    if not (is_run_dir(path) and (path / EMBEDDINGS_DIR / FINAL_FILE).is_file()):
        return False
    try:
        epochs = int(read_json(path / CONFIG_FILE)["epochs"])
        return len(read_metrics(path)) >= epochs
    except (OSError, ValueError, KeyError, TypeError):  # a damaged run is not a finished one
        return False


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop metric rows after ``last_epoch`` (a resume continues from the checkpoint).

    A damaged line is dropped only when it is the last (a run killed while writing it); one
    before it is a checkpointed epoch's row: the file is left as it is, and a ValueError names
    the line."""
    path = run_dir / METRICS_FILE
    lines = _metric_lines(path)
    if not lines:
        return
    for i, line, row in lines[:-1]:
        if row is None:
            raise ValueError(f"{path}, line {i}: {line.strip()[:60]!r} is damaged (not JSON); it "
                             "is the row of an epoch the checkpoint holds, and resuming would "
                             "lose it. Repair that line (or delete it to give the row up) and "
                             "resume again")
    keep = []
    for _, line, row in lines:
        try:
            if row is not None and int(row.get("epoch", 0)) <= last_epoch:
                keep.append(line)
        except (ValueError, TypeError):
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
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's writer says "basic_ios::clear: iostream error"
            full = shutil.disk_usage(path.parent).free < (1 << 20)
            raise OSError(errno.ENOSPC if full else errno.EIO,
                          f"{'No space left on device' if full else 'write failed'} "
                          f"(torch.save: {str(e).strip()[:80]})", str(path)) from None


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on CPU).

    A missing, truncated or corrupt file raises an error naming the file and the fix.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist: the run was stopped before it finished its "
            "first epoch, so there is nothing to continue. Train it again: the same command "
            "with --overwrite added"
        )
    try:
        with open_run_file(path) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
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


def check_training_state(state: dict, path: str | Path) -> dict:
    """A training checkpoint's state (engine.checkpoint_state) with every entry resuming needs;
    otherwise a ValueError naming the file and the fix."""
    missing = [k for k in _TRAINING_STATE_KEYS if k not in state]
    if missing or not isinstance(state.get("epoch"), int):
        raise ValueError(f"checkpoint {path} is damaged: it lacks {', '.join(missing) or 'epoch'} "
                         "of a training state. Delete it and train the run again with the "
                         "same flags plus --overwrite")
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
        with open_run_file(path) as f, np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, EOFError, an object array ...: the file is damaged
        raise ValueError(f"{path} is damaged (corrupt, truncated or not an array file written "
                         f"by moit_explore: {type(e).__name__}); re-run the training that wrote "
                         "it (train again with the same flags plus --overwrite)") from None


# --------------------------------------------------------------------------- stored paths

# the project's data folder (next to the package folder), where data sets live by default:
# moit_explore/training/runs.py -> <repository>/data
PROJECT_DATA = Path(__file__).resolve().parents[2] / "data"


def trusted_data_root(config: dict, source: str | Path, explicit: str | Path | None = None,
                      hint: tuple = ()) -> str:
    """The data_root a stored configuration may load from, resolved.

    ``explicit`` (the user's own ``--data-root``) always wins. Otherwise the stored data_root
    (a relative one resolved against the current folder, as older runs stored "data") must lie
    in the project's data folder (:data:`PROJECT_DATA`, or ``./data``): a run directory from
    someone else must not choose where data are read from (CIFAR's files are Python pickles,
    which can run code). ``hint``: the command (arguments) that retries with ``--data-root``.
    """
    if explicit is not None:
        return str(Path(explicit).expanduser().resolve())
    stored = config.get("data_root", "data")
    dataset = config.get("dataset")
    if not isinstance(stored, str):
        raise ValueError(f"{source}: data_root must be a folder name, got {stored!r}; pass "
                         "--data-root DIR")
    path = Path(stored).expanduser()
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    # only the data sets that read nothing from data_root go unchecked (digits ships with
    # scikit-learn, an image folder names its own path); any other name, however spelled, must
    # have a trusted data_root
    if isinstance(dataset, str) and (dataset == "digits" or dataset.startswith("imagefolder:")):
        return str(path)
    allowed = [PROJECT_DATA, (Path.cwd() / "data").resolve()]
    if any(path == a or a in path.parents for a in allowed):
        return str(path)
    retry = (f" {command(*hint, '--data-root', path)}" if hint else
             f" pass --data-root {shlex.quote(str(path))}")
    raise ValueError(f"{source} names data_root {path}, outside the project's data folder "
                     f"({PROJECT_DATA}): a run directory from elsewhere does not choose where "
                     "data are read from (CIFAR's files are Python pickles, which can run "
                     f"code). If you trust that folder, say so yourself:{retry}")


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
    def finetunes(self) -> list[str]:
        """The folders of this run that hold a fine-tune of it (MOIT+ writes ``finetune/``, or
        the folder named with ``finetune --name``), sorted."""
        return sorted(p.name for p in self.path.iterdir()
                      if p.is_dir() and not p.is_symlink() and is_run_dir(p)
                      and METHODS[load_run(p).method].is_fine_tuning)

    @property
    def has_finetune(self) -> bool:
        return bool(self.finetunes)

    def finetune(self, name: str | None = None) -> Run:
        """The fine-tune of this run in folder ``name``; None: the only one, or the default
        folder (FinetuneConfig's ``name``) among several."""
        names = self.finetunes
        if name is None:
            default = FinetuneConfig().name
            name = names[0] if len(names) == 1 else default
        if name not in names:
            raise ValueError(f"{self.path} has no fine-tune in {name!r}; its fine-tunes: "
                             f"{', '.join(names) or 'none'} (run: python -m moit_explore "
                             f"finetune {self.path})")
        return load_run(self.path / name)

    def dataset(self, data_root: str | Path | None = None):
        """Reload the data set the run used (same subset): a datasets.DatasetBundle.

        data_root: where the data sets are (None: the stored one, which must lie in the
        project's data folder, see :func:`trusted_data_root`)."""
        from moit_explore.training import fingerprint  # noqa: PLC0415 -- it imports runs

        root = trusted_data_root(self.config, self.path / CONFIG_FILE, data_root)
        cfg = TrainConfig.from_dict(self.config).replace(data_root=root)
        bundle = datasets.training_subset(cfg, download=False)
        if self.noise is not None:  # the images as they are now must be those trained on
            fingerprint.check_data(self.path, bundle, self.noise, cfg.noise_file,
                                   action=f"reload the data of {self.path}",
                                   fix="train a new run on the data as they are now")
        return bundle

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, method={self.method!r}, epochs={len(self.metrics)}, "
                f"snapshots={self.snapshot_epochs})")


_EXTRA_FIELDS = {"classes": list, "num_classes": int, "n_train_actual": int,
                 "n_test_actual": int, "image_shape": list, "true_labels_known": bool}


def _checked_config(config: Any, path: Path) -> dict:
    """config.json's settings, each checked as a new run's are (TrainConfig.validate, and the
    fine-tuning's FinetuneConfig.validate), so that every command reads one run the same way."""

    def bad(why: str) -> ValueError:
        return ValueError(f"{path} is damaged or was edited: {why}. Restore it from a copy, or "
                          "train the run again with the same flags plus --overwrite")

    if not isinstance(config, dict):
        raise bad(f"it holds {json.dumps(config)[:40]} instead of an object of settings")
    for key, kind in _EXTRA_FIELDS.items():
        v = config.get(key)
        if v is not None and (not isinstance(v, kind) or (kind is int and isinstance(v, bool))):
            raise bad(f"{key} is {v!r}, not a {kind.__name__}")
    if not all(isinstance(c, str) for c in config.get("classes", [])):
        raise bad("classes must be a list of class names")
    method = METHODS.get(config.get("method"))
    plus = method is not None and method.is_fine_tuning
    try:  # a MOIT+ run's settings are its base run's, with the fine-tuning's on top
        base = dict(config, method=config.get("base_method", method.fine_tunes)) if plus \
            else config
        cfg = TrainConfig.from_dict(base).validate()
        if plus:
            ft = config.get("finetune")
            if not isinstance(ft, dict):
                raise ValueError("a MOIT+ run needs its fine-tuning settings (finetune)")
            FinetuneConfig.from_dict(ft).validate()
    except (TypeError, ValueError) as e:
        raise bad(str(e)) from None
    return config if plus else dict(config, **jsonable(cfg.to_dict()))


def load_run(path: str | Path | Run) -> Run:
    """Read a run directory written by :func:`moit_explore.training.train.train` (or its finetune/);
    a Run already read is returned as it is."""
    if isinstance(path, Run):
        return path
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist; pass a folder written by "
                                "`python -m moit_explore train` (e.g. runs/<name>)")
    if not is_run_dir(path):
        raise not_a_run_dir(path)
    check_no_symlinks(path, "read it")
    config = _checked_config(read_json(path / CONFIG_FILE), path / CONFIG_FILE)
    noisy = noise.load_noise(path / NOISE_FILE) if (path / NOISE_FILE).is_file() else None
    n = config.get("n_train_actual")
    if noisy is not None and n is not None and len(noisy) != n:
        raise ValueError(f"{path / NOISE_FILE} holds {len(noisy)} labels, but the run trained on "
                         f"{n} images ({CONFIG_FILE}'s n_train_actual): it is another run's file. "
                         "Restore this run's noise.npz, or train the run again with the same "
                         "flags plus --overwrite")
    emb = path / EMBEDDINGS_DIR
    epochs = sorted(int(m.group(1)) for p in (emb.iterdir() if emb.is_dir() else [])
                    if (m := _SNAPSHOT_RE.match(p.name)))
    return Run(path=path, config=config, metrics=read_metrics(path), noise=noisy,
               snapshot_epochs=epochs, classes=list(config.get("classes", [])))
