"""Synthetic label noise, made as the MOIT release makes it (spec §6).

Every draw comes from ``numpy.random.default_rng(seed)``, so the same labels, kind, rate and
seed give bit-for-bit the same noisy labels on every machine. The input labels are never
modified.

Kinds:

- ``"none"``: no noise (``rate`` must be 0).
- ``"symmetric"``: exactly ``floor(rate * N)`` samples, chosen at random, each get a label drawn
  uniformly from the ``C - 1`` WRONG classes, so ``rate`` is the fraction of wrong labels.
- ``"asymmetric"``: each sample of a source class of a flip map ``{src: dst}`` flips to ``dst``
  independently with probability ``rate``. The map is the data set's standard one (CIFAR-10,
  CIFAR-100 superclass cycles, Fashion-MNIST) or one given as ``flip_map``.

Labels read from a file (CIFAR-10N and the like) become a :class:`NoisyLabels` of kind
``"file"`` through :func:`labels_from_file`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moit_explore.maths.validation import check_float, check_int, check_labels

__all__ = [
    "ASYMMETRIC_DATASETS",
    "DATASET_NAMES",
    "has_standard_flip_map",
    "CIFAR10_FLIP_MAP",
    "CIFAR100_COARSE",
    "FASHION_MNIST_FLIP_MAP",
    "NOISE_KINDS",
    "NoisyLabels",
    "cifar100_flip_map",
    "inject_noise",
    "labels_from_file",
    "load_noise",
    "read_label_file",
    "realised_transition",
    "save_noise",
    "superclass_flip_map",
]

NOISE_KINDS = ("none", "symmetric", "asymmetric")

# spec §6: truck->automobile, bird->airplane, deer->horse, cat<->dog
CIFAR10_FLIP_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
# this project's choice: T-shirt/top<->Shirt, Pullover->Coat, Sandal->Sneaker, Ankle boot->Sandal
FASHION_MNIST_FLIP_MAP: dict[int, int] = {0: 6, 6: 0, 2: 4, 5: 7, 9: 5}

# The standard CIFAR-100 fine -> coarse (superclass) table: CIFAR100_COARSE[fine] = coarse.
# Used when no coarse labels are given; every superclass holds exactly 5 fine classes.
CIFAR100_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip

# the built-in data sets, and every spelling of their names: the one alias table of the package
DATASET_NAMES = ("digits", "fashion-mnist", "cifar10", "cifar100")
_DATASET_ALIASES = {
    "digits": "digits",
    "fashion-mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar100": "cifar100",
    "cifar-100": "cifar100",
}
# the data sets with a standard asymmetric flip map (spec §6)
ASYMMETRIC_DATASETS = ("cifar10", "cifar100", "fashion-mnist")


@dataclass
class NoisyLabels:
    """Given (noisy) labels next to the clean ones they were made from.

    noisy: int64 (N,) the labels training sees.
    clean: int64 (N,) a copy of the clean labels.
    is_noisy: bool (N,) ``noisy != clean``.
    transition: float64 (C, C) realised: ``T[i, j]`` = fraction of class-i samples labelled j
        (rows of classes with no samples are zero).
    kind: "none" | "symmetric" | "asymmetric" | "file".
    rate: the requested rate (for "file": the realised fraction of wrong labels).
    seed: the generator's seed (-1 for "file").
    """

    noisy: np.ndarray
    clean: np.ndarray
    is_noisy: np.ndarray
    transition: np.ndarray
    kind: str
    rate: float
    seed: int

    @property
    def actual_rate(self) -> float:
        """The realised fraction of wrong labels (0.0 for no samples)."""
        return float(self.is_noisy.mean()) if self.is_noisy.size else 0.0

    @property
    def num_classes(self) -> int:
        return int(self.transition.shape[0])

    def __len__(self) -> int:
        return int(self.noisy.shape[0])


# ----------------------------------------------------------------------------- validation


def _check_num_classes(num_classes: int) -> int:
    return check_int("num_classes", num_classes, 2)  # label noise needs a wrong class


def _check_rate(rate: float) -> float:
    return check_float("rate", rate, 0.0, 1.0, high_open=True)


def _check_flip_map(flip_map: dict, num_classes: int) -> dict[int, int]:
    if not isinstance(flip_map, dict) or not flip_map:
        raise ValueError(f"flip_map must be a non-empty dict {{source_class: target_class}}, "
                         f"got {flip_map!r}")
    out: dict[int, int] = {}
    for src, dst in flip_map.items():
        for c in (src, dst):
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise ValueError(f"flip_map classes must be integers, got {c!r} in "
                                 f"{src!r}: {dst!r}")
            if not 0 <= c < num_classes:
                raise ValueError(f"flip_map names class {int(c)}, which is not in "
                                 f"[0, {num_classes}) for num_classes={num_classes}")
        if src == dst:
            raise ValueError(f"flip_map maps class {int(src)} to itself; a flip must change "
                             f"the class (drop that entry)")
        out[int(src)] = int(dst)
    return out


def canonical_dataset(name: object) -> str | None:
    """The built-in data set that ``name`` spells (case-insensitive, "_" as "-"), or None.
    No stripping: "cifar10 " is not a name, so no spelling escapes a check made on the
    canonical names (the trusted data root among them)."""
    if not isinstance(name, str):
        return None
    return _DATASET_ALIASES.get(name.lower().replace("_", "-"))


def has_standard_flip_map(dataset: str) -> bool:
    """Whether ``dataset`` (any spelling of its name) has a standard asymmetric flip map."""
    return canonical_dataset(dataset) in ASYMMETRIC_DATASETS


def _canonical_dataset(dataset: str) -> str:
    name = canonical_dataset(dataset)
    if name is None:
        raise ValueError(f"no standard asymmetric flip map for dataset {dataset!r}; known: "
                         f"{', '.join(ASYMMETRIC_DATASETS)}; or pass flip_map={{src: dst}}")
    return name


# ----------------------------------------------------------------------------- flip maps


def superclass_flip_map(fine_to_coarse) -> dict[int, int]:
    """Flip map cycling inside superclasses: the fine classes of each superclass in index order,
    each flips to the next, the last to the first. ``fine_to_coarse``: (C,) int, -1 = unknown
    (such a class is left out of every cycle). Superclasses with one fine class do not flip."""
    f2c = np.asarray(fine_to_coarse, dtype=np.int64)
    flip: dict[int, int] = {}
    for g in np.unique(f2c[f2c >= 0]):
        fines = np.flatnonzero(f2c == g)
        if fines.size < 2:
            continue
        for a, b in zip(fines, np.roll(fines, -1), strict=True):
            flip[int(a)] = int(b)
    return flip


def cifar100_flip_map(coarse_labels=None, fine_labels=None,
                      num_classes: int = 100) -> dict[int, int]:
    """The CIFAR-100 asymmetric map (spec §6): each fine class flips to the next fine class of its
    superclass (the last to the first).

    The grouping comes from ``coarse_labels`` (N,) paired with ``fine_labels`` (N,) when given,
    else from the standard table :data:`CIFAR100_COARSE`. Fine classes absent from the given
    labels take their superclass from the standard table when ``num_classes == 100``.
    """
    if coarse_labels is None:
        if num_classes != 100:
            raise ValueError(f"the standard CIFAR-100 superclass table has 100 classes but "
                             f"num_classes={num_classes}; pass coarse_labels to define the groups")
        return superclass_flip_map(CIFAR100_COARSE)
    if fine_labels is None:
        raise ValueError("coarse_labels need the matching fine labels to define the grouping")
    fine = np.asarray(fine_labels, dtype=np.int64)
    coarse = check_labels(coarse_labels, name="coarse_labels")
    if coarse.shape != fine.shape:
        raise ValueError(f"coarse_labels has {coarse.shape[0]} entries but the labels have "
                         f"{fine.shape[0]}; pass the coarse label of every sample")
    f2c = np.full(num_classes, -1, dtype=np.int64)
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0) if fine.size else np.zeros((0, 2))
    for f, c in pairs:
        if f2c[f] not in (-1, c):
            raise ValueError(f"fine class {int(f)} appears with two coarse labels "
                             f"({int(f2c[f])} and {int(c)}); coarse_labels must be a function "
                             f"of the fine label")
        f2c[f] = c
    if num_classes == 100:  # fill unseen fine classes (e.g. in a small subset) from the table
        missing = f2c < 0
        f2c[missing] = np.asarray(CIFAR100_COARSE)[missing]
    return superclass_flip_map(f2c)


def _standard_flip_map(dataset: str, num_classes: int, clean: np.ndarray,
                       coarse_labels) -> dict[int, int]:
    name = _canonical_dataset(dataset)
    if name == "cifar10":
        if num_classes != 10:
            raise ValueError(f"the CIFAR-10 flip map needs num_classes=10, got {num_classes}")
        return dict(CIFAR10_FLIP_MAP)
    if name == "fashion-mnist":
        if num_classes != 10:
            raise ValueError(f"the Fashion-MNIST flip map needs num_classes=10, got {num_classes}")
        return dict(FASHION_MNIST_FLIP_MAP)
    if name == "cifar100":
        return cifar100_flip_map(coarse_labels, clean, num_classes)
    raise ValueError(f"{dataset!r} has no standard asymmetric flip map; pass one, e.g. "
                     f"flip_map={{3: 8, 8: 3, 7: 1}} for digits")


# ----------------------------------------------------------------------------- noise


def realised_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """``T[i, j]`` = fraction of class-i samples (by ``clean``) labelled ``j`` in ``noisy``.

    clean, noisy: int (N,). Returns float64 (C, C); rows of absent classes are zero.
    """
    counts = np.bincount(clean * num_classes + noisy, minlength=num_classes * num_classes)
    counts = counts.reshape(num_classes, num_classes).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _floor_count(rate: float, n: int) -> int:
    # a small tolerance so that e.g. 0.29 * 100 = 28.999999999999996 gives 29, not 28
    return int(math.floor(rate * n + 1e-9))


def inject_noise(clean_labels, kind: str, rate: float, num_classes: int, seed: int = 42, *,
                 dataset: str | None = None, flip_map: dict[int, int] | None = None,
                 coarse_labels: np.ndarray | None = None) -> NoisyLabels:
    """Corrupt ``clean_labels`` (N,) with synthetic noise (spec §6); see the module docstring.

    kind: "none" (``rate`` must be 0) | "symmetric" | "asymmetric".
    rate: in [0, 1).
    dataset: "cifar10" | "cifar100" | "fashion-mnist" | "digits" (case-insensitive), picks the
        standard asymmetric map; ``flip_map`` ``{src: dst}`` takes precedence over it.
    coarse_labels: (N,) superclass of every sample, defines the CIFAR-100 (or any superclass)
        cycle; used by "asymmetric" when no ``flip_map`` is given.
    Returns a :class:`NoisyLabels`; ``clean_labels`` itself is never modified.
    """
    num_classes = _check_num_classes(num_classes)
    clean = check_labels(clean_labels, num_classes=num_classes)
    rate = _check_rate(rate)
    kind = str(kind).strip().lower() if isinstance(kind, str) else kind
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; valid kinds: {', '.join(NOISE_KINDS)}")
    if flip_map is not None and kind != "asymmetric":
        raise ValueError(f"flip_map is only used with kind='asymmetric', not {kind!r}")
    seed = int(seed)
    rng = np.random.default_rng(seed)
    n = clean.shape[0]
    noisy = clean.copy()

    if kind == "none":
        if rate != 0.0:
            raise ValueError(f"kind='none' makes no noise, so rate must be 0, got {rate}; "
                             f"pick kind='symmetric' (or another) for rate > 0")

    elif kind == "symmetric":
        m = _floor_count(rate, n)
        idx = rng.choice(n, size=m, replace=False)
        # an offset in 1..C-1 added modulo C is uniform over the C-1 wrong classes
        offset = rng.integers(1, num_classes, size=m)
        noisy[idx] = (clean[idx] + offset) % num_classes

    elif kind == "asymmetric":
        if flip_map is not None:
            fmap = _check_flip_map(flip_map, num_classes)
        elif dataset is not None:
            fmap = _standard_flip_map(dataset, num_classes, clean, coarse_labels)
        elif coarse_labels is not None:
            fmap = cifar100_flip_map(coarse_labels, clean, num_classes)
        else:
            raise ValueError("kind='asymmetric' needs a flip map: pass dataset= (one of "
                             f"{', '.join(ASYMMETRIC_DATASETS[:3])}), flip_map={{src: dst}} or "
                             "coarse_labels=")
        target = np.arange(num_classes, dtype=np.int64)
        for src, dst in fmap.items():
            target[src] = dst
        # one uniform per sample, drawn for all samples so the draw does not depend on the map
        u = rng.random(n)
        flip = (target[clean] != clean) & (u < rate)
        noisy[flip] = target[clean[flip]]


    return NoisyLabels(
        noisy=noisy,
        clean=clean,
        is_noisy=noisy != clean,
        transition=realised_transition(clean, noisy, num_classes),
        kind=kind,
        rate=rate,
        seed=seed,
    )


# ----------------------------------------------------------------------------- files


def read_label_file(path: str | Path) -> np.ndarray:
    """Labels from a ``.npy`` integer array or a ``.csv`` with a ``label`` column (or a single
    column, with or without a header). Returns int64 (N,)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # an object array, a damaged header, a truncated file ...
            raise ValueError(
                f"{path}: not a readable NumPy file of integer labels ({type(e).__name__}; "
                "damaged, truncated, or an array of Python objects). Write the labels with "
                "numpy.save(path, labels.astype(numpy.int64)), or as a CSV with a 'label' "
                "column") from None
        if not isinstance(arr, np.ndarray) or arr.ndim != 1:
            raise ValueError(f"{path}: expected a 1-D array of labels, got shape {arr.shape}")
        if arr.size and arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                bad = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise ValueError(f"{path}: label {arr[bad]} at index {bad} is not a class index "
                                 "(labels are 0..C-1); fix that entry")
            if not np.all(arr == np.round(arr)):
                raise ValueError(f"{path}: labels must be whole numbers, got dtype {arr.dtype}")
        elif arr.size and arr.dtype.kind not in "iu":
            raise ValueError(f"{path}: labels must be integers, got dtype {arr.dtype}")
        return arr.astype(np.int64)
    if suffix == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.reader(f) if r and any(x.strip() for x in r)]
        except UnicodeDecodeError as e:
            line = path.read_bytes()[:e.start].count(b"\n") + 1
            raise ValueError(f"{path}: line {line}: bytes that are not UTF-8 text (0x"
                             f"{e.object[e.start:e.start + 1].hex()}); a label file is text: "
                             "one integer label per line (or a 'label' column)") from None
        if not rows:
            raise ValueError(f"{path}: empty CSV; expected a 'label' column or a single column")
        header = [h.strip().lower() for h in rows[0]]
        if "label" in header:
            col, body = header.index("label"), rows[1:]
        elif len(header) == 1:
            col = 0
            body = rows[1:] if not _is_int(rows[0][0]) else rows
        else:
            raise ValueError(f"{path}: CSV has columns {rows[0]} but none is named 'label'; "
                             f"name the label column 'label' or write a single column")
        out = np.empty(len(body), dtype=np.int64)
        for i, r in enumerate(body):
            value = r[col].strip() if col < len(r) else ""
            line = i + 1 + (len(rows) - len(body))
            if not _is_int(value):
                raise ValueError(f"{path}: line {line}: label {value!r} is not an integer")
            number = int(value) if value.lstrip("+-").isdigit() else int(float(value))
            if not -(2**63) <= number < 2**63:
                raise ValueError(f"{path}: line {line}: label {value!r} is far too large for a "
                                 "class index (labels are 0..C-1); fix that line")
            out[i] = number
        return out
    raise ValueError(f"{path}: unsupported label file type {suffix!r}; use .npy or .csv")


def _is_int(text: str) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    return math.isfinite(v) and v == int(v)


def labels_from_file(path: str | Path, clean_labels, num_classes: int) -> NoisyLabels:
    """Given labels read from ``path`` (see :func:`read_label_file`) paired with the clean ones
    (kind "file"; ``rate`` is the realised wrong fraction, ``seed`` is -1)."""
    num_classes = _check_num_classes(num_classes)
    clean = check_labels(clean_labels, num_classes=num_classes, name="clean_labels")
    raw = read_label_file(path)
    if raw.shape[0] != clean.shape[0]:
        raise ValueError(f"{path}: has {raw.shape[0]} labels but the training set has "
                         f"{clean.shape[0]}; expected length {clean.shape[0]}")
    noisy = check_labels(raw, num_classes=num_classes, name=f"labels in {path}")
    is_noisy = noisy != clean
    return NoisyLabels(
        noisy=noisy,
        clean=clean,
        is_noisy=is_noisy,
        transition=realised_transition(clean, noisy, num_classes),
        kind="file",
        rate=float(is_noisy.mean()) if is_noisy.size else 0.0,
        seed=-1,
    )


def save_noise(path: str | Path, noise: NoisyLabels) -> None:
    """Write ``noise`` to ``.npz`` (keys clean, noisy, is_noisy, transition, kind, rate, seed)."""
    np.savez(
        path,
        clean=noise.clean,
        noisy=noise.noisy,
        is_noisy=noise.is_noisy,
        transition=noise.transition,
        kind=np.array(noise.kind),
        rate=np.array(noise.rate, dtype=np.float64),
        seed=np.array(noise.seed, dtype=np.int64),
    )


def load_noise(path: str | Path) -> NoisyLabels:
    """Read a :class:`NoisyLabels` written by :func:`save_noise`. Files holding only clean and
    noisy get the rest recomputed (kind "file")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"noise file {path} does not exist")
    try:
        return _load_noise(path)
    except _MissingArrays:
        raise
    except Exception as e:  # BadZipFile, EOFError, OSError, an object array ...
        raise ValueError(f"{path} is damaged (not a readable .npz of labels: "
                         f"{type(e).__name__}); it holds the run's given and true labels: "
                         "restore it from a copy, or train the run again with the same flags "
                         "plus --overwrite") from None


class _MissingArrays(ValueError):
    pass


def _load_noise(path: Path) -> NoisyLabels:
    with np.load(path, allow_pickle=False) as z:
        missing = {"clean", "noisy"} - set(z.files)
        if missing:
            raise _MissingArrays(f"{path}: missing array(s) {sorted(missing)}; expected the keys "
                             f"written by save_noise")
        clean = z["clean"].astype(np.int64)
        noisy = z["noisy"].astype(np.int64)
        if "transition" in z.files:
            transition = z["transition"].astype(np.float64)
        else:
            c = int(max(clean.max(initial=0), noisy.max(initial=0))) + 1
            transition = realised_transition(clean, noisy, max(c, 2))
        is_noisy = z["is_noisy"].astype(bool) if "is_noisy" in z.files else noisy != clean
        kind = str(z["kind"]) if "kind" in z.files else "file"
        rate = float(z["rate"]) if "rate" in z.files else float(is_noisy.mean() if
                                                                   is_noisy.size else 0.0)
        seed = int(z["seed"]) if "seed" in z.files else -1
    return NoisyLabels(noisy=noisy, clean=clean, is_noisy=is_noisy, transition=transition,
                       kind=kind, rate=rate, seed=seed)
