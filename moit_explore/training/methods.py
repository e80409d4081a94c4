"""The training methods: each one :class:`Method` object that carries everything about it.

The engine, the configs, the CLI, the reports and the course ask a method what it does; none of
them tests a method's name. Adding a method is one entry of :data:`METHODS` (and its step in
:mod:`moit_explore.training.steps`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from moit_explore.training import steps
from moit_explore.training.pipelines import Batch

__all__ = ["METHODS", "Method", "TRAINING_METHODS", "fine_tuning", "get_method"]


def _never(cfg: Any, epoch: int) -> bool:
    return False


def _always(cfg: Any, epoch: int) -> bool:
    return True


@dataclass(frozen=True)
class Method:
    """One training method.

    name: the config's ``method`` value. label: how figures and tables name it. summary: one
    line for the CLI's help. step: one batch in, the loss terms out. n_views: augmented views
    per image. augment: the default augmentation (``augment="auto"``). detect_features: the
    features the detection searches by default ("z": the trained projection; "h": the encoder,
    for methods whose projection head is never trained). uses_memory: the cross-batch memory
    (and a trained projection head). corrects_labels: the step reads the previous epoch's clean
    mask (so a detection must run after every epoch). fine_tunes: the method this one
    fine-tunes (MOIT+ fine-tunes a finished MOIT run on its clean samples; such a method trains
    on that subset and detects once, on its final features). needs_x0(cfg, epoch): whether the
    step reads the non-augmented images that epoch. phase(cfg, epoch): the metrics row's flags
    of the epoch's phase.
    """

    name: str
    label: str
    summary: str
    step: Callable[[steps.EpochContext, Batch], dict[str, Tensor]]
    n_views: int
    augment: str
    detect_features: str
    uses_memory: bool = False
    corrects_labels: bool = False
    fine_tunes: str | None = None
    needs_x0: Callable[[Any, int], bool] = _never
    phase: Callable[[Any, int], dict[str, bool]] = lambda cfg, epoch: {"ssl": False}

    @property
    def is_fine_tuning(self) -> bool:
        """Whether this method continues a finished run (MOIT+) instead of training anew."""
        return self.fine_tunes is not None

    @property
    def can_be_fine_tuned(self) -> bool:
        """Whether another method fine-tunes finished runs of this one."""
        return any(m.fine_tunes == self.name for m in METHODS.values())


def _ssl_phase(cfg: Any, epoch: int) -> dict[str, bool]:
    # the semi-supervised classification loss (clean mask) runs from epoch > correction_start
    return {"ssl": epoch > cfg.correction_start}


def _bootstrap_phase(cfg: Any, epoch: int) -> dict[str, bool]:
    return {"bootstrap": steps.bootstrapping(cfg, epoch)}


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ce", "CE", "cross-entropy", steps.ce_step, 1, "simple", "h"),
    Method("mixup", "mixup", "mixup cross-entropy", steps.mixup_step, 1, "simple", "h"),
    Method("supcon", "SupCon", "SupCon + CE head", steps.supcon_step, 2, "complex", "z",
           uses_memory=True),
    Method("icl", "ICL", "interpolated contrastive + mixup CE", steps.icl_step, 2, "complex",
           "z", uses_memory=True),
    Method("moit", "MOIT", "spec §2-3", steps.moit_step, 2, "complex", "z", uses_memory=True,
           corrects_labels=True, needs_x0=_always, phase=_ssl_phase),
    Method("moit+", "MOIT+", "spec §4, fine-tunes a finished MOIT run", steps.moit_plus_step,
           1, "simple", "z", fine_tunes="moit", needs_x0=steps.bootstrapping,
           phase=_bootstrap_phase),
)}

# the methods a TrainConfig trains from scratch (the others fine-tune a finished run)
TRAINING_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if not m.is_fine_tuning)


def get_method(name: str) -> Method:
    """The method called ``name`` (a run's config.json ``method``); a clear error otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def fine_tuning() -> Method:
    """The method that fine-tunes a finished run (MOIT+)."""
    return next(m for m in METHODS.values() if m.is_fine_tuning)
