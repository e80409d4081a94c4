"""Forward + backward time of the MOIT contrastive losses at the CIFAR-100 scale.

B = 128 images (2B = 256 rows), D = 128, memory 2 * 100 * C = 20,000 slots (C = 100).
Prints the median over repeats, in ms, on CPU and on CUDA when available.

    .venv/bin/python benchmarks/bench_losses.py [--device cpu|cuda|all] [--repeats 20]
                                               [--threads N]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import devices as pick_devices
from _timing import median_ms

from moit_explore.maths.losses import icl_loss, supcon_loss
from moit_explore.maths.memory import CrossBatchMemory, memory_size


def bench(device: torch.device, B: int = 128, D: int = 128, C: int = 100,
          repeats: int = 20) -> dict[str, float]:
    g = torch.Generator(device="cpu").manual_seed(0)
    z1 = F.normalize(torch.randn(B, D, generator=g), dim=1).to(device).requires_grad_(True)
    z2 = F.normalize(torch.randn(B, D, generator=g), dim=1).to(device).requires_grad_(True)
    y = torch.randint(0, C, (B,), generator=g).to(device)
    p1, p2 = torch.randperm(B, generator=g).to(device), torch.randperm(B, generator=g).to(device)
    lam1, lam2 = 0.8, 0.6
    mem = CrossBatchMemory(memory_size(C), D, device=device)
    while mem.filled < mem.size:   # fill it as in a run past the first epochs
        mem.enqueue(F.normalize(torch.randn(2 * B, D, generator=g), dim=1).to(device),
                    torch.randint(0, C, (2 * B,), generator=g).to(device))
    mem.enqueue(torch.cat([z1, z2]).detach(), torch.cat([y, y]))

    def grad_reset() -> None:
        z1.grad = None
        z2.grad = None

    cases = {
        "icl batch only": lambda: icl_loss(z1, z2, y, p1, p2, lam1, lam2),
        f"icl + memory {mem.filled}": lambda: icl_loss(z1, z2, y, p1, p2, lam1, lam2,
                                                        memory=mem),
        "supcon batch only": lambda: supcon_loss(z1, z2, y),
        f"supcon + memory {mem.filled}": lambda: supcon_loss(z1, z2, y, memory=mem),
    }
    out = {}
    for name, fn in cases.items():
        def step(fn=fn) -> None:
            grad_reset()
            fn().backward()
        out[name] = median_ms(step, device, repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice); 1 avoids noisy timings "
                         "when other processes share the cores")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = pick_devices(args.device)
    print(f"B=128 (256 rows), D=128, C=100, memory 20000; forward+backward, median of "
          f"{args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for dev in devices:
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        for case, ms in bench(dev, repeats=args.repeats).items():
            print(f"{name:>24s}  {case:<24s} {ms:9.2f} ms")


if __name__ == "__main__":
    main()
