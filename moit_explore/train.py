"""The training engine: MOIT (spec §2-3), its baselines, and MOIT+ fine-tuning (spec §4).

:func:`train` runs one configuration into a run directory (see :mod:`moit_explore.runs`);
:func:`resume` continues one from its checkpoint; :func:`finetune` runs MOIT+ from a finished
run into its ``finetune/`` folder.

One epoch, for every method:

1. train: one pass over the training set in a seeded random order (the order, the augmentation
   and the mixup draws come from generators seeded by (seed, epoch), so a resumed run follows
   the same trajectory);
2. embed: features and logits of every training image, non-augmented, model in eval mode
   (the memorisation curve ``train_acc_given`` / ``train_acc_true`` comes from here);
3. detect (spec §3): kNN soft labels on those features with the GIVEN labels, the clean mask
   used by MOIT's classification loss in the next epoch; scored against the true labels;
4. test accuracy; one row in metrics.jsonl; snapshots; an atomic checkpoint.

The loss of a MOIT step (:func:`moit_step`) reads like the paper::

    L = L_ICL (icl_batch + icl_memory) + L_CLS (cls_labeled + cls_unlabeled)

Pipelines. "gpu" (default): the whole data set is one uint8 NCHW tensor on the device,
augmented in batches there (moit_explore.augment), bf16 autocast on CUDA, channels_last, no
per-sample Python work. "reference": torchvision transforms on PIL images in DataLoader
workers, fp32, the usual way; benchmarks/bench_epoch.py compares the two.

The given labels are fixed for the whole run: every consumer gets a copy, and detection never
writes corrected labels back (spec §3).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moit_explore import runs
from moit_explore.config import FinetuneConfig, TrainConfig, finetune_preset, finetune_preset_for
from moit_explore.config import preset as make_preset

__all__ = [
    "Batch",
    "EpochContext",
    "FinetuneSetup",
    "embed",
    "finetune",
    "load_data",
    "moit_step",
    "prepare_finetune",
    "resolve_device",
    "resume",
    "train",
]

EpochCallback = Callable[[dict], None]

# fields that may change when a run is resumed (they do not change the trajectory, except
# epochs, which extends a finished run)
RESUMABLE_FIELDS = ("epochs", "progress", "device", "workers", "eval_batch_size",
                    "snapshot_epochs", "detect_backend", "compile")


# --------------------------------------------------------------------------- setup helpers


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu. A requested but missing CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use "
                         "--device cpu (or auto)")
    return dev


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    # distinct, reproducible streams per (seed, epoch, purpose)
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + stream * 104_729) % (2**63 - 1)


def _rng_state() -> dict:
    """RNG states of torch (CPU and CUDA), NumPy and Python, as weights_only-loadable values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # a different number of GPUs
            torch.cuda.set_rng_state_all(state["cuda"])


def lr_schedule(optimizer: torch.optim.Optimizer, milestones: tuple[int, ...],
                gamma: float) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step decay, stepped once after every epoch: epoch ``e`` (1-based) trains at
    ``lr * gamma ** #{m in milestones : m <= e}``, so with milestones (125, 200) epoch 125 is
    the first at the lower LR, as in the release (its scheduler steps at each epoch's start)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [m - 1 for m in milestones],
                                                gamma=gamma)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)


# --------------------------------------------------------------------------- data


def load_data(cfg: TrainConfig):
    """The data set (subset) and its label noise for ``cfg``: (DatasetBundle, NoisyLabels).

    Noise is drawn on the subset, after subsetting. A ``noise_file`` (or labels shipped with
    the data set, e.g. CIFAR-10N) replaces synthetic noise.
    """
    from moit_explore import datasets, noise

    bundle = datasets.load_dataset(cfg.dataset, cfg.data_root, image_size=cfg.image_size,
                                   channels=cfg.image_channels)
    bundle = datasets.subset(bundle, cfg.n_train, cfg.n_test, seed=cfg.subset_seed)
    c = bundle.num_classes
    if cfg.noise_file:
        noisy = noise.labels_from_file(cfg.noise_file, bundle.train_labels, c)
    elif bundle.given_train_labels is not None:
        given = np.asarray(bundle.given_train_labels, dtype=np.int64).copy()
        clean = np.asarray(bundle.train_labels, dtype=np.int64).copy()
        noisy = noise.NoisyLabels(noisy=given, clean=clean, is_noisy=given != clean,
                                  transition=noise.realised_transition(clean, given, c),
                                  kind="file", rate=float((given != clean).mean()), seed=-1)
    else:
        noisy = noise.inject_noise(bundle.train_labels, cfg.noise, cfg.rate, c,
                                   seed=cfg.noise_seed, dataset=bundle.name,
                                   coarse_labels=bundle.train_coarse)
    return bundle, noisy


def _to_nchw(images: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (N, H, W, C) NumPy -> uint8 (N, C, H, W) tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous() \
        .to(device)


def _device_data(bundle: Any, noisy: Any, device: torch.device) -> tuple:
    """Train / test images (uint8 NCHW), given / true / test labels on ``device``, and the
    data set's normalisation."""
    from moit_explore import augment

    # copies: nothing the run does can reach back into the bundle or the noise record
    labels_given = torch.from_numpy(noisy.noisy.copy()).to(device)
    labels_true = torch.from_numpy(noisy.clean.copy()).to(device)
    test_labels = torch.from_numpy(np.asarray(bundle.test_labels, dtype=np.int64).copy())
    return (_to_nchw(bundle.train_images, device), _to_nchw(bundle.test_images, device),
            labels_given, labels_true, test_labels.to(device),
            augment.Normalize(bundle.mean, bundle.std))


@dataclass
class Batch:
    """One training batch: dataset indices, given labels, augmented views, non-augmented x0."""

    idx: Tensor            # (B,) int64 dataset indices, on the device
    y: Tensor              # (B,) int64 given labels
    views: list[Tensor]    # float32 normalised (B, C, H, W) each
    x0: Tensor | None      # float32 normalised (B, C, H, W), or None when not needed


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
        self.bounds = _batch_bounds(images.shape[0], batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.bounds)

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


def _batch_bounds(n: int, batch_size: int, drop_last: bool = False) -> list[tuple[int, int]]:
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


def _torchvision_transform(name: str, size: int, mean, std, padding: int = 4):
    import torchvision.transforms as T

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


def _build_augment(name: str, bundle: Any, crop_padding: int) -> Any:
    """The batched augmentation ``name`` with the data set's normalisation statistics."""
    from moit_explore import augment

    options = {"padding": crop_padding} if name == "simple" else {}
    return augment.build_augment(name, bundle.mean, bundle.std, **options)


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
        from PIL import Image

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
        self.bounds = _batch_bounds(len(images), batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.bounds)

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


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def embed(model: nn.Module, images: Tensor, normalize: Any, batch_size: int,
          amp: str = "none", channels_last: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, h and z of every image, non-augmented, model in eval mode.

    images: uint8 (N, C, H, W) on the model's device. Returns float32 (N, C), (N, F), (N, D)
    on that device. The model's train/eval mode is restored afterwards.
    """
    m = _unwrap(model)
    was_training = m.training
    m.eval()
    logits, hs, zs = [], [], []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = normalize(images[i:i + batch_size])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(images.device, amp):
                h = m.features(x)
                lg = m.classifier(h)
                z = F.normalize(m.projector(h).float(), dim=1)
            logits.append(lg.float())
            hs.append(h.float())
            zs.append(z)
    finally:
        m.train(was_training)
    if not logits:
        empty = torch.zeros(0, device=images.device)
        return empty, empty, empty
    return torch.cat(logits), torch.cat(hs), torch.cat(zs)


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    if logits.shape[0] == 0:
        return float("nan")
    return float((logits.argmax(1) == labels).float().mean().item())


def _detection_row(det: Any, noisy: Any, true_known: bool) -> dict:
    from moit_explore import detection

    if not true_known:
        return {"det_selected_frac": float(np.mean(det.clean))}
    m = detection.detection_metrics(np.asarray(det.clean, dtype=bool),
                                    np.asarray(noisy.is_noisy, dtype=bool), det.discrepancy)
    return {f"det_{k}": v for k, v in m.items()}


# --------------------------------------------------------------------------- training steps


@dataclass
class EpochContext:
    """What a step needs besides the batch."""

    model: nn.Module
    cfg: TrainConfig
    epoch: int
    gen: torch.Generator
    device: torch.device
    amp: str
    memory: Any = None            # memory.CrossBatchMemory
    clean: Tensor | None = None   # (N,) bool, the previous epoch's clean mask


def _memory_for(ctx: EpochContext, z1: Tensor, z2: Tensor, y: Tensor) -> Any:
    """Enqueue the current 2B embeddings (every step, spec §2a: as the release, the queue also
    fills during the first xbm_begin epochs) and return the memory from epoch > xbm_begin,
    else None (no memory term yet)."""
    if ctx.memory is None:
        return None
    ctx.memory.enqueue(torch.cat([z1, z2]).detach(), torch.cat([y, y]))
    return ctx.memory if ctx.epoch > ctx.cfg.xbm_begin else None


def _forward_views(ctx: EpochContext, views: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(logits, z) of each view, one forward pass per view: batch-norm statistics are those
    of each view alone, as in the release (a joint pass would pool both views)."""
    out = []
    for x in views:
        with _autocast(ctx.device, ctx.amp):
            out.append(ctx.model(x))
    return out


def moit_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """One MOIT step (spec §2): L = L_ICL + L_CLS on two interpolated complex views.

    Returns the loss terms; their sum is the loss that is back-propagated.
    """
    from moit_explore import losses

    cfg, y = ctx.cfg, batch.y
    x1, x2 = batch.views
    # interpolation, independently per view: lam = max(lam, 1 - lam), own permutation
    xm1, perm1, lam1 = losses.mixup(x1, cfg.alpha, ctx.gen)
    xm2, perm2, lam2 = losses.mixup(x2, cfg.alpha, ctx.gen)
    (logits1, z1), (logits2, z2) = _forward_views(ctx, [xm1, xm2])
    # logits_0 = f(x0), no gradient, every step: as in the release this train-mode pass also
    # feeds the batch-norm running statistics with non-augmented images
    with torch.no_grad(), _autocast(ctx.device, ctx.amp):
        logits0, _ = ctx.model(batch.x0)
    # L_ICL = L_batch + L_mem (memory from epoch > xbm_begin, holding the current batch)
    memory = _memory_for(ctx, z1, z2, y)
    icl = losses.icl_loss_terms(z1, z2, y, perm1, perm2, lam1, lam2, tau=cfg.tau, memory=memory)
    # L_CLS: mixup CE until correction_start; then the previous epoch's clean mask a splits
    # it into a labeled term and a pseudo-labeled term with q = softmax(logits_0)
    clean = None
    if ctx.epoch > cfg.correction_start:
        if ctx.clean is None:
            raise RuntimeError("label correction needs the previous epoch's detection; run with "
                               "--detect epoch")
        clean = ctx.clean[batch.idx]
    cls = losses.classification_loss_terms(logits1, logits2, logits0, y, perm1, perm2,
                                           lam1, lam2, clean=clean)
    return {"icl_batch": icl["icl_batch"], "icl_memory": icl["icl_memory"],
            "cls_labeled": cls["cls_labeled"], "cls_unlabeled": cls["cls_unlabeled"]}


def icl_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """ICL alone: L_ICL + mixup classification loss (no detection, no label correction)."""
    from moit_explore import losses

    cfg, y = ctx.cfg, batch.y
    xm1, perm1, lam1 = losses.mixup(batch.views[0], cfg.alpha, ctx.gen)
    xm2, perm2, lam2 = losses.mixup(batch.views[1], cfg.alpha, ctx.gen)
    (logits1, z1), (logits2, z2) = _forward_views(ctx, [xm1, xm2])
    memory = _memory_for(ctx, z1, z2, y)
    icl = losses.icl_loss_terms(z1, z2, y, perm1, perm2, lam1, lam2, tau=cfg.tau, memory=memory)
    cls = losses.classification_loss_terms(logits1, logits2, None, y, perm1, perm2, lam1, lam2)
    return {"icl_batch": icl["icl_batch"], "icl_memory": icl["icl_memory"],
            "cls_labeled": cls["cls_labeled"]}


def supcon_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """Supervised contrastive loss on two views + a CE classifier on both views."""
    from moit_explore import losses

    y = batch.y
    with _autocast(ctx.device, ctx.amp):
        logits, z = ctx.model(torch.cat(batch.views))
    z1, z2 = z.chunk(2)
    memory = _memory_for(ctx, z1, z2, y)
    supcon = losses.supcon_loss(z1, z2, y, tau=ctx.cfg.tau, memory=memory)
    ce = F.cross_entropy(logits.float(), torch.cat([y, y]))
    return {"supcon": supcon, "ce": ce}


def ce_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """Standard cross-entropy on one augmented view."""
    with _autocast(ctx.device, ctx.amp):
        logits, _ = ctx.model(batch.views[0])
    return {"ce": F.cross_entropy(logits.float(), batch.y)}


def mixup_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """Mixup cross-entropy on one augmented view (Zhang et al. 2018)."""
    from moit_explore import losses

    xm, perm, lam = losses.mixup(batch.views[0], ctx.cfg.alpha, ctx.gen)
    with _autocast(ctx.device, ctx.amp):
        logits, _ = ctx.model(xm)
    return {"mixup": losses.mixup_ce(logits, batch.y, batch.y[perm], lam)}


# method -> (step, number of augmented views)
STEPS: dict[str, tuple[Callable[[EpochContext, Batch], dict[str, Tensor]], int]] = {
    "ce": (ce_step, 1),
    "mixup": (mixup_step, 1),
    "supcon": (supcon_step, 2),
    "icl": (icl_step, 2),
    "moit": (moit_step, 2),
}


def _run_epoch(ctx: EpochContext, pipeline: Any, step: Callable, n_views: int, with_x0: bool,
               optimizer: torch.optim.Optimizer, order: Tensor, bar: Any) -> tuple[dict, int]:
    """One pass over the training set; returns the mean loss terms and the images seen."""
    ctx.model.train()
    sums: dict[str, Tensor] = {}
    n_steps = n_images = 0
    for batch in pipeline.batches(order, n_views, with_x0, ctx.gen):
        terms = step(ctx, batch)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        sums["loss"] = sums.get("loss", 0) + loss.detach().float()
        n_steps += 1
        n_images += int(batch.idx.shape[0])
        if bar is not None:
            bar.update(1)
    means = {k: float(v.item()) / max(n_steps, 1) for k, v in sums.items()}
    if not math.isfinite(means.get("loss", 0.0)):
        raise FloatingPointError(
            f"the loss became {means['loss']} in epoch {ctx.epoch}; lower --lr, or use --amp "
            "none to rule out mixed precision")
    return means, n_images


# --------------------------------------------------------------------------- the run


@dataclass
class _Session:
    """Everything a run holds in memory (built by :func:`_setup`)."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    amp: str
    bundle: Any
    noisy: Any
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    memory: Any
    pipeline: Any
    images: Tensor
    test_images: Tensor
    labels_given: Tensor
    labels_true: Tensor
    test_labels: Tensor
    normalize: Any
    clean: Tensor | None = None
    start_epoch: int = 1
    best_test_acc: float = float("-inf")
    extra: dict = field(default_factory=dict)


def _setup(cfg: TrainConfig, run_dir: Path, data: tuple | None = None) -> _Session:
    from moit_explore import memory, models

    device = resolve_device(cfg.device)
    amp = cfg.amp_dtype(device.type)
    bundle, noisy = load_data(cfg) if data is None else data
    n = len(bundle.train_labels)
    cfg.validate(n_train=n)
    c = bundle.num_classes
    if cfg.method in ("supcon", "icl", "moit"):
        size = memory.memory_size(c, cfg.xbm_per_class)
        if size < 2 * cfg.batch_size:
            raise ValueError(f"the memory ({size} slots = 2 * xbm_per_class * {c} classes) "
                             f"cannot hold one batch of 2B = {2 * cfg.batch_size} embeddings; "
                             f"raise --xbm-per-class to >= {math.ceil(cfg.batch_size / c)}")

    _seed_everything(cfg.seed)
    model = models.build_model(cfg.arch, c, bundle.image_shape[2], width=cfg.width,
                               projection=cfg.projection, embed_dim=cfg.embed_dim,
                               shortcut=cfg.shortcut).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # static shapes: the epoch's smaller last batch gets a graph of its own, instead of turning
    # every batch into a slower dynamic-shape graph
    train_model = torch.compile(model, dynamic=False) if cfg.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = lr_schedule(optimizer, cfg.lr_milestones, cfg.lr_gamma)
    mem = None
    if cfg.method in ("supcon", "icl", "moit"):
        mem = memory.CrossBatchMemory(memory.memory_size(c, cfg.xbm_per_class), cfg.embed_dim,
                                      device=device)

    images, test_images, labels_given, labels_true, test_labels, normalize = \
        _device_data(bundle, noisy, device)
    aug_name = cfg.augment_name()
    if cfg.pipeline == "gpu":
        pipeline: Any = GpuPipeline(images, labels_given,
                                    _build_augment(aug_name, bundle, cfg.crop_padding),
                                    normalize, cfg.batch_size, cfg.channels_last,
                                    drop_last=cfg.drop_last)
    else:
        pipeline = ReferencePipeline(bundle.train_images, labels_given, aug_name, bundle.mean,
                                     bundle.std, cfg.batch_size, cfg.workers, device,
                                     cfg.channels_last, cfg.crop_padding, cfg.drop_last)
    return _Session(cfg=cfg, run_dir=run_dir, device=device, amp=amp, bundle=bundle,
                    noisy=noisy, model=model, train_model=train_model, optimizer=optimizer,
                    scheduler=scheduler, memory=mem, pipeline=pipeline, images=images,
                    test_images=test_images, labels_given=labels_given,
                    labels_true=labels_true, test_labels=test_labels, normalize=normalize)


def _checkpoint_state(s: _Session, epoch: int) -> dict:
    return {
        "epoch": int(epoch),
        "model": _unwrap(s.model).state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "memory": s.memory.state_dict() if s.memory is not None else None,
        "clean": s.clean.cpu() if s.clean is not None else None,
        "best_test_acc": float(s.best_test_acc),
        "rng": _rng_state(),
        "config": runs._jsonable(s.cfg.to_dict()),
    }


def _restore(s: _Session, state: dict) -> None:
    _unwrap(s.model).load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    if s.memory is not None and state.get("memory") is not None:
        s.memory.load_state_dict(state["memory"])
    s.clean = state["clean"].to(s.device) if state.get("clean") is not None else None
    s.best_test_acc = float(state.get("best_test_acc", float("-inf")))
    s.start_epoch = int(state["epoch"]) + 1
    _set_rng_state(state["rng"])


def _write_run_header(s: _Session) -> None:
    cfgd = s.cfg.to_dict()
    cfgd.update(classes=list(s.bundle.classes), num_classes=s.bundle.num_classes,
                n_train_actual=int(len(s.bundle.train_labels)),
                n_test_actual=int(len(s.bundle.test_labels)),
                image_shape=list(s.bundle.image_shape), dataset_name=s.bundle.name,
                true_labels_known=bool(s.bundle.true_labels_known),
                noise_actual_rate=float(s.noisy.actual_rate), device_resolved=str(s.device),
                amp_resolved=s.amp, detect_resolved=s.cfg.detect_mode(),
                detect_features_resolved=s.cfg.feature_kind(),
                augment_resolved=s.cfg.augment_name(), torch_version=torch.__version__)
    runs.write_json_atomic(s.run_dir / runs.CONFIG_FILE, cfgd)
    from moit_explore import noise

    with runs._atomic_target(s.run_dir / runs.NOISE_FILE, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            noise.save_noise(f, s.noisy)


def _detect(s: _Session, feats: Tensor, k: int, balance: str) -> Any:
    from moit_explore import detection

    # a copy of the given labels: detection reads them, the run's tensor stays untouched
    return detection.detect_noise(feats, s.labels_given.cpu().numpy().copy(),
                                  s.bundle.num_classes, k=k, balance=balance,
                                  backend=s.cfg.detect_backend)


def _train_loop(s: _Session, progress: bool, on_epoch_end: EpochCallback | None) -> Path:
    from tqdm.auto import tqdm

    cfg = s.cfg
    step, n_views = STEPS[cfg.method]
    mode = cfg.detect_mode()
    n = s.images.shape[0]
    snapshots = set(cfg.snapshot_epochs) | {cfg.epochs}
    steps_per_epoch = len(s.pipeline)
    bar = tqdm(total=(cfg.epochs - s.start_epoch + 1) * steps_per_epoch, disable=not progress,
               desc=f"{cfg.method} {s.run_dir.name}", unit="step", dynamic_ncols=True)
    try:
        for epoch in range(s.start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            # seeded per epoch: data order (CPU) and augmentation / mixup (on the device)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(
                _epoch_seed(cfg.seed, epoch, 0)))
            gen = torch.Generator(device=s.device).manual_seed(_epoch_seed(cfg.seed, epoch, 1))
            ctx = EpochContext(model=s.train_model, cfg=cfg, epoch=epoch, gen=gen,
                               device=s.device, amp=s.amp, memory=s.memory, clean=s.clean)
            lr = s.optimizer.param_groups[0]["lr"]
            with_x0 = cfg.method == "moit"
            terms, n_images = _run_epoch(ctx, s.pipeline, step, n_views, with_x0, s.optimizer,
                                         order, bar)
            s.scheduler.step()
            if s.device.type == "cuda":
                torch.cuda.synchronize(s.device)
            t_train = time.perf_counter() - t0

            # embed the training set (non-augmented, eval mode) and evaluate
            t1 = time.perf_counter()
            logits, h, z = embed(s.model, s.images, s.normalize, cfg.eval_batch_size, s.amp,
                                 cfg.channels_last)
            feats = z if cfg.feature_kind() == "z" else h
            test_logits, _, _ = embed(s.model, s.test_images, s.normalize, cfg.eval_batch_size,
                                      s.amp, cfg.channels_last)
            test_acc = _accuracy(test_logits, s.test_labels)
            t_eval = time.perf_counter() - t1

            t2 = time.perf_counter()
            det = None
            if mode == "epoch" or (mode == "final" and epoch == cfg.epochs):
                det = _detect(s, feats, cfg.k, cfg.balance)
                # the mask of epoch e is used in epoch e + 1 (spec §3.7)
                s.clean = torch.from_numpy(np.asarray(det.clean, dtype=bool)).to(s.device)
            t_detect = time.perf_counter() - t2

            if math.isfinite(test_acc):
                s.best_test_acc = max(s.best_test_acc, test_acc)
            row: dict[str, Any] = {"epoch": epoch, "lr": lr}
            row.update({("loss" if k == "loss" else f"loss_{k}"): v for k, v in terms.items()})
            row.update(
                train_acc_given=_accuracy(logits, s.labels_given),
                train_acc_true=_accuracy(logits, s.labels_true)
                if s.bundle.true_labels_known else float("nan"),
                test_acc=test_acc,
                best_test_acc=s.best_test_acc if math.isfinite(s.best_test_acc) else None,
            )
            if det is not None:
                row.update(_detection_row(det, s.noisy, s.bundle.true_labels_known))
            row.update(
                ssl=bool(cfg.method == "moit" and epoch > cfg.correction_start),
                memory_filled=s.memory.filled if s.memory is not None else 0,
                time_s=t_train, eval_time_s=t_eval, detect_time_s=t_detect,
                epoch_time_s=time.perf_counter() - t0,
                images_per_s=n_images / t_train if t_train > 0 else float("nan"),
            )
            runs.append_metrics(s.run_dir, row)
            if epoch in snapshots:
                runs.save_snapshot(s.run_dir, epoch, feats, s.labels_given, s.labels_true)
            if epoch == cfg.epochs:
                runs.save_final(s.run_dir, feats, det, s.labels_given, s.labels_true)
            runs.save_checkpoint(s.run_dir / runs.CHECKPOINT_FILE, _checkpoint_state(s, epoch))
            bar.set_postfix(epoch=epoch, loss=f"{terms.get('loss', float('nan')):.3f}",
                            test=f"{test_acc:.3f}", refresh=False)
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        bar.close()
    return s.run_dir


def _set_threads() -> None:
    # one intra-op thread per core; torch's default can oversubscribe small containers
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if n and torch.get_num_threads() > n:
        torch.set_num_threads(n)


def _build_config(cfg: TrainConfig | None, preset: str | None, overrides: dict) -> TrainConfig:
    if cfg is None:
        return make_preset(preset, **overrides)
    if preset is not None:
        raise ValueError("pass either a TrainConfig or a preset name, not both")
    return cfg.replace(**overrides) if overrides else cfg


def train(cfg: TrainConfig | None = None, progress: bool | None = None, *,
          preset: str | None = None, out_dir: str | Path | None = None,
          on_epoch_end: EpochCallback | None = None, data: tuple | None = None,
          **overrides: Any) -> Path:
    """Train one configuration into a new run directory and return its path.

    cfg: a TrainConfig; or ``preset`` (a name in config.PRESETS) plus field ``overrides``.
    progress: tqdm bars (None: ``cfg.progress``). out_dir: the run directory (default
    ``runs_root/name``). on_epoch_end: called with each metrics row.
    data: ``(DatasetBundle, NoisyLabels)`` to train on instead of loading ``cfg.dataset``
    (benchmarks on synthetic data; such a run cannot be resumed or reloaded by name).
    The configuration is validated before any data is loaded or any epoch runs.
    """
    cfg = _build_config(cfg, preset, overrides).validate()
    if out_dir is not None:
        out = Path(out_dir)
        run_dir = runs.create_run_dir(out.parent, out.name, overwrite=cfg.overwrite)
    else:
        run_dir = runs.create_run_dir(cfg.runs_root, cfg.name or cfg.default_name(cfg.preset),
                                      overwrite=cfg.overwrite)
    _set_threads()
    try:
        s = _setup(cfg, run_dir, data)
    except Exception:
        if not any(run_dir.iterdir()):  # nothing written yet: leave no empty run behind
            run_dir.rmdir()
        raise
    _write_run_header(s)
    return _train_loop(s, cfg.progress if progress is None else progress, on_epoch_end)


def resume(run_dir: str | Path, progress: bool | None = None, *,
           on_epoch_end: EpochCallback | None = None, **overrides: Any) -> Path:
    """Continue a run from its checkpoint.pt, on the same trajectory.

    overrides: only ``RESUMABLE_FIELDS`` (e.g. ``epochs`` to extend a finished run).
    Metric rows after the checkpoint's epoch (from an interrupted epoch) are dropped.
    """
    run_dir = Path(run_dir)
    run = runs.load_run(run_dir)
    bad = sorted(set(overrides) - set(RESUMABLE_FIELDS))
    if bad:
        raise ValueError(f"cannot change {', '.join(bad)} when resuming (it would change the "
                         f"trajectory); resumable fields: {', '.join(RESUMABLE_FIELDS)}. Start "
                         "a new run with --name instead")
    cfg = TrainConfig.from_dict(run.config).replace(**overrides).validate()
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT_FILE)
    if state["epoch"] >= cfg.epochs:
        raise ValueError(f"{run_dir} already finished epoch {state['epoch']} of {cfg.epochs}; "
                         "pass --epochs N (N larger) to train further")
    _set_threads()
    s = _setup(cfg, run_dir)
    _restore(s, state)
    runs._truncate_metrics(run_dir, state["epoch"])
    if overrides:
        runs.write_json_atomic(run_dir / runs.CONFIG_FILE, dict(run.config, **overrides))
    return _train_loop(s, cfg.progress if progress is None else progress, on_epoch_end)


# --------------------------------------------------------------------------- MOIT+


@dataclass
class FinetuneSetup:
    """MOIT+ before its first step: the MOIT model with a fresh classifier, and the clean set."""

    model: nn.Module
    train_indices: np.ndarray   # (n_clean,) dataset indices of the samples marked clean
    base_config: dict
    base_state: dict            # the MOIT checkpoint
    run: Any                    # runs.Run of the MOIT run


def prepare_finetune(run_dir: str | Path, fcfg: FinetuneConfig) -> FinetuneSetup:
    """Load the finished run's final weights and LAST detection's clean mask, and re-initialise
    the classifier head (spec §4)."""
    from moit_explore import models

    run = runs.load_run(run_dir)
    final_path = Path(run_dir) / runs.EMBEDDINGS_DIR / runs.FINAL_FILE
    if not final_path.is_file():
        raise FileNotFoundError(f"{final_path} does not exist: the run has not finished. Finish "
                                f"it first (python -m moit_explore train --resume {run_dir})")
    final = run.final()
    if "clean" not in final:
        raise ValueError(f"{final_path} holds no detection (the run used --detect off); MOIT+ "
                         "needs the clean mask of the last detection")
    state = runs.load_checkpoint(Path(run_dir) / runs.CHECKPOINT_FILE)
    cfg = TrainConfig.from_dict(run.config)
    if state["epoch"] != cfg.epochs:
        raise ValueError(f"the checkpoint of {run_dir} is from epoch {state['epoch']}, not the "
                         f"final epoch {cfg.epochs}; resume the run to its end first")
    c = int(run.config["num_classes"])
    in_ch = int(run.config["image_shape"][2])
    model = models.build_model(cfg.arch, c, in_ch, width=cfg.width, projection=cfg.projection,
                               embed_dim=cfg.embed_dim, shortcut=cfg.shortcut)
    model.load_state_dict(state["model"])
    torch.manual_seed(fcfg.seed)
    models.reset_classifier(model)
    indices = np.flatnonzero(np.asarray(final["clean"], dtype=bool))
    if len(indices) < 2:
        raise ValueError(f"the last detection of {run_dir} marked {len(indices)} samples clean; "
                         "MOIT+ needs at least 2")
    return FinetuneSetup(model=model, train_indices=indices, base_config=run.config,
                         base_state=state, run=run)


def finetune_step(model: nn.Module, batch: Batch, fcfg: FinetuneConfig, gen: torch.Generator,
                  device: torch.device, amp: str, bootstrap: bool) -> dict[str, Tensor]:
    """One MOIT+ step (spec §4) on the single "simple" view: ``{"mixup": loss}``, or with
    ``bootstrap`` (epochs > bootstrap_start) ``{"bootstrap": loss}``, mixup with hard
    bootstrapping where z_hat = argmax of the model on the non-augmented ``batch.x0``
    (no gradient; the model in its current mode, train during fine-tuning, as the release).
    """
    from moit_explore import losses

    xm, perm, lam = losses.mixup(batch.views[0], fcfg.alpha, gen)
    with _autocast(device, amp):
        logits, _ = model(xm)
    y = batch.y
    if not bootstrap:
        return {"mixup": losses.mixup_ce(logits, y, y[perm], lam)}
    if batch.x0 is None:
        raise ValueError("hard bootstrapping needs the non-augmented images batch.x0")
    with torch.no_grad(), _autocast(device, amp):
        z_hat = model(batch.x0)[0].argmax(1)
    return {"bootstrap": losses.mixup_bootstrap_loss(logits, y, y[perm], z_hat, z_hat[perm],
                                                     lam, beta=fcfg.beta)}


def finetune(run_dir: str | Path, fcfg: FinetuneConfig | None = None,
             progress: bool | None = None, *, on_epoch_end: EpochCallback | None = None,
             **overrides: Any) -> Path:
    """MOIT+ (spec §4): fine-tune a finished run on its detected clean samples.

    Writes ``run_dir/<fcfg.name>`` (default ``finetune/``), a run directory of the same form.
    fcfg None: the fine-tuning preset matching the run's preset, plus ``overrides``.
    Single view (``fcfg.augment``, spec: "simple"); mixup CE until ``bootstrap_start``, then
    mixup + hard bootstrapping with z_hat = argmax of the model on the non-augmented image.
    """
    from tqdm.auto import tqdm


    run_dir = Path(run_dir)
    if fcfg is None:
        base = runs.load_run(run_dir).config
        fcfg = finetune_preset(finetune_preset_for(base.get("preset"), base.get("rate"),
                                                   base.get("noise")), **overrides)
    elif overrides:
        fcfg = fcfg.replace(**overrides)
    fcfg.validate()
    setup = prepare_finetune(run_dir, fcfg)
    cfg = TrainConfig.from_dict(setup.base_config)
    out = runs.create_run_dir(run_dir, fcfg.name, overwrite=fcfg.overwrite)
    progress = fcfg.progress if progress is None else progress
    _set_threads()

    device = resolve_device(fcfg.device)
    amp = fcfg.amp if fcfg.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    bundle, noisy = load_data(cfg)
    model = setup.model.to(device)
    if fcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=fcfg.lr, momentum=fcfg.momentum,
                                weight_decay=fcfg.weight_decay)
    scheduler = lr_schedule(optimizer, fcfg.lr_milestones, fcfg.lr_gamma)
    images, test_images, labels_given, labels_true, test_labels, normalize = \
        _device_data(bundle, noisy, device)
    keep = torch.from_numpy(setup.train_indices).to(device)
    # the clean subset, with its GIVEN labels
    pipeline = GpuPipeline(images[keep], labels_given[keep],
                           _build_augment(fcfg.augment, bundle, cfg.crop_padding),
                           normalize, min(fcfg.batch_size, len(keep)), fcfg.channels_last,
                           indices=keep, drop_last=fcfg.drop_last)
    train_mask = np.zeros(len(labels_given), dtype=bool)
    train_mask[setup.train_indices] = True

    cfgd = dict(setup.base_config)
    cfgd.update(fcfg.to_dict())
    cfgd.update(method="moit+", base_method=setup.base_config.get("method"),
                base_run=str(run_dir.resolve()), finetune=fcfg.to_dict(), n_clean=int(len(keep)),
                device_resolved=str(device), amp_resolved=amp, augment_resolved=fcfg.augment)
    runs.write_json_atomic(out / runs.CONFIG_FILE, cfgd)
    from moit_explore import noise as noise_mod

    with runs._atomic_target(out / runs.NOISE_FILE, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            noise_mod.save_noise(f, noisy)
    sel = _detection_row(_FixedSelection(train_mask), noisy, bundle.true_labels_known)

    best = float("-inf")
    snapshots = set(fcfg.snapshot_epochs) | {fcfg.epochs}
    bar = tqdm(total=fcfg.epochs * len(pipeline), disable=not progress,
               desc=f"moit+ {run_dir.name}", unit="step", dynamic_ncols=True)
    try:
        for epoch in range(1, fcfg.epochs + 1):
            t0 = time.perf_counter()
            order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(
                _epoch_seed(fcfg.seed, epoch, 2)))
            gen = torch.Generator(device=device).manual_seed(_epoch_seed(fcfg.seed, epoch, 3))
            bootstrap = epoch > fcfg.bootstrap_start
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            sums: dict[str, Tensor] = {}
            n_steps = n_images = 0
            for batch in pipeline.batches(order, 1, bootstrap, gen):
                ((key, loss),) = finetune_step(model, batch, fcfg, gen, device, amp,
                                               bootstrap).items()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums[key] = sums.get(key, 0) + loss.detach()
                n_steps += 1
                n_images += int(batch.idx.shape[0])
                bar.update(1)
            scheduler.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_train = time.perf_counter() - t0
            terms = {f"loss_{k}": float(v.item()) / n_steps for k, v in sums.items()}
            loss_mean = sum(terms.values())
            if not math.isfinite(loss_mean):
                raise FloatingPointError(f"the MOIT+ loss became {loss_mean} in epoch {epoch}; "
                                         "lower --lr")
            logits_all, h, z = embed(model, images, normalize, fcfg.eval_batch_size, amp,
                                     fcfg.channels_last)
            test_logits, _, _ = embed(model, test_images, normalize, fcfg.eval_batch_size, amp,
                                      fcfg.channels_last)
            test_acc = _accuracy(test_logits, test_labels)
            if math.isfinite(test_acc):
                best = max(best, test_acc)
            row = {"epoch": epoch, "lr": lr, "loss": loss_mean, **terms,
                   "train_acc_given": _accuracy(logits_all, labels_given),
                   "train_acc_true": _accuracy(logits_all, labels_true)
                   if bundle.true_labels_known else float("nan"),
                   "train_acc_clean_subset": _accuracy(logits_all[keep], labels_given[keep]),
                   "test_acc": test_acc, "best_test_acc": best if math.isfinite(best) else None,
                   **sel, "bootstrap": bootstrap, "time_s": t_train,
                   "epoch_time_s": time.perf_counter() - t0,
                   "images_per_s": n_images / t_train if t_train > 0 else float("nan")}
            runs.append_metrics(out, row)
            feats = z if cfg.feature_kind() == "z" else h
            if epoch in snapshots:
                runs.save_snapshot(out, epoch, feats, labels_given, labels_true)
            if epoch == fcfg.epochs:
                # the final features scored by the same detection as the base run
                det = None
                if cfg.k < len(labels_given):
                    from moit_explore import detection

                    det = detection.detect_noise(feats, labels_given.cpu().numpy().copy(),
                                                 bundle.num_classes, k=cfg.k,
                                                 balance=cfg.balance, backend=cfg.detect_backend)
                runs.save_final(out, feats, det, labels_given, labels_true)
                _add_to_npz(out / runs.EMBEDDINGS_DIR / runs.FINAL_FILE, train_mask=train_mask)
            runs.save_checkpoint(out / runs.CHECKPOINT_FILE, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "clean": torch.from_numpy(train_mask),
                "best_test_acc": float(best), "rng": _rng_state(),
                "config": runs._jsonable(fcfg.to_dict())})
            bar.set_postfix(epoch=epoch, loss=f"{loss_mean:.3f}", test=f"{test_acc:.3f}",
                            refresh=False)
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        bar.close()
    return out


@dataclass
class _FixedSelection:
    """The MOIT+ training set seen as a detection (clean = trained on), for its metrics."""

    clean: np.ndarray
    discrepancy: Any = None


def _add_to_npz(path: Path, **arrays: np.ndarray) -> None:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    runs._save_npz_atomic(path, data)
