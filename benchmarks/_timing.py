"""Timing shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int,
              warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def devices(choice: str) -> list[torch.device]:
    """The devices a ``--device cpu|cuda|all`` flag names; "all" skips a missing GPU (saying
    so), an explicit "cuda" without one stops with the fix."""
    out = [torch.device("cpu")] if choice in ("cpu", "all") else []
    if choice in ("cuda", "all"):
        if torch.cuda.is_available():
            out.append(torch.device("cuda"))
        elif choice == "cuda":
            raise SystemExit("no CUDA device available; run with --device cpu")
        else:
            print("cuda: not available, skipped")
    return out
