"""Data-parallel MOIT on torch.distributed: ``torchrun --nproc_per_node=N -m moit_explore train``.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in each process; with WORLD_SIZE > 1
:func:`process_group` joins the job (NCCL on GPUs, each process on ``cuda:LOCAL_RANK``; gloo on
CPUs) and the training runs data-parallel with DistributedDataParallel. Without those variables
(or with WORLD_SIZE 1) nothing here is used and the run is the single-process one.

The algorithm stays the single-process MOIT at the same GLOBAL batch (``batch_size`` is the
global batch B, whatever the number of processes W):

- data: every rank draws the same epoch order, augmentation and mixup (the (seed, epoch)
  generators, :meth:`moit_explore.training.engine.Session.generators`), so every rank materialises
  the
  whole global batch, its augmented views and their global mixup (the partner of an image may
  belong to another rank's rows; the images are resident on every device, so this costs only
  the batched augmentation). Only the network is split: :class:`ShardedForward` forwards rank
  r's contiguous chunk of each model input (rows ``[start_r, stop_r)``, near-equal chunks in
  rank order) through DDP and all-gathers the outputs of every rank (:class:`_GatherRows`, the
  gradient flowing back to the local rows only). The losses (the contrastive batch term sees
  the projections of all ranks), the cross-batch memory (it enqueues the gathered batch, the
  same on every rank) and the mixup pairs are then exactly the single-process tensors;
- gradients: every rank computes the same global loss, a mean over the global batch; its
  backward reaches the parameters through its own rows only, so :class:`_GatherRows` scales
  that gradient by W and DDP's average over the ranks is their sum: the single-process update;
- batch norm (``dist_bn``): "sync" (default) normalises with the statistics of the global
  batch (:class:`GlobalBatchNorm`, a differentiable all-reduce; one implementation on CPUs and
  GPUs), so the forward pass is the single-process one up to float rounding; "per-rank" lets
  each rank's BN see only its chunk (DDP's usual set-up, fewer collectives; the losses then
  differ slightly from single-process training). Either way the running statistics of the
  ranks are made equal at each epoch's end (per-rank: averaged; sync: rank 0's, equal anyway);
- batches: an epoch's tail batch smaller than 2 images per rank is dropped (batch norm cannot
  train on one image per rank); single-process training drops only a tail of 1;
- detection: each rank embeds a contiguous shard of the training (and test) images, the shards
  are all-gathered (padding dropped: each sample exactly once, in dataset order), rank 0 runs
  the detection once and broadcasts the clean mask, so every rank uses the same mask;
- files: only rank 0 writes the run directory (config, metrics, checkpoints, embeddings). The
  checkpoint holds nothing that depends on W, so a run resumes with the same or a different
  number of processes (single-process included);
- failures: the process group has a timeout (``dist_timeout`` seconds): a rank that dies or
  hangs ends the job with :class:`DistributedError` naming the rank, not a hang. torchrun also
  stops the other processes as soon as one exits with an error.

MOIT+ fine-tuning runs in one process (its data are the clean subset, seconds to minutes).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BN_CHOICES", "Dist", "DistributedError", "GlobalBatchNorm", "ShardedForward",
           "convert_batchnorm", "env_rank", "env_world_size", "launched", "on_main",
           "process_group", "split_sizes"]

BN_CHOICES = ("sync", "per-rank")
T = TypeVar("T")


class DistributedError(RuntimeError):
    """A collective operation failed or timed out: another process of the job died or hung."""


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """RANK as torchrun sets it; 0 in a process that torchrun did not start as one of several
    (a stray RANK in the environment must not make a lone process skip the run's lock)."""
    return int(os.environ.get("RANK", "0") or 0) if launched() else 0


def launched() -> bool:
    """True in a process that torchrun started as one of several (RANK, WORLD_SIZE, LOCAL_RANK
    set, WORLD_SIZE > 1)."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) \
        and env_world_size() > 1


def split_sizes(n: int, world_size: int) -> list[int]:
    """Rows of each rank when ``n`` rows are split into contiguous near-equal chunks (the first
    ``n % world_size`` ranks take one more)."""
    base, extra = divmod(int(n), int(world_size))
    return [base + (r < extra) for r in range(world_size)]


# --------------------------------------------------------------------------- autograd collectives


class _GatherRows(torch.autograd.Function):
    """All-gather the rows of every rank, in rank order; backward: the local rows' gradient
    times ``scale`` (every rank computes the same loss of the gathered rows, so the local
    gradient needs no reduction; ``scale`` = W undoes DDP's gradient average)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int], rank: int, scale: float) -> Tensor:
        ctx.sizes, ctx.rank, ctx.scale = sizes, rank, scale
        return _gather_rows(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        start = sum(ctx.sizes[:ctx.rank])
        local = grad[start:start + ctx.sizes[ctx.rank]]
        return local * ctx.scale, None, None, None


def _gather_rows(x: Tensor, sizes: list[int]) -> Tensor:
    """The rows of every rank concatenated in rank order; ``sizes`` the rows of each rank
    (all_gather needs equal shapes: each rank pads to the largest, the padding is dropped)."""
    width = max(sizes)
    buf = x.new_zeros((width, *x.shape[1:]))
    buf[:x.shape[0]] = x.detach()
    parts = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(parts, buf)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; backward: the sum of every rank's gradient (each rank's statistic
    feeds every rank's normalisation)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch (every rank's rows):
    mean and biased variance from all-reduced sums (two passes, in fp32), running statistics
    updated as :class:`torch.nn.BatchNorm2d` does (unbiased variance). Eval mode: the running
    statistics, as BatchNorm. Parameters and buffers have BatchNorm's names, so state dicts are
    interchangeable. (torch.nn.SyncBatchNorm does the same on GPUs only.)"""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training and self.track_running_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = xf.new_full((1,), xf.numel() / max(xf.shape[1], 1))
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        return y.to(x.dtype)


def convert_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm of ``model`` in place by a :class:`GlobalBatchNorm` holding the
    SAME parameter and buffer tensors (an optimizer built before stays valid); returns it."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) \
                and not isinstance(child, GlobalBatchNorm):
            bn = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
            if child.affine:
                bn.weight, bn.bias = child.weight, child.bias
            if child.track_running_stats:
                bn.running_mean, bn.running_var = child.running_mean, child.running_var
                bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(model, name, bn)
        else:
            convert_batchnorm(child)
    return model


# --------------------------------------------------------------------------- the job


class ShardedForward(nn.Module):
    """The training model of a distributed run: given the GLOBAL batch ``x`` (B, ...), forward
    this rank's contiguous chunk through ``ddp`` and return every output all-gathered to (B, ...)
    (gradients reach this rank's rows only, scaled by W; see the module docstring)."""

    def __init__(self, ddp: nn.Module, rank: int, world_size: int) -> None:
        super().__init__()
        self.ddp = ddp
        self.rank, self.world_size = rank, world_size

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        sizes = split_sizes(x.shape[0], self.world_size)
        start = sum(sizes[:self.rank])
        out = self.ddp(x[start:start + sizes[self.rank]])
        return tuple(_GatherRows.apply(o, sizes, self.rank, float(self.world_size))
                     for o in out)


@dataclass
class Dist:
    """This process's place in the job (built by :func:`process_group`)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    bn: str = "sync"
    timeout_s: int = 600

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory."""
        return self.rank == 0

    # ------------------------------------------------------------------ session set-up

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Before the optimizer is built: the global batch norm when ``bn`` is "sync"."""
        return convert_batchnorm(model) if self.bn == "sync" else model

    def wrap(self, model: nn.Module, compile: bool = False,
             train_projector: bool = True) -> nn.Module:
        """The training model: DDP around ``model`` (optionally compiled), sharding its input.

        train_projector False (ce, mixup: the loss reads the logits only): DDP leaves the
        projection head out, so its parameters get no gradient and are never updated, as in
        single-process training."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        if not train_projector:
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, [n for n, _ in model.named_parameters() if n.startswith("projector.")])
        # no buffer broadcast at each forward: running statistics are made equal once per
        # epoch (sync_buffers); static_graph: the same parameters every step, several forward
        # passes before one backward, and heads the loss may not use (ce's projector)
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                   inspect.signature(nn.parallel.DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})  # torch < 2.14
        ddp: nn.Module = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, static_graph=True, **no_sync)
        if compile:
            ddp = torch.compile(ddp, dynamic=False)
        return ShardedForward(ddp, self.rank, self.world_size)

    def prepare_pipeline(self, pipeline: Any, batch_size: int) -> None:
        """Check the pipeline and drop a tail batch of fewer than 2 images per rank."""
        if not hasattr(pipeline, "images"):
            raise ValueError("a distributed run needs --pipeline gpu (every rank augments the "
                             "global batch from the resident images)")
        if batch_size < 2 * self.world_size:
            raise ValueError(f"batch_size={batch_size} is the GLOBAL batch; with "
                             f"{self.world_size} processes it must be >= {2 * self.world_size} "
                             "(2 images per process)")
        pipeline.bounds = [(a, b) for a, b in pipeline.bounds if b - a >= 2 * self.world_size]

    # ------------------------------------------------------------------ collectives

    def gather(self, x: Tensor, n: int) -> Tensor:
        """This rank's shard (:meth:`shard` of ``n`` rows) of a tensor -> all ``n`` rows."""
        return _gather_rows(x, split_sizes(n, self.world_size))

    def shard(self, n: int) -> slice:
        """This rank's contiguous rows of ``n``."""
        sizes = split_sizes(n, self.world_size)
        start = sum(sizes[:self.rank])
        return slice(start, start + sizes[self.rank])

    def embed(self, model: nn.Module, images: Tensor, *args: Any) -> tuple[Tensor, ...]:
        """:func:`moit_explore.training.engine.embed` of every image: each rank embeds its shard,
        the
        shards are gathered (each image once, in dataset order)."""
        from moit_explore.training.engine import embed  # noqa: PLC0415 -- engine imports this module's users

        n = int(images.shape[0])
        if n < self.world_size:
            raise ValueError(f"{n} images cannot be shared by {self.world_size} processes")
        out = embed(model, images[self.shard(n)], *args)
        return tuple(self.gather(t, n) for t in out)

    def broadcast_mask(self, mask: Any, n: int) -> Tensor:
        """Rank 0's bool mask (N,) on every rank (on this rank's device)."""
        buf = torch.empty(n, dtype=torch.uint8, device=self.device)
        if self.is_main:
            buf.copy_(torch.as_tensor(mask, dtype=torch.bool).to(self.device))
        dist.broadcast(buf, 0)
        return buf.bool()

    def sync_buffers(self, model: nn.Module) -> None:
        """Make the batch-norm running statistics of every rank equal: averaged ("per-rank"),
        rank 0's ("sync", equal up to rounding anyway)."""
        for name, buf in model.named_buffers():
            if not buf.is_floating_point():
                continue
            if self.bn == "per-rank" and "running_" in name:
                dist.all_reduce(buf)
                buf.div_(self.world_size)
            else:
                dist.broadcast(buf, 0)

    def end_of_epoch(self, model: nn.Module, epoch: int) -> None:
        """After an epoch's training: :meth:`sync_buffers`."""
        self.sync_buffers(model)

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0 (e.g. creating the run directory); its result, or its error,
        reaches every rank."""
        payload: list[Any] = [None, None]
        if self.is_main:
            try:
                payload = [True, fn()]
            except Exception as e:
                payload = [False, f"{type(e).__name__}: {e}"]
                dist.broadcast_object_list(payload, 0)
                raise
        dist.broadcast_object_list(payload, 0)
        if not payload[0]:
            raise RuntimeError(f"rank 0 failed: {payload[1]}")
        return payload[1]


def on_main(d: Dist | None, fn: Callable[[], T]) -> T:
    """``fn()`` in a single-process run; :meth:`Dist.on_main` in a distributed one."""
    return fn() if d is None else d.on_main(fn)


def _device(device: str, local_rank: int) -> torch.device:
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if device in ("auto", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available; use --device "
                             "cpu (gloo) or auto")
        return torch.device("cuda", local_rank)
    raise ValueError(f"--device {device} under torchrun: each process takes cuda:LOCAL_RANK; "
                     "pass --device cuda (or auto), or cpu")


def _is_collective_failure(e: BaseException) -> bool:
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


@contextlib.contextmanager
def process_group(device: str = "auto", bn: str = "sync",
                  timeout_s: int = 600) -> Iterator[Dist | None]:
    """Join the torchrun job (None when not launched by torchrun with several processes).

    NCCL on GPUs (``cuda:LOCAL_RANK``), gloo on CPUs; collectives time out after ``timeout_s``
    seconds. A collective that fails (a dead or hung rank) is raised as
    :class:`DistributedError`. The process group is destroyed on the way out when this call
    created it.
    """
    if not launched():
        yield None
        return
    if bn not in BN_CHOICES:
        raise ValueError(f"dist_bn={bn!r} is not valid; choose one of: {', '.join(BN_CHOICES)}")
    rank, world = env_rank(), env_world_size()
    local = int(os.environ["LOCAL_RANK"])
    dev = _device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    failed = False
    try:
        yield Dist(rank=rank, world_size=world, local_rank=local, device=dev, bn=bn,
                   timeout_s=timeout_s)
    except Exception as e:
        failed = True
        if _is_collective_failure(e) and not isinstance(e, DistributedError):
            raise DistributedError(
                f"rank {rank} of {world}: a collective operation failed or timed out "
                f"(timeout {timeout_s} s): another process of the job died or hung; see its "
                f"log above. ({type(e).__name__}: {str(e).strip().splitlines()[0][:300]})"
            ) from e
        raise
    finally:
        if created and not failed:
            # every rank reaches the end before the group is torn down: gloo can abort a rank
            # ("terminate called without an active exception") whose peer destroyed the group
            # while its last messages were still in flight
            dist.barrier()
            dist.destroy_process_group()
