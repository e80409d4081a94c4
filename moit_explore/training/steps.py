"""The training steps: one batch in, the loss terms out; their sum is back-propagated.

One step per method of :data:`~moit_explore.training.methods.METHODS`: ``ce`` and ``mixup``
(baselines on one view), ``supcon`` (SupCon + a CE head), ``icl`` (MOIT without detection),
``moit`` (spec §2-3) and ``moit+`` (spec §4, fine-tuning on the clean samples of a finished MOIT
run). Each reads its
hyper-parameters from ``ctx.cfg``: a TrainConfig, or for ``moit+`` a FinetuneConfig.

The steps are the GPU's hot path: they never read a value back from the device. The losses
are called with ``check=False`` (their argument checks read labels and permutations back),
and each mixing coefficient is drawn from ``ctx.lam_gen``, a generator on the CPU.
``tests/test_hot_path.py`` holds them to it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moit_explore.maths import losses
from moit_explore.training.pipelines import Batch

__all__ = ["EpochContext", "autocast", "bootstrapping", "ce_step", "icl_step", "memory_for",
           "mixup_step", "moit_plus_step", "moit_step", "supcon_step"]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``amp`` is "bf16", else nothing."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class EpochContext:
    """What a step needs besides the batch."""

    model: nn.Module
    cfg: Any                      # TrainConfig (moit+: FinetuneConfig)
    epoch: int
    gen: torch.Generator | None   # augmentation and permutations, on the device
    device: torch.device
    amp: str
    memory: Any = None            # memory.CrossBatchMemory
    clean: Tensor | None = None   # (N,) bool, the previous epoch's clean mask
    host_gen: torch.Generator | None = None  # lam on the CPU (None: gen, a CPU generator)

    @property
    def lam_gen(self) -> torch.Generator | None:
        """The generator of the mixing coefficients (lam is a host value, see losses.mixup)."""
        return self.gen if self.host_gen is None else self.host_gen


def memory_for(ctx: EpochContext, z1: Tensor, z2: Tensor, y: Tensor) -> Any:
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
        with autocast(ctx.device, ctx.amp):
            out.append(ctx.model(x))
    return out


def _predict(ctx: EpochContext, x: Tensor) -> Tensor:
    """Logits of ``x`` without gradient, the model in its current (train) mode."""
    with torch.no_grad(), autocast(ctx.device, ctx.amp):
        return ctx.model(x)[0]


def _mix(ctx: EpochContext, x: Tensor) -> tuple[Tensor, Tensor, float]:
    """Interpolate one view: (x_mixed, perm, lam), lam = max(l, 1 - l), l ~ Beta(alpha, alpha)."""
    return losses.mixup(x, ctx.cfg.alpha, ctx.gen, lam_generator=ctx.lam_gen, check=False)


def _clean_mask(ctx: EpochContext, batch: Batch) -> Tensor | None:
    """The batch's part of the previous epoch's clean mask, from epoch > correction_start."""
    if ctx.epoch <= ctx.cfg.correction_start:
        return None
    if ctx.clean is None:
        raise RuntimeError("label correction needs the previous epoch's detection; run with "
                           "--detect epoch")
    return ctx.clean[batch.idx]


def moit_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """One MOIT step (spec §2) on two complex views, each interpolated on its own::

        L = L_ICL (icl_batch + icl_memory) + L_CLS (cls_labeled + cls_unlabeled)
    """
    cfg, y = ctx.cfg, batch.y
    (xm1, perm1, lam1), (xm2, perm2, lam2) = _mix(ctx, batch.views[0]), _mix(ctx, batch.views[1])
    (logits1, z1), (logits2, z2) = _forward_views(ctx, [xm1, xm2])
    # f(x0) every step; as the release, this train-mode pass also feeds the batch-norm running
    # statistics with the non-augmented images
    logits0 = _predict(ctx, batch.x0)
    memory = memory_for(ctx, z1, z2, y)  # holds this batch; None until epoch > xbm_begin
    clean = _clean_mask(ctx, batch)      # None until epoch > correction_start
    icl = losses.icl_loss_terms(z1, z2, y, perm1, perm2, lam1, lam2, tau=cfg.tau, memory=memory,
                                num_classes=logits1.shape[1], check=False)
    cls = losses.classification_loss_terms(logits1, logits2, logits0, y, perm1, perm2, lam1,
                                           lam2, clean=clean, check=False)
    return {
        "icl_batch": icl["icl_batch"],          # L_ICL: the batch's interpolated positives ...
        "icl_memory": icl["icl_memory"],        # ... and the memory's (0 before xbm_begin)
        "cls_labeled": cls["cls_labeled"],      # L_CLS: mixup CE (on the clean samples) ...
        "cls_unlabeled": cls["cls_unlabeled"],  # ... soft CE towards softmax(f(x0)) on the rest
    }


def icl_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """ICL alone: L_ICL + mixup classification loss (no detection, no label correction)."""
    cfg, y = ctx.cfg, batch.y
    (xm1, perm1, lam1), (xm2, perm2, lam2) = _mix(ctx, batch.views[0]), _mix(ctx, batch.views[1])
    (logits1, z1), (logits2, z2) = _forward_views(ctx, [xm1, xm2])
    memory = memory_for(ctx, z1, z2, y)
    icl = losses.icl_loss_terms(z1, z2, y, perm1, perm2, lam1, lam2, tau=cfg.tau, memory=memory,
                                num_classes=logits1.shape[1], check=False)
    cls = losses.classification_loss_terms(logits1, logits2, None, y, perm1, perm2, lam1, lam2,
                                           check=False)
    return {"icl_batch": icl["icl_batch"], "icl_memory": icl["icl_memory"],
            "cls_labeled": cls["cls_labeled"]}


def supcon_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """Supervised contrastive loss on two views + a CE classifier on both views.

    Both views go through the model in ONE pass (batch-norm statistics pooled over the 2B
    images), as SupContrast, the baseline's reference implementation, does. ICL and MOIT instead
    forward each view on its own (:func:`_forward_views`), as the MOIT release does."""
    y = batch.y
    with autocast(ctx.device, ctx.amp):
        logits, z = ctx.model(torch.cat(batch.views))
    z1, z2 = z.chunk(2)
    memory = memory_for(ctx, z1, z2, y)
    supcon = losses.supcon_loss(z1, z2, y, tau=ctx.cfg.tau, memory=memory,
                                num_classes=logits.shape[1], check=False)
    ce = F.cross_entropy(logits.float(), torch.cat([y, y]))
    return {"supcon": supcon, "ce": ce}


def ce_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """Standard cross-entropy on one augmented view."""
    with autocast(ctx.device, ctx.amp):
        logits, _ = ctx.model(batch.views[0])
    return {"ce": F.cross_entropy(logits.float(), batch.y)}


def mixup_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """Mixup cross-entropy on one augmented view (Zhang et al. 2018)."""
    xm, perm, lam = _mix(ctx, batch.views[0])
    with autocast(ctx.device, ctx.amp):
        logits, _ = ctx.model(xm)
    return {"mixup": losses.mixup_ce(logits, batch.y, batch.y[perm], lam, check=False)}


def moit_plus_step(ctx: EpochContext, batch: Batch) -> dict[str, Tensor]:
    """One MOIT+ step (spec §4) on the single view: ``{"mixup": loss}`` until epoch
    ``bootstrap_start``, then ``{"bootstrap": loss}``, mixup with hard bootstrapping where
    z_hat = argmax of the model on the non-augmented ``batch.x0`` (no gradient; the model in
    its current mode, train during fine-tuning, as the release)."""
    cfg, y = ctx.cfg, batch.y
    xm, perm, lam = _mix(ctx, batch.views[0])
    with autocast(ctx.device, ctx.amp):
        logits, _ = ctx.model(xm)
    if not bootstrapping(cfg, ctx.epoch):
        return {"mixup": losses.mixup_ce(logits, y, y[perm], lam, check=False)}
    if batch.x0 is None:
        raise ValueError("hard bootstrapping needs the non-augmented images batch.x0")
    z_hat = _predict(ctx, batch.x0).argmax(1)
    return {"bootstrap": losses.mixup_bootstrap_loss(logits, y, y[perm], z_hat, z_hat[perm], lam,
                                                     beta=cfg.beta, check=False)}


def bootstrapping(cfg: Any, epoch: int) -> bool:
    """Whether MOIT+ trains with hard bootstrapping in ``epoch`` (after ``bootstrap_start``)."""
    return epoch > cfg.bootstrap_start
