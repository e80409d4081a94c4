"""Your own images: one folder per class (``<path>/<class>/<image>``), or ``train/`` and
``test/`` (or ``val/``) folders of that form, read into uint8 arrays (N, H, W, C).

Images are resized to ``image_size`` (default 32) and converted to RGB, or to grayscale with
``channels=1``; 16-bit and float images are scaled by their bit depth; hidden files and folders
are skipped. :func:`moit_explore.training.datasets.load_dataset` turns the result into a
DatasetBundle (``"imagefolder:<path>"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "read_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm")


@dataclass
class ImageFolder:
    """The images of a folder, in class order; ``train_paths`` the training files, in order."""

    path: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    train_paths: list[str]


def _class_images(folder: Path) -> dict[str, list[Path]]:
    """{class name: sorted image files} for the class sub-folders of ``folder``; hidden files
    and folders (``.ipynb_checkpoints/``, ``.thumbs/`` ...) at any depth are no images of it."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = {}
    for c in classes:
        files = sorted(
            p for p in (folder / c).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(folder / c).parts)
        )
        out[c] = files
    return out


def _to_8bit(im):  # noqa: ANN001, ANN202 -- a PIL image in, a PIL image out
    """``im`` as 8-bit values, scaled by its bit depth: 16-bit integers (modes I;16*, and I,
    which Pillow gives 16-bit files) divided by 257, floats (mode F) read as intensities in
    [0, 1] times 255; 8-bit images as they are."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"32-bit integer values {a.min():.0f}..{a.max():.0f} "
                             "do not fit 16 bits; save it as an 8- or 16-bit image")
        return Image.fromarray(np.rint(a / 257.0).astype(np.uint8), mode="L")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise ValueError(f"floating-point values {np.nanmin(a):g}.."
                             f"{np.nanmax(a):g}, but a float image is read as intensities in "
                             "[0, 1]; scale it to [0, 1] or save it as an 8-bit image")
        return Image.fromarray(np.rint(a * 255.0).astype(np.uint8), mode="L")
    return im


def _read_images(files: list[Path], size: int, channels: int, progress: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), size, size, channels), dtype=np.uint8)
    for i, f in enumerate(tqdm(files, desc="images", disable=not progress)):
        try:
            with Image.open(f) as im:
                im = _to_8bit(im).convert(mode).resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except Image.DecompressionBombError as e:
            raise ValueError(f"image {f} is too large to read safely ({e}); it may be a "
                             "decompression bomb: shrink it or delete it") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ValueError(f"cannot read image {f}: {e}; delete or replace the file") from e
        out[i] = arr.reshape(size, size, channels)
    return out


def read_image_folder(path_text: str, image_size: int | None, channels: int,
                      progress: bool = False) -> ImageFolder:
    """Read ``path_text``'s images (see the module docstring); errors name the file or folder
    and the fix (a missing folder: FileNotFoundError)."""
    path = Path(path_text).expanduser()
    if not path_text:
        raise ValueError("imagefolder needs a path: 'imagefolder:/path/to/folder'")
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {path} does not exist; expected "
                                f"{path}/<class>/<image>.png (optionally under train/ and test/)")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    size = 32 if image_size is None else int(image_size)
    if size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")

    test_dir = next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
    train_dir = path / "train" if (path / "train").is_dir() else path
    if train_dir == path and test_dir is not None:
        raise ValueError(f"{path} has a {test_dir.name}/ folder but no train/ folder; put the "
                         f"training images under {path}/train/<class>/")
    train = _class_images(train_dir)
    if not train:
        raise ValueError(f"no class folders in {train_dir}; expected "
                         f"{train_dir}/<class name>/<image>.png, one folder per class")
    empty = [c for c, files in train.items() if not files]
    if empty:
        raise ValueError(f"class folder(s) without images in {train_dir}: {', '.join(empty)} "
                         f"(extensions read: {', '.join(IMAGE_EXTENSIONS)}); add images or "
                         f"remove the folder(s)")
    classes = list(train)
    index = {c: i for i, c in enumerate(classes)}
    train_files = [f for c in classes for f in train[c]]
    train_y = np.array([index[c] for c in classes for _ in train[c]], dtype=np.int64)

    test_files: list[Path] = []
    test_y = np.zeros(0, dtype=np.int64)
    if test_dir is not None:
        test = {c: files for c, files in _class_images(test_dir).items() if files}
        unknown = sorted(set(test) - set(index))
        if unknown:
            raise ValueError(f"{test_dir} has class folder(s) {', '.join(unknown)} that "
                             f"{train_dir} lacks; every test class needs training images")
        test_files = [f for c in test for f in test[c]]
        test_y = np.array([index[c] for c in test for _ in test[c]], dtype=np.int64)

    train_x = _read_images(train_files, size, channels, progress)
    test_x = (_read_images(test_files, size, channels, progress) if test_files
              else np.zeros((0, size, size, channels), dtype=np.uint8))
    return ImageFolder(path=path, train_images=train_x, train_labels=train_y, test_images=test_x,
                       test_labels=test_y, classes=classes,
                       train_paths=[str(f) for f in train_files])
