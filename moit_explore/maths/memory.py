"""Cross-batch memory (XBM): a FIFO queue of detached embeddings and their given labels.

MOIT enqueues the current 2B embeddings every step and then computes a second contrastive
term with the current rows as anchors and every filled slot as a candidate (spec §2a).
The write rule follows the release: when the next batch would overflow, it is written to
the LAST n slots and the write pointer wraps to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MemoryView", "CrossBatchMemory", "memory_size"]


def memory_size(num_classes: int, per_class: int = 100) -> int:
    """Capacity MOIT gives the memory: ``2 * per_class * num_classes`` slots (spec §2a)."""
    if num_classes < 1 or per_class < 1:
        raise ValueError(
            f"memory_size needs num_classes >= 1 and per_class >= 1, got {num_classes}, "
            f"{per_class}; pass positive integers"
        )
    return 2 * per_class * num_classes


@dataclass
class MemoryView:
    """What the losses read from the memory.

    feats: (M, D) float32, the filled slots only, detached.
    labels: (M,) int64 given labels of those slots.
    batch_slots: (n,) int64, ``batch_slots[r]`` is the slot (row of ``feats``) holding row r of
        the last enqueued batch.
    """

    feats: Tensor
    labels: Tensor
    batch_slots: Tensor


class CrossBatchMemory:
    """FIFO of ``size`` slots of ``dim``-dimensional embeddings (float32) and int64 labels.

    ``device=None`` places the buffers on the device of the first enqueued batch, so a trainer
    that forgets to pass its device does not silently copy every step between host and GPU.
    """

    def __init__(self, size: int, dim: int, device: torch.device | str | None = None) -> None:
        if int(size) < 1 or int(dim) < 1:
            raise ValueError(
                f"CrossBatchMemory needs size >= 1 and dim >= 1, got size={size}, dim={dim}; "
                "use e.g. memory_size(num_classes) slots and the embedding dimension"
            )
        self.size = int(size)
        self.dim = int(dim)
        self._device_fixed = device is not None
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.feats = torch.zeros(self.size, self.dim, dtype=torch.float32, device=dev)
        self.labels = torch.full((self.size,), -1, dtype=torch.int64, device=dev)
        self.ptr = 0
        self._filled = 0
        self.batch_slots = torch.zeros(0, dtype=torch.int64, device=dev)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def filled(self) -> int:
        """Number of valid slots; they are always the prefix ``[0, filled)``."""
        return self._filled

    def __len__(self) -> int:
        return self._filled

    def _to(self, device: torch.device) -> None:
        self.feats = self.feats.to(device)
        self.labels = self.labels.to(device)
        self.batch_slots = self.batch_slots.to(device)

    @torch.no_grad()
    def enqueue(self, z: Tensor, labels: Tensor) -> Tensor:
        """Write a batch; return the slot of each row.

        z: (n, D) embeddings (detached and stored as float32).
        labels: (n,) integer given labels.
        Returns: (n,) int64 slot indices on the memory's device.
        """
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(
                f"enqueue expects z of shape (n, {self.dim}), got {tuple(z.shape)}; pass the "
                "stacked L2-normalised projections torch.cat([z1, z2])"
            )
        n = z.shape[0]
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(
                f"enqueue expects labels of shape ({n},) to match z, got {tuple(labels.shape)}; "
                "pass torch.cat([y, y]) for the two views"
            )
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        if n > self.size:
            raise ValueError(
                f"batch of {n} rows does not fit a memory of {self.size} slots; make the memory "
                f"at least {n} slots (MOIT uses 2 * xbm_per_class * num_classes)"
            )
        if not self._device_fixed:
            self._to(z.device)
            self._device_fixed = True
        if self.ptr + n > self.size:
            # (release) overflow: the batch goes to the LAST n slots and the pointer wraps.
            start, self.ptr = self.size - n, 0
        else:
            start = self.ptr
            self.ptr += n
        self.feats[start:start + n] = z.detach().to(self.device, torch.float32)
        self.labels[start:start + n] = labels.to(self.device, torch.int64)
        # Writes start at 0 and grow contiguously; a wrap writes [size-n, size) with
        # size - n < old ptr, so the valid slots always form a prefix.
        self._filled = max(self._filled, start + n)
        self.batch_slots = torch.arange(start, start + n, dtype=torch.int64, device=self.device)
        return self.batch_slots.clone()

    def view(self) -> MemoryView:
        """The filled slots (views of the buffers, detached) and the last batch's slots."""
        f = self._filled
        return MemoryView(self.feats[:f].detach(), self.labels[:f], self.batch_slots)


    def state_dict(self) -> dict:
        """CPU copies of the buffers plus the pointers; loadable with ``weights_only=True``."""
        return {
            "feats": self.feats.detach().cpu().clone(),
            "labels": self.labels.cpu().clone(),
            "batch_slots": self.batch_slots.cpu().clone(),
            "ptr": int(self.ptr),
            "filled": int(self._filled),
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict` onto this memory's device."""
        missing = {"feats", "labels", "ptr", "filled"} - set(d)
        if missing:
            raise ValueError(
                f"memory state is missing {sorted(missing)}; pass a dict made by "
                "CrossBatchMemory.state_dict()"
            )
        feats, labels = d["feats"], d["labels"]
        if tuple(feats.shape) != (self.size, self.dim) or tuple(labels.shape) != (self.size,):
            raise ValueError(
                f"memory state has feats {tuple(feats.shape)} / labels {tuple(labels.shape)}, "
                f"this memory is ({self.size}, {self.dim}); build CrossBatchMemory with the "
                "size and dim of the saved run"
            )
        ptr, filled = int(d["ptr"]), int(d["filled"])
        if not (0 <= ptr <= self.size and 0 <= filled <= self.size):
            raise ValueError(
                f"memory state has ptr={ptr}, filled={filled} outside [0, {self.size}]; "
                "the checkpoint is corrupt or from another memory size"
            )
        self.feats = feats.to(self.device, torch.float32).clone()
        self.labels = labels.to(self.device, torch.int64).clone()
        slots = d.get("batch_slots", torch.zeros(0, dtype=torch.int64))
        self.batch_slots = slots.to(self.device, torch.int64).clone()
        self.ptr, self._filled = ptr, filled
