"""Cross-batch memory: FIFO writes, the release's wrap-around rule, views and checkpoints."""

from __future__ import annotations

import io

import pytest
import torch

from moit_explore.maths.memory import CrossBatchMemory, MemoryView, memory_size


def _batch(n: int, dim: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose first feature (and label) is a running id, so every slot can be traced."""
    ids = torch.arange(start, start + n)
    z = torch.zeros(n, dim)
    z[:, 0] = ids.float()
    return z, ids


def test_fifo_order_filled_and_batch_slots():
    mem = CrossBatchMemory(size=10, dim=3)
    assert mem.filled == 0 and mem.view().feats.shape == (0, 3)
    z, y = _batch(4, 3, start=0)
    slots = mem.enqueue(z, y)
    assert slots.tolist() == [0, 1, 2, 3]
    assert mem.filled == 4 and mem.ptr == 4
    z, y = _batch(4, 3, start=100)
    slots = mem.enqueue(z, y)
    assert slots.tolist() == [4, 5, 6, 7]
    v = mem.view()
    assert isinstance(v, MemoryView)
    assert v.feats.shape == (8, 3) and v.labels.tolist() == [0, 1, 2, 3, 100, 101, 102, 103]
    assert v.batch_slots.tolist() == [4, 5, 6, 7]
    # the slots point at the rows of the last batch
    assert torch.equal(v.feats[v.batch_slots], z)
    assert torch.equal(v.labels[v.batch_slots], y)


def test_wrap_writes_last_n_slots_and_resets_pointer():
    mem = CrossBatchMemory(size=10, dim=2)
    for k in range(2):
        mem.enqueue(*_batch(4, 2, start=10 * k))           # slots 0-3, 4-7; ptr = 8
    assert mem.ptr == 8 and mem.filled == 8
    slots = mem.enqueue(*_batch(4, 2, start=20))          # 8 + 4 > 10 -> slots 6..9, ptr 0
    assert slots.tolist() == [6, 7, 8, 9]
    assert mem.ptr == 0 and mem.filled == 10
    assert mem.view().labels.tolist() == [0, 1, 2, 3, 10, 11, 20, 21, 22, 23]
    slots = mem.enqueue(*_batch(4, 2, start=30))          # back to the front
    assert slots.tolist() == [0, 1, 2, 3] and mem.ptr == 4
    assert mem.view().labels.tolist() == [30, 31, 32, 33, 10, 11, 20, 21, 22, 23]
    assert mem.view().batch_slots.tolist() == [0, 1, 2, 3]


def test_exact_fill_then_wrap():
    mem = CrossBatchMemory(size=6, dim=2)
    mem.enqueue(*_batch(3, 2, start=0))
    mem.enqueue(*_batch(3, 2, start=3))   # 3 + 3 == 6: fits, ptr becomes 6
    assert mem.ptr == 6 and mem.filled == 6
    slots = mem.enqueue(*_batch(3, 2, start=6))   # 6 + 3 > 6 -> last 3 slots
    assert slots.tolist() == [3, 4, 5] and mem.ptr == 0
    assert mem.view().labels.tolist() == [0, 1, 2, 6, 7, 8]


def test_stored_detached_float32():
    mem = CrossBatchMemory(size=4, dim=2)
    z = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    mem.enqueue(z, torch.tensor([1, 2]))
    v = mem.view()
    assert v.feats.dtype == torch.float32 and not v.feats.requires_grad
    assert torch.allclose(v.feats, z.detach().float())
    assert v.labels.dtype == torch.int64


def test_state_dict_round_trip_through_torch_save():
    mem = CrossBatchMemory(size=7, dim=3)
    for _ in range(4):
        mem.enqueue(torch.randn(3, 3), torch.randint(0, 5, (3,)))
    buf = io.BytesIO()
    torch.save(mem.state_dict(), buf)
    buf.seek(0)
    other = CrossBatchMemory(size=7, dim=3)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.ptr == mem.ptr and other.filled == mem.filled
    a, b = mem.view(), other.view()
    assert torch.equal(a.feats, b.feats) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.batch_slots, b.batch_slots)
    # both continue identically
    z, y = torch.randn(3, 3), torch.tensor([0, 1, 2])
    assert torch.equal(mem.enqueue(z, y), other.enqueue(z, y))
    assert torch.equal(mem.view().feats, other.view().feats)


def test_errors():
    mem = CrossBatchMemory(size=4, dim=2)
    with pytest.raises(ValueError, match="does not fit"):
        mem.enqueue(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        mem.enqueue(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        mem.enqueue(torch.zeros(2, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        mem.enqueue(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="size >= 1"):
        CrossBatchMemory(size=0, dim=2)
    with pytest.raises(ValueError, match="size and dim"):
        mem.load_state_dict(CrossBatchMemory(size=5, dim=2).state_dict())
    with pytest.raises(ValueError, match="missing"):
        mem.load_state_dict({"feats": torch.zeros(4, 2)})


def test_memory_size():
    assert memory_size(10) == 2000 and memory_size(100) == 20000
    mem = CrossBatchMemory(size=memory_size(2, per_class=3), dim=2)
    assert mem.size == 12 and mem.filled == 0 and mem.view().feats.shape == (0, 2)
