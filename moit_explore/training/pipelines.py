"""Data pipelines: a training set in batches of augmented views (spec §2, §4).

"gpu" (:class:`GpuPipeline`, the default): the whole data set is one uint8 NCHW tensor on the
device, augmented in batches there (:mod:`moit_explore.maths.augment`), no per-sample Python work.
"reference" (:class:`ReferencePipeline`): torchvision transforms on PIL images in DataLoader
workers, fp32, the usual way; ``benchmarks/bench_epoch.py`` compares the two.

Both yield :class:`Batch` es over a given order of the samples, with the epoch's batch bounds
from :func:`batch_bounds`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from moit_explore.maths import augment

__all__ = [
    "Batch",
    "GpuPipeline",
    "ReferencePipeline",
    "augment_for",
    "batch_bounds",
    "device_data",
    "to_nchw",
]


@dataclass
class Batch:
    """One training batch: dataset indices, given labels, augmented views, non-augmented x0."""

    idx: Tensor            # (B,) int64 dataset indices, on the device
    y: Tensor              # (B,) int64 given labels
    views: list[Tensor]    # float32 normalised (B, C, H, W) each
    x0: Tensor | None      # float32 normalised (B, C, H, W), or None when not needed


def to_nchw(images: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (N, H, W, C) NumPy -> uint8 (N, C, H, W) tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous() \
        .to(device)


def device_data(bundle: Any, noisy: Any, device: torch.device) -> tuple:
    """Train / test images (uint8 NCHW), given / true / test labels on ``device``, and the
    data set's normalisation."""
    # copies: nothing the run does can reach back into the bundle or the noise record
    labels_given = torch.from_numpy(noisy.noisy.copy()).to(device)
    labels_true = torch.from_numpy(noisy.clean.copy()).to(device)
    test_labels = torch.from_numpy(np.asarray(bundle.test_labels, dtype=np.int64).copy())
    return (to_nchw(bundle.train_images, device), to_nchw(bundle.test_images, device),
            labels_given, labels_true, test_labels.to(device),
            augment.Normalize(bundle.mean, bundle.std))


def augment_for(name: str, bundle: Any, crop_padding: int) -> Any:
    """The batched augmentation ``name`` with the data set's normalisation statistics."""
    options = {"padding": crop_padding} if name == "simple" else {}
    return augment.build_augment(name, bundle.mean, bundle.std, **options)


def batch_bounds(n: int, batch_size: int, drop_last: bool = False) -> list[tuple[int, int]]:
    """[start, stop) of each batch of an epoch over ``n`` shuffled samples.

    drop_last False (release: a DataLoader keeps the last incomplete batch): the tail batch is
    kept, unless it holds a single sample, which batch norm cannot train on and which has no
    partner to mix or contrast with. drop_last True (a named deviation): every batch has
    ``batch_size`` samples (one shape, so ``torch.compile`` builds one graph, not two); the
    tail is dropped, except when it is the only batch.
    """
    full = n // batch_size
    bounds = [(b * batch_size, (b + 1) * batch_size) for b in range(full)]
    tail = n - full * batch_size
    if (tail >= 2 and not drop_last) or (full == 0 and tail >= 1):
        bounds.append((full * batch_size, n))
    return bounds


class GpuPipeline:
    """The whole training set as one uint8 NCHW tensor on the device, augmented per batch."""

    def __init__(self, images: Tensor, labels: Tensor, augment: Any, normalize: Any,
                 batch_size: int, channels_last: bool, indices: Tensor | None = None,
                 drop_last: bool = False) -> None:
        # indices: the dataset index of each row of ``images`` when it holds a subset
        # (MOIT+), so that Batch.idx always names dataset indices
        self.images, self.labels, self.indices = images, labels, indices
        self.augment, self.normalize = augment, normalize
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.bounds = batch_bounds(images.shape[0], batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def n_samples(self) -> int:
        """The samples an epoch orders (the rows of ``images``)."""
        return int(self.images.shape[0])

    def _fmt(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batches(self, order: Tensor, n_views: int, with_x0: bool,
                gen: torch.Generator) -> Iterator[Batch]:
        order = order.to(self.images.device)
        for start, stop in self.bounds:
            pos = order[start:stop]
            x = self.images[pos]
            views = [self._fmt(self.augment(x, generator=gen)) for _ in range(n_views)]
            x0 = self._fmt(self.normalize(x)) if with_x0 else None
            idx = pos if self.indices is None else self.indices[pos]
            yield Batch(idx, self.labels[pos], views, x0)


def _torchvision_transform(name: str, size: int, mean, std, padding: int = 4):
    # lazy: importing torchvision.transforms takes seconds, and only this pipeline needs it
    import torchvision.transforms as T  # noqa: PLC0415

    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if name == "complex":
        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            *norm,
        ])
    if name == "simple":
        return T.Compose([T.RandomCrop(size, padding=padding), T.RandomHorizontalFlip(), *norm])
    return T.Compose(norm)


class _PilDataset(torch.utils.data.Dataset):
    """Per-sample PIL transforms (the reference pipeline)."""

    def __init__(self, images: np.ndarray, augment: Any, normalize: Any, n_views: int,
                 with_x0: bool) -> None:
        self.images = images
        self.augment, self.normalize = augment, normalize
        self.n_views, self.with_x0 = n_views, with_x0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        a = self.images[i]
        img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
        views = [self.augment(img) for _ in range(self.n_views)]
        x0 = self.normalize(img) if self.with_x0 else torch.zeros(0)
        return i, views, x0


class ReferencePipeline:
    """torchvision transforms on PIL images in DataLoader workers (fp32): the usual pipeline."""

    def __init__(self, images: np.ndarray, labels: Tensor, augment_name: str, mean, std,
                 batch_size: int, workers: int, device: torch.device,
                 channels_last: bool, crop_padding: int = 4, drop_last: bool = False) -> None:
        h = images.shape[1]
        self.images = images
        self.labels = labels
        self.augment = _torchvision_transform(augment_name, h, mean, std, crop_padding)
        self.normalize = _torchvision_transform("none", h, mean, std)
        self.batch_size, self.workers, self.device = batch_size, workers, device
        self.channels_last = channels_last
        self.bounds = batch_bounds(len(images), batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def n_samples(self) -> int:
        """The samples an epoch orders."""
        return len(self.images)

    def batches(self, order: Tensor, n_views: int, with_x0: bool,
                gen: torch.Generator) -> Iterator[Batch]:
        ds = _PilDataset(self.images, self.augment, self.normalize, n_views, with_x0)
        order = order.cpu().tolist()[: self.bounds[-1][1]]
        loader = torch.utils.data.DataLoader(
            ds, batch_size=self.batch_size, sampler=order, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", drop_last=False,
            generator=torch.Generator().manual_seed(int(torch.randint(
                0, 2**62, (1,), generator=gen, device=gen.device).item())),
        )
        fmt = (lambda x: x.contiguous(memory_format=torch.channels_last)) \
            if self.channels_last else (lambda x: x)
        for idx, views, x0 in loader:
            idx = idx.to(self.device)
            views = [fmt(v.to(self.device, non_blocking=True)) for v in views]
            x0 = fmt(x0.to(self.device, non_blocking=True)) if with_x0 else None
            yield Batch(idx, self.labels[idx], views, x0)
