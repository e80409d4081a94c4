"""A run directory on disk: its name, creation, lock, and the safe way to open and write its
files (the run's contents, and reading them back, are :mod:`moit_explore.training.runs`).

- :func:`run_dir_path` / :func:`unique_run_dir`: ``root/name`` for a plain folder name only (a
  name cannot reach outside its root);
- :func:`create_run_dir`: a new run directory; ``overwrite`` empties only a folder this package
  wrote (:func:`check_run_dir_only`);
- :func:`lock_run_dir`: the OS lock of a process training in a run directory (``fcntl.flock`` on
  ``.lock``); a folder that is not a run directory is refused before anything is created or
  removed in it; :func:`check_not_in_use` for a reader;
- :func:`atomic_target` / :func:`write_new_file`: writes that never leave a half-written file
  (and, for the latter, never replace one); :func:`open_run_file`: opening without following a
  symbolic link; :func:`check_no_symlinks`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "EMBEDDINGS_DIR",
    "FINAL_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "NOISE_FILE",
    "RUN_FILES",
    "RunDirInUseError",
    "atomic_target",
    "check_no_symlinks",
    "check_not_in_use",
    "check_run_dir_only",
    "create_run_dir",
    "is_run_dir",
    "lock_run_dir",
    "not_a_run_dir",
    "open_run_file",
    "remove_stale_temporaries",
    "run_dir_path",
    "unique_run_dir",
    "write_new_file",
]

CONFIG_FILE = "config.json"
NOISE_FILE = "noise.npz"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
EMBEDDINGS_DIR = "embeddings"
FINAL_FILE = "final.npz"
LOCK_FILE = ".lock"
# what a run directory holds (a MOIT+ run sits in finetune/, or a folder named by --name);
# --overwrite removes only folders of these names and the temporaries of atomic writes
RUN_FILES = frozenset({CONFIG_FILE, NOISE_FILE, METRICS_FILE, CHECKPOINT_FILE, EMBEDDINGS_DIR,
                       "trained_on.json", "train_images.json", LOCK_FILE})
# atomic_target's temporary files: "." + the target's name + "." + mkstemp's 8 characters
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|npz)$")


class RunDirInUseError(FileExistsError):
    """Another process holds the run directory's lock (it is training in it)."""


# --------------------------------------------------------------------------- directories


def run_dir_path(root: str | Path, name: str) -> Path:
    """``root/name``, with ``name`` checked to be a plain folder name."""
    if not isinstance(name, str) or not name or Path(name).name != name \
            or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"run name must be a plain folder name, got {name!r}; "
                         "pass e.g. --name moit-sym40")
    return Path(root).expanduser() / name


def create_run_dir(root: str | Path, name: str, *, overwrite: bool = False) -> Path:
    """Create ``root/name`` for a new run and return it.

    An existing non-empty folder is never reused silently: it raises FileExistsError naming the
    folder and the ways out, unless ``overwrite=True``, which empties it first. Only a run
    directory this package wrote is emptied (:func:`check_run_dir_only`): a folder with a
    symbolic link, a file of another name, or no config.json is refused, touching nothing.
    """
    from moit_explore.training.runs import command  # noqa: PLC0415 -- runs imports this module

    path = run_dir_path(root, name)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link (to {os.readlink(path)}); a run directory "
                         "must be a folder of its own: remove the link or choose another --name")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; choose another --name")
    if path.is_dir() and _has_content(path):
        if not overwrite:
            raise FileExistsError(
                f"run directory {path} already exists and is not empty. Choose another name "
                f"(--name NEW_NAME), replace it (--overwrite)"
                + (f", or continue it ({command('train', '--resume', path)})"
                   if (path / CHECKPOINT_FILE).is_file() else "") + "."
            )
        check_no_symlinks(path, "--overwrite")
        check_run_dir_only(path, "--overwrite")
        _empty_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _has_content(path: Path) -> bool:
    """Whether a folder holds anything besides a run's lock file and the temporaries of a write
    killed before the run's first file was written."""
    names = [p.name for p in path.iterdir()]
    return any(n != LOCK_FILE and not (_TEMP_RE.match(n) and LOCK_FILE in names) for n in names)


def check_run_dir_only(path: str | Path, action: str) -> None:
    """Raise FileExistsError unless ``path`` holds only what a run writes (:data:`RUN_FILES`,
    a MOIT+ run folder, temporaries of atomic writes) and its config.json: ``action`` (e.g.
    --overwrite) would remove files this package did not write."""
    path = Path(path)
    names = sorted(p.name for p in path.iterdir())
    foreign = [n for n in names if n not in RUN_FILES and not _TEMP_RE.match(n)
               and not (is_run_dir(path / n) and (path / n).is_dir())]
    if foreign or CONFIG_FILE not in names:
        what = (f"it holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which a "
                "run does not write" if foreign else f"it has no {CONFIG_FILE}")
        raise FileExistsError(
            f"refusing {action} of {path}: it is not a run directory written by moit_explore "
            f"({what}), and {action} removes only those. Choose another --name, or move those "
            "files away yourself")


def check_no_symlinks(path: str | Path, action: str = "train in it") -> None:
    """Raise ValueError naming the first symbolic link inside ``path`` (the folder itself
    included): a run directory's operations must never reach outside it."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link (to {os.readlink(path)}); refusing to "
                         f"{action}: a run directory must be a folder of its own. Remove the "
                         "link or choose another name")
    if not path.is_dir():
        return
    for top, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            p = Path(top) / name
            if p.is_symlink():
                raise ValueError(f"{p} is a symbolic link (to {os.readlink(p)}); refusing to "
                                 f"{action}: the run directory {path} must hold its own files, "
                                 "and nothing outside it is touched. Remove the link (or "
                                 "replace it by a copy) and try again")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files that a write killed half-way left in ``path`` and its
    ``embeddings/`` (names of :func:`atomic_target`'s form); returns them. Call it only
    while holding the run's lock (another process's temporary file would be live)."""
    removed = []
    for folder in (Path(path), Path(path) / EMBEDDINGS_DIR, Path(path) / "finetune",
                   Path(path) / "finetune" / EMBEDDINGS_DIR):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for p in folder.iterdir():
            if _TEMP_RE.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
    return removed


@contextmanager
def lock_run_dir(path: str | Path, action: str = "train in it", *,
                 create: bool = True) -> Iterator[Path]:
    """Hold the OS lock of run directory ``path`` (created if missing) for the block.

    ``fcntl.flock`` on ``path/.lock``: exclusive, non-blocking; the OS releases it when the
    process exits or dies. Another holder raises :class:`RunDirInUseError`. While it is held,
    symbolic links in the folder are refused and stale temporary files are removed.
    """
    import fcntl  # noqa: PLC0415 -- POSIX only; imported where it is used

    path = Path(path).expanduser()
    if path.is_symlink():
        check_no_symlinks(path, action)
    if not create and not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist; pass a folder written by "
                                "`python -m moit_explore train` (e.g. runs/<name>)")
    # a folder that is not a run's is refused before anything is created or removed in it
    if path.is_dir() and (not create or _has_content(path)) and not is_run_dir(path):
        if not create:
            raise not_a_run_dir(path)
        raise FileExistsError(
            f"{path} exists and is not a run directory (no {CONFIG_FILE}); refusing to {action}: "
            "nothing in it is touched. Choose another --name (or another folder)")
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirInUseError(
                f"run directory {path} is in use: another process is training in it (it "
                "holds its lock). Wait for it to finish, or train into another --name"
            ) from None
        check_no_symlinks(path, action)
        remove_stale_temporaries(path)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def check_not_in_use(path: str | Path, action: str) -> None:
    """Raise :class:`RunDirInUseError` when a process holds ``path``'s lock (it trains there and
    its files are about to change); creates nothing."""
    import fcntl  # noqa: PLC0415 -- POSIX only; imported where it is used

    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return  # no lock file: nothing ever trained there, or not a run directory
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunDirInUseError(
            f"run directory {path} is in use: a process is training in it, so its final "
            f"features are about to change; refusing to {action}. Wait for it to finish and "
            "try again") from None
    finally:
        os.close(fd)


def unique_run_dir(root: str | Path, name: str) -> Path:
    """``root/name`` if free (missing or empty), else the first free ``root/name-2``, ``-3`` ...
    (``name`` must be a plain folder name, as :func:`run_dir_path` checks)."""
    root = Path(root).expanduser()
    candidate, n = run_dir_path(root, name), 1
    while candidate.exists() and (not candidate.is_dir() or _has_content(candidate)):
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate


def _empty_dir(path: Path) -> None:
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue  # held by this process
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds a run's config.json."""
    return (Path(path) / CONFIG_FILE).is_file()


def not_a_run_dir(path: Path) -> ValueError:
    """The error for a folder that is not a run directory, naming the run folders inside it."""
    subs = sorted(p.name for p in path.iterdir() if is_run_dir(p)) if path.is_dir() else []
    hint = f" It contains run directories: {', '.join(subs[:8])}." if subs else ""
    return ValueError(f"{path} is not a run directory (no {CONFIG_FILE}).{hint} Pass a folder "
                      "written by `python -m moit_explore train`")


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


def write_new_file(path: str | Path, write: Any, flag: str = "a new file name") -> Path:
    """Create ``path`` with ``write(tmp_path)``, never replacing a file: the bytes go to a
    temporary file in the same folder, which is then hard-linked to ``path`` (an atomic step
    that fails when ``path`` exists). A failed write (a full disk) leaves nothing behind.
    ``flag``: what the FileExistsError tells the user to pass instead."""
    path = Path(path).expanduser()
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"{path} exists; pass {flag} (this never replaces a file)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o644)
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp_path, path)
        except FileExistsError:
            raise FileExistsError(f"{path} exists; pass {flag} (this never replaces a file)"
                                  ) from None
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def open_run_file(path: str | Path, mode: str = "rb") -> Any:
    """Open a file of a run directory without following a symbolic link (a link planted in a
    run directory must not make a run read or write elsewhere): modes "rb" and "ab"."""
    path = Path(path)
    flags = {"rb": os.O_RDONLY,
             "ab": os.O_WRONLY | os.O_APPEND | os.O_CREAT}[mode] | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link (to {os.readlink(path)}); a run "
                             "directory's files are never read or written through a link. "
                             "Replace it by the file itself") from None
        if isinstance(e, FileNotFoundError):
            raise FileNotFoundError(f"{path} does not exist") from None
        raise
    return os.fdopen(fd, mode)
