"""The epoch engine: one run in memory (:class:`Session`) and the epoch loop every method
shares, MOIT+ included (:func:`run`). :mod:`moit_explore.training.train` builds the sessions.

One epoch:

1. train: one pass over the training set in a seeded random order, one step per batch
   (:mod:`moit_explore.training.steps`). The order, the augmentation and the mixup permutations come
   from generators seeded by (seed, epoch), the mixing coefficients from a CPU generator
   seeded likewise (on a CPU run: the same generator), so a resumed run follows the same
   trajectory;
2. embed: features and logits of every training image, non-augmented, model in eval mode
   (the memorisation curve ``train_acc_given`` / ``train_acc_true`` comes from here);
3. detect (spec §3): kNN soft labels on those features with the GIVEN labels. Training: the
   clean mask used by MOIT's classification loss in the next epoch, scored against the true
   labels. MOIT+: once, on the final features, with the base run's detection;
4. test accuracy; one row in metrics.jsonl; snapshots; the final file; an atomic checkpoint.

Under torchrun (``Session.dist``, :mod:`moit_explore.training.distributed`) the training model
shards
each global batch over the processes, the embedding is sharded and gathered, rank 0 detects
and broadcasts the clean mask, and only rank 0 writes.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from moit_explore.maths import detection
from moit_explore.training import runs
from moit_explore.training.config import FinetuneConfig, TrainConfig
from moit_explore.training.methods import Method
from moit_explore.training.steps import EpochContext, autocast

__all__ = ["EpochCallback", "Session", "checkpoint_state", "embed", "epoch_generators",
           "lr_schedule", "resolve_device", "restore", "run"]

EpochCallback = Callable[[dict], None]


# --------------------------------------------------------------------------- set-up helpers


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu. A requested but missing CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use "
                         "--device cpu (or auto)")
    return dev


def lr_schedule(optimizer: torch.optim.Optimizer, milestones: tuple[int, ...],
                gamma: float) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step decay, stepped once after every epoch: epoch ``e`` (1-based) trains at
    ``lr * gamma ** #{m in milestones : m <= e}``, so with milestones (125, 200) epoch 125 is
    the first at the lower LR, as in the release (its scheduler steps at each epoch's start)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [m - 1 for m in milestones],
                                                gamma=gamma)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (seed, epoch, purpose)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + stream * 104_729) % (2**63 - 1)


def epoch_generators(seed: int, epoch: int, n_samples: int, device: torch.device,
                     streams: tuple[int, int, int] = (0, 1, 4)
                     ) -> tuple[Tensor, torch.Generator, torch.Generator | None]:
    """The random streams of one epoch: the data order (a CPU permutation of ``n_samples``), the
    device generator (augmentation, mixup permutations) and the host generator of the mixing
    coefficients (None on a CPU run: the device generator is then a CPU one and draws them).
    streams: the ``epoch_seed`` streams of the three (training (0, 1, 4), MOIT+ (2, 3, 5))."""
    s_order, s_device, s_host = streams
    order = torch.randperm(n_samples, generator=torch.Generator().manual_seed(
        epoch_seed(seed, epoch, s_order)))
    gen = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch, s_device))
    host = None if device.type == "cpu" else torch.Generator().manual_seed(
        epoch_seed(seed, epoch, s_host))
    return order, gen, host


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: int | None = None) -> None:
    """torch's intra-op threads: ``n``, or (None) at most one per core this process may use
    (torch's default can oversubscribe small containers). The package's one thread setting."""
    if n is not None:
        torch.set_num_threads(n)
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores and torch.get_num_threads() > cores:
        torch.set_num_threads(cores)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch ops with ``n`` intra-op threads, then restore (None: leave the setting).

    WHY: detection's small per-k ops (sorts, bincounts on 60k rows) run several times slower
    with OpenMP threads that spin against each other on a busy 2-core machine."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    set_threads(n)
    try:
        yield
    finally:
        set_threads(before)


def unwrap(model: nn.Module) -> nn.Module:
    """The module behind a ``torch.compile`` wrapper (itself when not compiled)."""
    return getattr(model, "_orig_mod", model)


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


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def embed(model: nn.Module, images: Tensor, normalize: Any, batch_size: int,
          amp: str = "none", channels_last: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, h and z of every image, non-augmented, model in eval mode.

    images: uint8 (N, C, H, W) on the model's device. Returns float32 (N, C), (N, F), (N, D)
    on that device. The model's train/eval mode is restored afterwards.
    """
    m = unwrap(model)
    was_training = m.training
    m.eval()
    logits, hs, zs = [], [], []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = normalize(images[i:i + batch_size])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(images.device, amp):
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


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy; NaN for no samples."""
    if logits.shape[0] == 0:
        return float("nan")
    return float((logits.argmax(1) == labels).float().mean().item())


def detection_row(clean: Any, discrepancy: Any, noisy: Any, true_known: bool) -> dict:
    """The metrics row's ``det_*`` fields of a clean mask, scored against the true labels."""
    if not true_known:
        return {"det_selected_frac": float(np.mean(clean))}
    m = detection.detection_metrics(np.asarray(clean, dtype=bool),
                                    np.asarray(noisy.is_noisy, dtype=bool), discrepancy)
    return {f"det_{k}": v for k, v in m.items()}


# --------------------------------------------------------------------------- the session


@dataclass
class Session:
    """Everything a run holds in memory (built by :mod:`moit_explore.training.train`).

    cfg: what the loop follows (epochs, seed, snapshots, evaluation, the step's
    hyper-parameters): the run's TrainConfig, or for MOIT+ its FinetuneConfig. base_cfg: the
    TrainConfig of the data, the model and the detection (the base run's for MOIT+).
    streams: the ``epoch_seed`` streams of the data order, the device generator and the host
    generator of the mixing coefficients. train_subset: MOIT+ trains on a fixed subset (the
    base run's clean samples, dataset indices); its clean mask is then ``clean`` for good and
    the detection runs once, on the final features.
    """

    cfg: TrainConfig | FinetuneConfig
    base_cfg: TrainConfig
    method: Method
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
    streams: tuple[int, int, int] = (0, 1, 4)
    clean: Tensor | None = None
    train_subset: Tensor | None = None
    start_epoch: int = 1
    best_test_acc: float = float("-inf")
    dist: Any = None  # distributed.Dist under torchrun, else None

    @property
    def writes(self) -> bool:
        """Whether this process writes the run directory (rank 0, or the only process)."""
        return self.dist is None or self.dist.is_main

    def detects(self, epoch: int) -> bool:
        """Whether the detection runs after ``epoch``."""
        last = epoch == self.cfg.epochs
        if self.method.is_fine_tuning:
            return last
        mode = self.base_cfg.detect_mode()
        return mode == "epoch" or (mode == "final" and last)

    def detect(self, feats: Tensor) -> Any:
        # a copy of the given labels: detection reads them, the run's tensor stays untouched
        c = self.base_cfg
        return detection.detect_noise(feats, self.labels_given.cpu().numpy().copy(),
                                      self.bundle.num_classes, k=c.k, balance=c.balance,
                                      backend=c.detect_backend)

    def generators(self, epoch: int) -> tuple[Tensor, torch.Generator, torch.Generator | None]:
        """The epoch's data order (CPU), device generator and host generator (None on a CPU
        run: the device generator is then a CPU one and draws the coefficients too)."""
        return epoch_generators(self.cfg.seed, epoch, self.pipeline.n_samples, self.device,
                                self.streams)


def checkpoint_state(s: Session, epoch: int) -> dict:
    """What resuming after ``epoch`` needs (weights_only-loadable)."""
    return {
        "epoch": int(epoch),
        "model": unwrap(s.model).state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "memory": s.memory.state_dict() if s.memory is not None else None,
        "clean": s.clean.cpu() if s.clean is not None else None,
        "best_test_acc": float(s.best_test_acc),
        "rng": _rng_state(),
        "config": runs.jsonable(s.cfg.to_dict()),
    }


def restore(s: Session, state: dict) -> None:
    """Put a :func:`checkpoint_state` back into a freshly built session."""
    unwrap(s.model).load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    if s.memory is not None and state.get("memory") is not None:
        s.memory.load_state_dict(state["memory"])
    s.clean = state["clean"].to(s.device) if state.get("clean") is not None else None
    s.best_test_acc = float(state.get("best_test_acc", float("-inf")))
    s.start_epoch = int(state["epoch"]) + 1
    _set_rng_state(state["rng"])


# --------------------------------------------------------------------------- the loop


def _run_epoch(ctx: EpochContext, pipeline: Any, step: Callable, n_views: int, with_x0: bool,
               optimizer: torch.optim.Optimizer, order: Tensor, bar: Any) -> tuple[dict, int]:
    """One pass over the training set; returns the mean loss terms and the images seen.

    The loop never reads a value back from the device until the epoch's end."""
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


def run(s: Session, progress: bool, on_epoch_end: EpochCallback | None = None) -> Path:
    """Train ``s`` from ``s.start_epoch`` to its last epoch; returns the run directory."""
    bar = tqdm(total=(s.cfg.epochs - s.start_epoch + 1) * len(s.pipeline),
               disable=not (progress and s.writes), desc=f"{s.method.name} {s.run_dir.name}",
               unit="step", dynamic_ncols=True)
    try:
        for epoch in range(s.start_epoch, s.cfg.epochs + 1):
            clock = _Clock()
            lr = s.optimizer.param_groups[0]["lr"]
            with clock("time_s"):      # one pass of the method's step over the training set
                terms, n_images = train_epoch(s, epoch, bar)
            with clock("eval_time_s"):  # embed the training set, score the test set
                logits, feats, test_acc = evaluate(s)
            if not bool(torch.isfinite(feats).all()):  # eval-mode batch norm can overflow
                raise FloatingPointError(     # while the training loss still looks finite
                    f"the features of the training images became NaN or infinite in epoch "
                    f"{epoch} (the weights or batch-norm statistics overflowed); lower --lr")
            with clock("detect_time_s"):  # kNN soft labels -> the clean mask of epoch + 1
                det = detect(s, epoch, feats)
            if s.writes:
                row = _metrics_row(s, epoch, lr, terms, logits, test_acc, det)
                row.update(clock.times, epoch_time_s=clock.total,
                           images_per_s=n_images / max(clock.times["time_s"], 1e-9))
                record(s, epoch, row, feats, det)
                bar.set_postfix(epoch=epoch, loss=f"{terms.get('loss', float('nan')):.3f}",
                                test=f"{test_acc:.3f}", refresh=False)
                if on_epoch_end is not None:
                    on_epoch_end(row)
    finally:
        bar.close()
    return s.run_dir


class _Clock:
    """Wall-clock seconds of named parts of an epoch (CUDA work is synchronised at each end)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Any:
        t0 = time.perf_counter()
        yield
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.times[name] = time.perf_counter() - t0

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start


def train_epoch(s: Session, epoch: int, bar: Any) -> tuple[dict, int]:
    """One epoch of the method's step, then the LR schedule; the mean loss terms and images."""
    order, gen, host_gen = s.generators(epoch)
    ctx = EpochContext(model=s.train_model, cfg=s.cfg, epoch=epoch, gen=gen, device=s.device,
                       amp=s.amp, memory=s.memory, clean=s.clean, host_gen=host_gen)
    out = _run_epoch(ctx, s.pipeline, s.method.step, s.method.n_views,
                     s.method.needs_x0(s.cfg, epoch), s.optimizer, order, bar)
    s.scheduler.step()
    if s.dist is not None:
        s.dist.end_of_epoch(s.model, epoch)
    return out


def evaluate(s: Session) -> tuple[Tensor, Tensor, float]:
    """Logits and detection features of every training image (non-augmented, eval mode), and
    the test accuracy."""
    embed_all = embed if s.dist is None else s.dist.embed
    c = s.cfg
    logits, h, z = embed_all(s.model, s.images, s.normalize, c.eval_batch_size, s.amp,
                             c.channels_last)
    test_logits, _, _ = embed_all(s.model, s.test_images, s.normalize, c.eval_batch_size, s.amp,
                                  c.channels_last)
    test_acc = accuracy(test_logits, s.test_labels)
    if math.isfinite(test_acc):
        s.best_test_acc = max(s.best_test_acc, test_acc)
    return logits, (z if s.base_cfg.feature_kind() == "z" else h), test_acc


def detect(s: Session, epoch: int, feats: Tensor) -> Any:
    """The epoch's detection (None when it does not run, and on ranks other than 0). A
    training run keeps its clean mask for the next epoch (spec §3.7); under torchrun rank 0
    detects and broadcasts it. MOIT+ keeps the clean set it trains on."""
    if not s.detects(epoch):
        return None
    det = s.detect(feats) if s.writes else None
    if not s.method.is_fine_tuning:
        clean = None if det is None else np.asarray(det.clean, dtype=bool)
        s.clean = torch.from_numpy(clean).to(s.device) if s.dist is None \
            else s.dist.broadcast_mask(clean, feats.shape[0])
    return det


def record(s: Session, epoch: int, row: dict, feats: Tensor, det: Any) -> None:
    """Write the epoch to the run directory: its metrics row, a snapshot, the final file after
    the last epoch, and the checkpoint (each atomic)."""
    runs.append_metrics(s.run_dir, row)
    if epoch in set(s.cfg.snapshot_epochs) | {s.cfg.epochs}:
        runs.save_snapshot(s.run_dir, epoch, feats, s.labels_given, s.labels_true)
    if epoch == s.cfg.epochs:
        extra = {"train_mask": s.clean.cpu().numpy()} if s.method.is_fine_tuning else {}
        runs.save_final(s.run_dir, feats, det, s.labels_given, s.labels_true, **extra)
    runs.save_checkpoint(s.run_dir / runs.CHECKPOINT_FILE, checkpoint_state(s, epoch))


def _metrics_row(s: Session, epoch: int, lr: float, terms: dict, logits: Tensor,
                 test_acc: float, det: Any) -> dict[str, Any]:
    """The epoch's losses, accuracies and detection scores (timings are added by :func:`run`)."""
    row: dict[str, Any] = {"epoch": epoch, "lr": lr}
    row.update({("loss" if k == "loss" else f"loss_{k}"): v for k, v in terms.items()})
    known = s.bundle.true_labels_known
    row.update(train_acc_given=accuracy(logits, s.labels_given),
               train_acc_true=accuracy(logits, s.labels_true) if known else float("nan"))
    if s.method.is_fine_tuning:
        keep = s.train_subset
        row["train_acc_clean_subset"] = accuracy(logits[keep], s.labels_given[keep])
    row.update(test_acc=test_acc,
               best_test_acc=s.best_test_acc if math.isfinite(s.best_test_acc) else None)
    if s.method.is_fine_tuning:
        # MOIT+'s training set seen as a detection (clean = trained on)
        row.update(detection_row(s.clean.cpu().numpy(), None, s.noisy, known))
    elif det is not None:
        row.update(detection_row(det.clean, det.discrepancy, s.noisy, known))
    row.update(s.method.phase(s.cfg, epoch))
    row["memory_filled"] = s.memory.filled if s.memory is not None else 0
    return row
