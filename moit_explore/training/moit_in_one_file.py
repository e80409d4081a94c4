"""MOIT in one file: the whole algorithm as one plain loop, to read next to the spec
(/work/shared/spec/MOIT.md; the § numbers below are its sections).

Multi-Objective Interpolation Training (Ortego et al., CVPR 2021) trains one network on
interpolated images with two objectives, a contrastive one on the embeddings z and a
classification one on the logits (§2). After every epoch it looks at each image's neighbours
in the embedding space and marks the images whose given label disagrees with them as noisy
(§3); from epoch ``correction_start`` on, those images train towards the network's own
prediction instead of their given label (§2b).

This is the package's MOIT without its engine (no run directory, checkpoint, mixed precision
or multi-GPU code): the same losses, memory, detection and model, the same random streams, so
its per-step losses equal the engine's (tests/test_moit_in_one_file.py). MOIT+ (§4) is not
here. Run it::

    python -m moit_explore.training.moit_in_one_file --preset digits
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import Tensor, nn

from moit_explore.maths import detection, losses, models
from moit_explore.maths.memory import CrossBatchMemory, memory_size
from moit_explore.training.config import TrainConfig
from moit_explore.training.datasets import load_data
from moit_explore.training.engine import epoch_generators, lr_schedule, resolve_device
from moit_explore.training.pipelines import augment_for, batch_bounds, device_data
from moit_explore.training.presets import preset

__all__ = ["embed", "main", "moit_step", "train"]

StepCallback = Callable[[int, dict[str, Tensor]], None]


def moit_step(model: nn.Module, x1: Tensor, x2: Tensor, x0: Tensor, y: Tensor,
              clean: Tensor | None, memory: CrossBatchMemory, epoch: int, cfg: TrainConfig,
              gen: torch.Generator, lam_gen: torch.Generator | None) -> dict[str, Tensor]:
    """The four loss terms of one batch in ``epoch`` (§2); L = their sum.

    x1, x2: (B, C, H, W) the two augmented views; x0: the same images, not augmented.
    y: (B,) given labels. clean: (B,) the previous detection's clean mask a (None: none yet).
    gen: draws the permutations (lam_gen the lams; None: gen too).
    """
    # §2: each view is interpolated with a shuffled copy of itself, with its own
    # lam = max(l, 1 - l), l ~ Beta(alpha, alpha), and its own permutation pi
    x1_mixed, pi1, lam1 = losses.mixup(x1, cfg.alpha, gen, lam_generator=lam_gen)
    x2_mixed, pi2, lam2 = losses.mixup(x2, cfg.alpha, gen, lam_generator=lam_gen)
    logits1, z1 = model(x1_mixed)   # one forward pass per view (the batch norm sees each alone)
    logits2, z2 = model(x2_mixed)
    with torch.no_grad():           # logits of the non-augmented images: the targets
        logits0 = model(x0)[0]      # q = softmax(logits0) of the images marked noisy (§2b)
    # §2a XBM: the 2B embeddings join the queue every step (it fills from epoch 1); the
    # memory's loss term counts from epoch > xbm_begin
    memory.enqueue(torch.cat([z1, z2]).detach(), torch.cat([y, y]))
    # §2a L_ICL: embeddings of the same given label (and, weighted 1 - lam, of the mixed-in
    # image's label) are pulled together, within the batch and against the memory
    icl = losses.icl_loss_terms(z1, z2, y, pi1, pi2, lam1, lam2, tau=cfg.tau,
                                memory=memory if epoch > cfg.xbm_begin else None,
                                num_classes=logits1.shape[1])
    # §2b L_CLS: mixup cross-entropy towards the given labels; from epoch > correction_start
    # only for the images marked clean, the others towards q (soft cross-entropy)
    correcting = epoch > cfg.correction_start
    cls = losses.classification_loss_terms(logits1, logits2, logits0, y, pi1, pi2, lam1, lam2,
                                           clean=clean if correcting else None)
    return {"icl_batch": icl["icl_batch"], "icl_memory": icl["icl_memory"],
            "cls_labeled": cls["cls_labeled"], "cls_unlabeled": cls["cls_unlabeled"]}


@torch.no_grad()
def embed(model: nn.Module, images: Tensor, normalize: Callable[[Tensor], Tensor],
          batch_size: int) -> tuple[Tensor, Tensor]:
    """Logits (N, C) and embeddings z (N, D) of uint8 images (N, C, H, W), not augmented, the
    model in eval mode (it is left in eval mode)."""
    model.eval()
    out = [model(normalize(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat([logits for logits, _ in out]), torch.cat([z for _, z in out])


def train(cfg: TrainConfig, *, on_step: StepCallback | None = None,
          log: Callable[[str], None] | None = print) -> list[dict[str, float]]:
    """Train MOIT on ``cfg``'s data (cfg.method is not read: this is MOIT); one row per epoch
    (the run metrics' loss, test_acc, det_precision, det_recall). on_step(epoch, terms) is called
    after every step with its loss terms; log prints one line per epoch (None: silent)."""
    device = resolve_device(cfg.device)
    bundle, noisy = load_data(cfg)   # noisy.noisy: the given labels y; noisy.is_noisy: y != y*
    images, test_images, y_given, _, y_test, normalize = device_data(bundle, noisy, device)
    n, n_classes = images.shape[0], bundle.num_classes
    augment = augment_for(cfg.augment_name(), bundle, cfg.crop_padding)  # §2: "complex"

    torch.manual_seed(cfg.seed)      # the initialisation's seed, as the engine's
    model = models.build_model(cfg.arch, n_classes, bundle.image_shape[2], width=cfg.width,
                               projection=cfg.projection, embed_dim=cfg.embed_dim,
                               shortcut=cfg.shortcut).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = lr_schedule(optimizer, cfg.lr_milestones, cfg.lr_gamma)
    # §2a XBM: a FIFO queue of 2 * xbm_per_class * C detached embeddings and their given labels
    memory = CrossBatchMemory(memory_size(n_classes, cfg.xbm_per_class), cfg.embed_dim, device)
    clean = None                     # §3.7: the clean mask a of the previous epoch's detection
    history = []
    for epoch in range(1, cfg.epochs + 1):
        # the epoch's order, augmentation / permutation generator and lam generator
        order, gen, lam_gen = epoch_generators(cfg.seed, epoch, n, device)
        model.train()
        losses_sum, n_steps = 0.0, 0
        for start, stop in batch_bounds(n, cfg.batch_size, cfg.drop_last):
            idx = order[start:stop].to(device)
            x, y = images[idx], y_given[idx]
            x1, x2 = augment(x, generator=gen), augment(x, generator=gen)
            terms = moit_step(model, x1, x2, normalize(x), y,
                              None if clean is None else clean[idx], memory, epoch, cfg, gen,
                              lam_gen)
            loss = terms["icl_batch"] + terms["icl_memory"] + terms["cls_labeled"] \
                + terms["cls_unlabeled"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses_sum, n_steps = losses_sum + loss.item(), n_steps + 1
            if on_step is not None:
                on_step(epoch, terms)
        scheduler.step()

        # §3: detection on the non-augmented embeddings z with the GIVEN labels (never changed)
        _, z = embed(model, images, normalize, cfg.eval_batch_size)
        det = detection.detect_noise(z, noisy.noisy.copy(), n_classes, k=cfg.k,
                                     balance=cfg.balance, backend=cfg.detect_backend)
        clean = torch.from_numpy(det.clean).to(device)
        found = detection.detection_metrics(det.clean, noisy.is_noisy)  # noisy = not clean
        test_logits, _ = embed(model, test_images, normalize, cfg.eval_batch_size)
        row = {"epoch": epoch, "loss": losses_sum / n_steps,
               "test_acc": (test_logits.argmax(1) == y_test).float().mean().item(),
               "det_precision": found["precision"], "det_recall": found["recall"]}
        history.append(row)
        if log is not None:
            log(f"epoch {epoch:3d}  loss {row['loss']:.4f}  test acc {row['test_acc']:.3f}  "
                f"detection precision {row['det_precision']:.3f}  "
                f"recall {row['det_recall']:.3f}")
    return history


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """``python -m moit_explore.training.moit_in_one_file [--preset digits] [--epochs N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("smoke", "digits"), default="digits",
                        help="the preset's data, model and schedule (default: digits)")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    args = parser.parse_args(argv)
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    return train(preset(args.preset, **overrides).validate())


if __name__ == "__main__":
    main()
