"""Data sets as in-memory NumPy arrays: :func:`load_dataset` gives a :class:`DatasetBundle`.

Names:

- ``"digits"``: scikit-learn's bundled 8x8 digits (always there), a fixed stratified split of
  1437 train / 360 test images, grey values 0..16 scaled to 0..255.
- ``"fashion-mnist"``: the IDX ``.gz`` files from ``<root>/fashion-mnist/``, else Debian's
  ``dataset-fashion-mnist`` package (:data:`FASHION_MNIST_SYSTEM_DIR`), else torchvision's copy
  under ``<root>/FashionMNIST/raw/`` (downloaded there when ``download=True``).
- ``"cifar10"`` / ``"cifar100"``: torchvision's on-disk pickles, ``<root>/cifar-10-batches-py/``
  and ``<root>/cifar-100-python/`` (downloaded by torchvision when ``download=True``).
  CIFAR-100 also gives the 20 superclass labels (``train_coarse`` / ``test_coarse``).
- ``"imagefolder:<path>"``: your own images, one folder per class
  (:mod:`moit_explore.training.image_folders`); the folder labels' truth is unknown
  (``true_labels_known=False``).

Images are uint8 (N, H, W, C); labels int64. Missing files raise :class:`DataNotFoundError`,
whose message lists every place looked at and the one command that gets the data.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moit_explore.maths.noise import DATASET_NAMES as BUILT_IN_DATASETS
from moit_explore.maths.noise import (
    NoisyLabels,
    canonical_dataset,
    inject_noise,
    read_label_file,
    realised_transition,
)
from moit_explore.training import image_folders

if TYPE_CHECKING:
    from moit_explore.training.config import TrainConfig

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_SYSTEM_DIR",
    "DataNotFoundError",
    "DatasetBundle",
    "channel_stats",
    "fetch",
    "load_data",
    "load_dataset",
    "prepare_inputs",
    "read_idx",
    "subset",
    "training_subset",
]

DATASET_NAMES = (*BUILT_IN_DATASETS, "imagefolder:<path>")
# Debian's dataset-fashion-mnist package puts the IDX files here (tests monkeypatch it)
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
_CIFAR100_DIR = "cifar-100-python"
_CIFAR100_FILES = ["train", "test", "meta"]
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


class DataNotFoundError(FileNotFoundError):
    """A data set's files are missing; the message says where we looked and how to get them."""


@dataclass
class DatasetBundle:
    """A data set in memory.

    train_images / test_images: uint8 (N, H, W, C), C = 1 for grayscale (M may be 0).
    train_labels / test_labels: int64 labels as shipped (the true labels of benchmark sets; the
        folder labels for imagefolder, whose truth is unknown).
    classes: class names; mean / std: per-channel statistics of the train images in [0, 1].
    train_coarse / test_coarse: CIFAR-100 superclass labels.
    given_train_labels: labels read from a file (CIFAR-10N etc.) that replace synthetic noise.
    train_paths: imagefolder: the file of each train image.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_coarse: np.ndarray | None = None
    test_coarse: np.ndarray | None = None
    given_train_labels: np.ndarray | None = None
    true_labels_known: bool = True
    train_paths: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(int(s) for s in self.train_images.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"DatasetBundle({self.name!r}, train={self.train_images.shape}, "
                f"test={self.test_images.shape}, classes={self.num_classes})")


# ----------------------------------------------------------------------------- helpers


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of uint8 (N, H, W, C) images.

    Exact and fast: a 256-bin histogram per channel instead of a float copy of the data.
    """
    c = images.shape[-1]
    if images.size == 0:
        return (0.0,) * c, (1.0,) * c
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for ch in range(c):
        hist = np.bincount(np.ascontiguousarray(images[..., ch]).ravel(), minlength=256)
        hist = hist.astype(np.float64) / hist.sum()
        m = float(hist @ values)
        means.append(m)
        stds.append(float(np.sqrt(max(hist @ (values - m) ** 2, 0.0))))
    return tuple(means), tuple(stds)


def _make_bundle(name: str, train_x, train_y, test_x, test_y, classes, **extra) -> DatasetBundle:
    mean, std = channel_stats(train_x)
    return DatasetBundle(
        name=name,
        train_images=np.ascontiguousarray(train_x, dtype=np.uint8),
        train_labels=np.asarray(train_y, dtype=np.int64),
        test_images=np.ascontiguousarray(test_x, dtype=np.uint8),
        test_labels=np.asarray(test_y, dtype=np.int64),
        classes=list(classes),
        mean=mean,
        std=std,
        **extra,
    )


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 (N, H, W, C) to (N, size, size, C)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import torch
    import torch.nn.functional as F

    out = np.empty((images.shape[0], size, size, images.shape[3]), dtype=np.uint8)
    for s in range(0, images.shape[0], 4096):
        x = torch.from_numpy(images[s:s + 4096]).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
        out[s:s + 4096] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, one of: {', '.join(DATASET_NAMES)}")
    if name.lower().startswith("imagefolder:"):
        return "imagefolder"
    canonical = canonical_dataset(name)
    if canonical is None:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return canonical


# ----------------------------------------------------------------------------- digits


def _load_digits() -> DatasetBundle:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    # grey values 0..16 -> 0..255
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_SIZE,
                              stratify=labels, random_state=DIGITS_SPLIT_SEED)
    tr, te = np.sort(tr), np.sort(te)
    return _make_bundle("digits", images[tr], labels[tr], images[te], labels[te],
                        [str(i) for i in range(10)])


# ----------------------------------------------------------------------------- IDX (MNIST-style)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed when its name ends in .gz), validating its header.

    ndim: the expected number of dimensions (3 for images, 1 for labels), checked when given.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read ({e}); the file is corrupt, delete it and "
                         f"fetch it again") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes); the file is "
                         f"corrupt, delete it and fetch it again")
    zero, dtype_code, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or dims == 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000080"
                         f"{ndim or 'N'} for uint8 data); not an IDX file or corrupt")
    if ndim is not None and dims != ndim:
        raise ValueError(f"{path}: IDX file has {dims} dimension(s), expected {ndim} "
                         f"(magic 0x{raw[:4].hex()}); is it the right file?")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header; the file is corrupt")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes of data) but "
                         f"the file holds {len(raw) - header}; the file is truncated or corrupt")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _fashion_mnist_dirs(root: Path) -> list[Path]:
    return [root / "fashion-mnist", FASHION_MNIST_SYSTEM_DIR, root / "FashionMNIST" / "raw"]


def _find_fashion_mnist(root: Path) -> Path | None:
    for folder in _fashion_mnist_dirs(root):
        if all(_find_idx(folder, stem) for stem in _FMNIST_FILES.values()):
            return folder
    return None


def _fashion_mnist_missing(root: Path, cause: Exception | None = None) -> DataNotFoundError:
    looked = "\n".join(f"  {d}/{{{','.join(_FMNIST_FILES.values())}}}[.gz]"
                       for d in _fashion_mnist_dirs(root))
    msg = (f"Fashion-MNIST not found. Looked in:\n{looked}\n"
           f"Get it with: sudo apt-get install dataset-fashion-mnist   (or: make data, or "
           f"python -m moit_explore fetch fashion-mnist on a networked machine)")
    if cause is not None:
        msg += f"\nThe download failed: {cause}"
    return DataNotFoundError(msg)


def _download_fashion_mnist(root: Path) -> Path:
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as e:  # no network, server down...: the message says what to do instead
        raise _fashion_mnist_missing(root, e) from e
    found = _find_fashion_mnist(root)
    if found is None:
        raise _fashion_mnist_missing(root)
    return found


def _load_fashion_mnist(root: Path, download: bool) -> DatasetBundle:
    folder = _find_fashion_mnist(root)
    if folder is None:
        if not download:
            raise _fashion_mnist_missing(root)
        folder = _download_fashion_mnist(root)
    parts = {}
    for key, stem in _FMNIST_FILES.items():
        path = _find_idx(folder, stem)
        parts[key] = read_idx(path, ndim=3 if key.endswith("images") else 1)
    for split in ("train", "test"):
        x, y = parts[f"{split}_images"], parts[f"{split}_labels"]
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{folder}: {split} has {x.shape[0]} images but {y.shape[0]} labels; "
                             f"the files do not belong together, fetch them again")
        if y.size and y.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{folder}: {split} labels go up to {int(y.max())}, expected 0..9")
    return _make_bundle("fashion-mnist", parts["train_images"][..., None], parts["train_labels"],
                        parts["test_images"][..., None], parts["test_labels"],
                        FASHION_MNIST_CLASSES)


# ----------------------------------------------------------------------------- CIFAR


def _unpickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (the files are Python 2 pickles)."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except Exception as e:
        raise ValueError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); the file is "
                         f"corrupt, delete the folder and fetch it again") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _names(values) -> list[str]:
    return [v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values]


def _cifar_rows(d: dict, path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", label_key):
        if key not in d:
            raise ValueError(f"{path}: no {key!r} entry (has {sorted(d)}); not a CIFAR batch file")
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072)")
    labels = np.asarray(d[label_key], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} {label_key}")
    # rows are 1024 R, 1024 G, 1024 B values (CHW) -> NHWC
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_missing(name: str, folder: Path, files: list[str],
                   cause: Exception | None = None) -> DataNotFoundError:
    missing = [f for f in files if not (folder / f).is_file()]
    url = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" if name == "cifar10"
           else "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")
    msg = (f"{name} not found. Looked in {folder}/ for {', '.join(files)} "
           f"(missing: {', '.join(missing) or 'none'}).\n"
           f"Get it with: python -m moit_explore fetch {name} --root {folder.parent}  (needs "
           f"network; without it, run that on a networked machine and copy its {folder.name}/ "
           f"folder to {folder.parent}/, or extract {url} into {folder.parent}/)")
    if cause is not None:
        msg += f"\nThe download failed: {type(cause).__name__}: {cause}"
    return DataNotFoundError(msg)


def _ensure_cifar(name: str, root: Path, download: bool) -> Path:
    folder, files = ((root / _CIFAR10_DIR, _CIFAR10_FILES) if name == "cifar10"
                     else (root / _CIFAR100_DIR, _CIFAR100_FILES))
    if all((folder / f).is_file() for f in files):
        return folder
    if not download:
        raise _cifar_missing(name, folder, files)
    try:
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR10 if name == "cifar10" else CIFAR100)(str(root), train=True, download=True)
    except Exception as e:  # no network here is the usual case
        raise _cifar_missing(name, folder, files, e) from e
    if not all((folder / f).is_file() for f in files):
        raise _cifar_missing(name, folder, files)
    return folder


def _load_cifar10(root: Path, download: bool) -> DatasetBundle:
    folder = _ensure_cifar("cifar10", root, download)
    xs, ys = [], []
    for f in _CIFAR10_FILES[:5]:
        x, y = _cifar_rows(_unpickle(folder / f), folder / f, "labels")
        xs.append(x)
        ys.append(y)
    test_x, test_y = _cifar_rows(_unpickle(folder / "test_batch"), folder / "test_batch", "labels")
    meta = _unpickle(folder / "batches.meta")
    if "label_names" not in meta:
        raise ValueError(f"{folder / 'batches.meta'}: no 'label_names' entry")
    return _make_bundle("cifar10", np.concatenate(xs), np.concatenate(ys), test_x, test_y,
                        _names(meta["label_names"]))


def _load_cifar100(root: Path, download: bool) -> DatasetBundle:
    folder = _ensure_cifar("cifar100", root, download)
    parts = {}
    for split in ("train", "test"):
        d = _unpickle(folder / split)
        x, y = _cifar_rows(d, folder / split, "fine_labels")
        _, coarse = _cifar_rows(d, folder / split, "coarse_labels")
        parts[split] = (x, y, coarse)
    meta = _unpickle(folder / "meta")
    if "fine_label_names" not in meta:
        raise ValueError(f"{folder / 'meta'}: no 'fine_label_names' entry")
    return _make_bundle("cifar100", parts["train"][0], parts["train"][1], parts["test"][0],
                        parts["test"][1], _names(meta["fine_label_names"]),
                        train_coarse=parts["train"][2], test_coarse=parts["test"][2])


# ----------------------------------------------------------------------------- public API


def load_dataset(name: str, root: str | Path = "data", *, download: bool = True,
                 image_size: int | None = None, noisy_labels: str | Path | None = None,
                 channels: int = 3, progress: bool = False) -> DatasetBundle:
    """Load a data set into memory (see the module docstring for the names and where files
    are looked for).

    root: folder holding the data sets (``data/`` of the repository by default).
    download: fetch missing files with torchvision (needs network).
    image_size: resize to (image_size, image_size); ``None`` keeps the native size
        (imagefolder: 32).
    noisy_labels: a ``.npy`` / ``.csv`` file with one label per train image; becomes
        ``given_train_labels`` (validated length and range).
    channels: imagefolder only: 3 = RGB (default), 1 = grayscale.
    progress: imagefolder only: a tqdm bar while reading images.
    """
    kind = _canonical_name(name)
    root = Path(root).expanduser()
    if kind == "digits":
        bundle = _load_digits()
    elif kind == "fashion-mnist":
        bundle = _load_fashion_mnist(root, download)
    elif kind == "cifar10":
        bundle = _load_cifar10(root, download)
    elif kind == "cifar100":
        bundle = _load_cifar100(root, download)
    else:
        try:
            folder = image_folders.read_image_folder(name.split(":", 1)[1], image_size,
                                                     channels, progress)
        except FileNotFoundError as e:
            raise DataNotFoundError(str(e)) from None
        bundle = _make_bundle(f"imagefolder:{folder.path}", folder.train_images,
                              folder.train_labels, folder.test_images, folder.test_labels,
                              folder.classes, true_labels_known=False,
                              train_paths=folder.train_paths)
        image_size = None  # already resized

    if image_size is not None and bundle.train_images.shape[1:3] != (image_size, image_size):
        if int(image_size) < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        train_x = _resize(bundle.train_images, int(image_size))
        mean, std = channel_stats(train_x)
        bundle = replace(bundle, train_images=train_x, mean=mean, std=std,
                         test_images=_resize(bundle.test_images, int(image_size)))

    if noisy_labels is not None:
        given = read_label_file(noisy_labels)
        n = bundle.train_labels.shape[0]
        if given.shape[0] != n:
            raise ValueError(f"{noisy_labels}: has {given.shape[0]} labels but {bundle.name} has "
                             f"{n} training images; expected length {n}: one label per image "
                             "of the FULL training set, in its order (a subset, --n-train, "
                             "takes its labels from the file together with its images)")
        if given.size and (given.min() < 0 or given.max() >= bundle.num_classes):
            raise ValueError(f"{noisy_labels}: labels must lie in [0, {bundle.num_classes}) for "
                             f"{bundle.num_classes} classes; found {int(given.min())}.."
                             f"{int(given.max())}")
        bundle.given_train_labels = given
    return bundle


def _stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, per class proportional to its frequency (largest remainder), sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = n * counts / counts.sum()
    take = np.floor(quota).astype(np.int64)
    # hand out the rest by the largest fractional part, ties to the lower class index
    order = np.lexsort((np.arange(len(classes)), -(quota - take)))
    take[order[: n - int(take.sum())]] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(t), replace=False)
              for c, t in zip(classes, take, strict=True) if t > 0]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def subset(bundle: DatasetBundle, n_train: int | None = None, n_test: int | None = None,
           seed: int = 0) -> DatasetBundle:
    """A stratified, deterministic subsample: every class keeps its share of ``n_train`` /
    ``n_test`` (``None``, or a number >= the size, keeps the split whole). Coarse labels, paths
    and given labels follow; mean / std are recomputed from the new train images."""
    for what, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and (isinstance(n, bool) or int(n) != n or n < 0):
            raise ValueError(f"{what} must be a non-negative integer or None, got {n!r}")
    rng = np.random.default_rng(seed)
    out = replace(bundle)
    # what follows each split's images when it is subset (train first: the rng's order)
    follows = {"train": ("train_labels", "train_coarse", "given_train_labels", "train_paths"),
               "test": ("test_labels", "test_coarse")}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = getattr(bundle, f"{split}_labels")
        if n is None or n >= len(labels):
            continue
        idx = _stratified_indices(labels, int(n), rng)
        out_images = getattr(bundle, f"{split}_images")[idx]
        setattr(out, f"{split}_images", out_images)
        for attr in follows[split]:
            value = getattr(bundle, attr)
            if isinstance(value, list):
                setattr(out, attr, [value[i] for i in idx])
            elif value is not None:
                setattr(out, attr, value[idx])
        if split == "train" and len(idx):
            out.mean, out.std = channel_stats(out_images)
    return out


def prepare_inputs(bundle: DatasetBundle, *, pad: int = 0,
                   gray_to_rgb: bool = False) -> DatasetBundle:
    """The bundle with its images zero-padded by ``pad`` pixels on every side and, with
    ``gray_to_rgb``, a grayscale channel copied to 3 channels (colour images are left as they
    are); mean / std recomputed.

    A named choice of input preparation (TrainConfig ``pad_inputs`` / ``gray_to_rgb``): the CPU
    regime trains Fashion-MNIST as 32x32x3 images, as a CIFAR-format copy of them would be
    (benchmarks/RESULTS.md, "Why the detection decayed"). (N, H, W, C) -> (N, H + 2 pad,
    W + 2 pad, 3 or C), train and test alike.
    """
    if isinstance(pad, bool) or int(pad) != pad or pad < 0:
        raise ValueError(f"pad must be a non-negative number of pixels, got {pad!r}")
    copy = gray_to_rgb and bundle.image_shape[2] == 1  # colour images stay as they are
    if pad == 0 and not copy:
        return bundle

    def prep(images: np.ndarray) -> np.ndarray:
        out = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else images
        return np.ascontiguousarray(np.repeat(out, 3, axis=3) if copy else out)

    train_x = prep(bundle.train_images)
    mean, std = channel_stats(train_x)
    return replace(bundle, train_images=train_x, test_images=prep(bundle.test_images),
                   mean=mean, std=std)


def training_subset(cfg: TrainConfig, *, download: bool = True,
                    noise_file: bool = False) -> DatasetBundle:
    """The data set a training configuration trains on: ``cfg.dataset`` from
    ``cfg.data_root``, subset to ``cfg.n_train`` / ``cfg.n_test``, then padded / given 3
    channels (:func:`prepare_inputs`). noise_file: read ``cfg.noise_file`` (one label per
    image of the full training set) into ``given_train_labels``, subset with the images."""
    bundle = load_dataset(cfg.dataset, cfg.data_root, download=download,
                          image_size=cfg.image_size, channels=cfg.image_channels,
                          noisy_labels=cfg.noise_file if noise_file else None)
    bundle = subset(bundle, cfg.n_train, cfg.n_test, seed=cfg.subset_seed)
    return prepare_inputs(bundle, pad=cfg.pad_inputs, gray_to_rgb=cfg.gray_to_rgb)


def load_data(cfg: TrainConfig, *, download: bool = True) -> tuple[DatasetBundle, NoisyLabels]:
    """The data set (subset) and its label noise for a TrainConfig: (DatasetBundle, NoisyLabels).

    Noise is drawn on the subset, after subsetting. A ``noise_file`` (or labels shipped with
    the data set, e.g. CIFAR-10N) replaces synthetic noise: it holds one label per image of the
    FULL training set, and a subset (``n_train``) takes its labels with its images; a file of
    any other length is refused.
    """
    bundle = training_subset(cfg, download=download, noise_file=bool(cfg.noise_file))
    c = bundle.num_classes
    if bundle.given_train_labels is not None:
        given = np.asarray(bundle.given_train_labels, dtype=np.int64).copy()
        clean = np.asarray(bundle.train_labels, dtype=np.int64).copy()
        noisy = NoisyLabels(noisy=given, clean=clean, is_noisy=given != clean,
                            transition=realised_transition(clean, given, c), kind="file",
                            rate=float((given != clean).mean()), seed=-1)
    else:
        noisy = inject_noise(bundle.train_labels, cfg.noise, cfg.rate, c, seed=cfg.noise_seed,
                             dataset=bundle.name, coarse_labels=bundle.train_coarse)
    return bundle, noisy


def fetch(name: str, root: str | Path = "data") -> Path:
    """Make sure a data set's files are on disk (downloading with torchvision when needed) and
    return the folder holding them. Raises :class:`DataNotFoundError` saying how to get them."""
    kind = _canonical_name(name)
    root = Path(root).expanduser()
    if kind == "digits":
        import sklearn.datasets

        return Path(os.path.dirname(sklearn.datasets.__file__)) / "data"
    if kind == "fashion-mnist":
        return _find_fashion_mnist(root) or _download_fashion_mnist(root)
    if kind in ("cifar10", "cifar100"):
        return _ensure_cifar(kind, root, download=True)
    path = Path(name.split(":", 1)[1]).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"image folder {path} does not exist; imagefolder data is not "
                                f"downloaded: put images under {path}/<class>/")
    return path
