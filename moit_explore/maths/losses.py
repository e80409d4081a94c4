"""MOIT losses as pure functions on tensors (spec §2a, §2b, §4).

Contrastive rows: ``Z = cat([z1, z2])`` (2B, D); row r is image ``i(r) = r % B`` seen in view
``v(r) = r // B``, interpolated with ``perm_v`` and ``lam_v`` of its view.

Every similarity, softmax and cross-entropy is computed in float32 with autocast switched off,
so the losses behave the same under bf16/fp16 mixed precision. The contrastive terms are built
from positive-count weight matrices W (float; a multiset member counted twice has weight 2):
``mean_{s in P(r)} log p(r, s) = (sum_s W[r, s] S[r, s]) / sum_s W[r, s] - lse_r`` where ``S`` are
the scaled similarities and ``lse_r`` the log-sum-exp over the candidates ``s != r``. Written this
way the self entry never enters a product with a log-probability, so no -inf * 0 can appear.
For the memory term the label part of W is applied through per-class sums of the memory
features (same maths, no (2B, M) weight matrix); only the batch's slots use explicit weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from moit_explore.maths.memory import CrossBatchMemory, MemoryView

__all__ = [
    "draw_lam",
    "mixup",
    "icl_loss_terms",
    "icl_loss",
    "supcon_loss",
    "classification_loss_terms",
    "mixup_ce",
    "mixup_bootstrap_loss",
]

MemoryLike = CrossBatchMemory | MemoryView


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _fp32(device: torch.device) -> Iterator[None]:
    """Switch autocast off for ``device``'s type, so the maths below really runs in fp32."""
    kind = device.type
    if torch.amp.is_autocast_available(kind):
        with torch.autocast(device_type=kind, enabled=False):
            yield
    else:
        yield


def _check_z(z1: Tensor, z2: Tensor) -> int:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be (B, D) with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}; pass the projections of the two interpolated views"
        )
    if z1.shape[0] < 1:
        raise ValueError("the batch is empty; pass at least one image per view")
    if z1.device != z2.device:
        raise ValueError(f"z1 is on {z1.device} but z2 on {z2.device}; put both on one device")
    return z1.shape[0]


def _check_labels(labels: Tensor, B: int, name: str = "labels") -> Tensor:
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.shape[0] != B:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a (B,) = ({B},) tensor, got {shape}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if B and int(labels.min()) < 0:
        raise ValueError(f"{name} holds negative class indices; labels must be in [0, C)")
    return labels.long()


def _check_perm(perm: Tensor, B: int, device: torch.device, name: str) -> Tensor:
    if not isinstance(perm, Tensor) or perm.ndim != 1 or perm.shape[0] != B:
        shape = tuple(perm.shape) if isinstance(perm, Tensor) else type(perm).__name__
        raise ValueError(f"{name} must be a (B,) = ({B},) permutation tensor, got {shape}")
    if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {perm.dtype}")
    perm = perm.to(device=device, dtype=torch.long)
    if not torch.equal(torch.sort(perm).values, torch.arange(B, device=device)):
        raise ValueError(
            f"{name} is not a permutation of 0..{B - 1}; pass the perm returned by mixup()"
        )
    return perm


def _check_lam(lam: float | Tensor, name: str) -> float:
    try:
        value = float(lam)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a number in [0, 1], got {lam!r}") from err
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} = {value} is outside [0, 1]; pass the lam returned by mixup()")
    return value


def _memory_view(memory: MemoryLike, n_rows: int, D: int, device: torch.device) -> MemoryView:
    view = memory.view() if hasattr(memory, "view") and callable(memory.view) else memory
    if not isinstance(view, MemoryView):
        raise ValueError(
            f"memory must be a CrossBatchMemory or MemoryView, got {type(memory).__name__}"
        )
    feats, labels, slots = view.feats, view.labels, view.batch_slots
    M = feats.shape[0] if feats.ndim == 2 else -1
    if feats.ndim != 2 or feats.shape[1] != D or labels.shape != (M,):
        raise ValueError(
            f"memory holds feats {tuple(feats.shape)} and labels {tuple(labels.shape)}; "
            f"expected (M, {D}) and (M,): build the memory with dim equal to the embedding size"
        )
    if slots.shape != (n_rows,):
        raise ValueError(
            f"memory.batch_slots has shape {tuple(slots.shape)}, expected ({n_rows},): enqueue "
            "torch.cat([z1, z2]).detach() with torch.cat([y, y]) right before computing the loss"
        )
    if M and int(labels.min()) < 0:
        raise ValueError(
            "memory labels are negative (unwritten slots?); pass memory.view(), which only "
            "holds the filled slots"
        )
    if n_rows and (int(slots.min()) < 0 or int(slots.max()) >= M):
        raise ValueError(
            f"memory.batch_slots point outside the {M} filled slots; pass the view of the memory "
            "the current batch was just enqueued into"
        )
    for t, what in ((feats, "feats"), (labels, "labels"), (slots, "batch_slots")):
        if t.device != device:
            raise ValueError(
                f"memory {what} are on {t.device} but the embeddings on {device}; create "
                f"CrossBatchMemory(..., device={str(device)!r})"
            )
    return MemoryView(feats.detach().float(), labels.long(), slots.long())


def _row_mean_log_prob(S: Tensor, self_mask: Tensor, weights: list[Tensor]) -> list[Tensor]:
    """For each W in ``weights``: (R,) ``sum_s W[r,s] log p(r,s) / sum_s W[r,s]``.

    S: (R, K) scaled similarities (fp32); self_mask: (R, K) bool, True where the candidate is
    the anchor itself (excluded from the denominator). Each W: (R, K) float, zero on self.
    """
    lse = torch.logsumexp(S.masked_fill(self_mask, float("-inf")), dim=1)
    out = []
    for W in weights:
        # Every anchor has >= 1 positive (the other view of its own image / of the mixed-in
        # image), so the count never is 0 when the inputs are valid.
        out.append((W * S).sum(1) / W.sum(1) - lse)
    return out


def _stack_views(z1: Tensor, z2: Tensor, labels: Tensor, perms: list[Tensor]):
    """Row bookkeeping: Z (2B, D) fp32, row labels, row image index, mixed-in image, its label."""
    B = z1.shape[0]
    Z = torch.cat([z1, z2]).float()
    img = torch.arange(2 * B, device=Z.device) % B
    y_row = labels[img]
    mix_img = torch.cat(perms) if perms else img
    return Z, img, y_row, mix_img, labels[mix_img]


def _batch_weights(img: Tensor, y_row: Tensor, mix_img: Tensor, y_mix: Tensor,
                   interpolated: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """(2B, 2B) weights W_a, W_b (or None) and the self mask for the batch candidates."""
    n = img.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=img.device)
    not_self = (~eye).float()
    W_a = (y_row[:, None] == y_row[None, :]).float() * not_self
    if not interpolated:
        return W_a, None, eye
    # (release) P_b is a multiset: candidates with the mixed-in image's label, plus the two views
    # of the mixed-in image once more "as the same image" -> weight 2 for those views.
    W_b = ((y_mix[:, None] == y_row[None, :]).float()
           + (mix_img[:, None] == img[None, :]).float()) * not_self
    return W_a, W_b, eye


def _memory_mean_log_prob(Z: Tensor, tau: float, view: MemoryView,
                          positives: list[tuple[Tensor, Tensor]],
                          num_classes: int | None = None) -> list[Tensor]:
    """Memory term: for each (y_pos (2B,), W (2B, 2B)) the (2B,) mean log p over the positives.

    Candidates are all M filled slots except the anchor's own slot. A slot is a positive when
    its label equals ``y_pos[r]``, except the slots holding the current batch, which take the
    batch weights W (self excluded, P_b double count). Positive sums come from per-class sums of
    the memory features (``Z_r . sum_{label c} F_s``), then the batch's slots are swapped from
    label weights to W, so no (2B, M) weight matrix is ever built: only the (2B, M) similarities
    needed for the denominator.
    """
    feats, labels, slots = view.feats, view.labels, view.batch_slots
    Zs = Z / tau
    S = Zs @ feats.T                                                      # (2B, M)
    rows = torch.arange(Z.shape[0], device=Z.device)
    neg_inf = S.new_full((), float("-inf"))  # made on the device: no host-to-device copy
    lse = torch.logsumexp(S.index_put((rows, slots), neg_inf), dim=1)   # a row is not its own cand.
    if num_classes is None:  # read from the labels: a host read (a synchronisation on a GPU)
        num_classes = int(torch.cat([labels, *(y for y, _ in positives)]).max()) + 1
    n_cls = num_classes
    class_sum = torch.zeros(n_cls, feats.shape[1], device=Z.device).index_add_(0, labels, feats)
    # counted by index_add_, not bincount, which reads the largest label back to the host
    class_cnt = torch.zeros(n_cls, device=Z.device).index_add_(
        0, labels, torch.ones(labels.shape[0], device=Z.device))
    S_batch = S[:, slots]                                                 # (2B, 2B)
    slot_labels = labels[slots]
    out = []
    for y_pos, W in positives:
        # label weights the class sums gave the batch's slots, replaced by the batch weights
        delta = W - (y_pos[:, None] == slot_labels[None, :]).float()
        num = (Zs * class_sum[y_pos]).sum(1) + (delta * S_batch).sum(1)
        cnt = class_cnt[y_pos] + delta.sum(1)
        out.append(num / cnt - lse)
    return out


# --------------------------------------------------------------------------- mixup


def draw_lam(alpha: float, generator: torch.Generator | None = None) -> float:
    """The mixing coefficient ``lam = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``; 1 for alpha 0.

    One int64 seed is drawn from the torch RNG (``generator``, or the global one) and seeds a
    NumPy Generator that draws the Beta variate, because torch's Gamma sampler cannot take a
    generator. lam is a host value: drawing it from a generator on a GPU reads the seed back
    (a synchronisation); from a CPU generator it is a host memory read.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device).item())
    if alpha > 0.0:
        l = float(np.random.default_rng(seed).beta(alpha, alpha))
        return max(l, 1.0 - l)
    return 1.0


def mixup(x: Tensor, alpha: float = 1.0, generator: torch.Generator | None = None, *,
          lam_generator: torch.Generator | None = None,
          check: bool = True) -> tuple[Tensor, Tensor, float]:
    """Interpolate a batch with a shuffled copy of itself (spec §2).

    x: (B, ...) floating point. Returns ``(x_mixed, perm, lam)`` with
    ``x_mixed = lam * x + (1 - lam) * x[perm]``, ``perm`` (B,) int64 on ``x.device`` and ``lam``
    a Python float, ``lam = max(l, 1 - l)`` with ``l ~ Beta(alpha, alpha)``; ``alpha == 0`` gives
    ``lam = 1`` (no mixing). Randomness: lam from :func:`draw_lam` on ``lam_generator``
    (default: ``generator``), then the permutation from ``generator`` (or the global RNG); so
    runs are reproducible under ``torch.manual_seed`` or seeded generators alike. A trainer on
    a GPU passes a CPU ``lam_generator`` so that lam never waits for the device.
    check: validate the arguments (False on the trainer's hot path).
    """
    if check:
        if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 1:
            raise ValueError("mixup expects a non-empty (B, ...) tensor")
        if not x.is_floating_point():
            raise ValueError(
                f"mixup expects floating point images, got {x.dtype}; normalise (augment) first"
            )
        alpha = float(alpha)
        if not alpha >= 0.0:
            raise ValueError(f"alpha must be >= 0 (0 = no mixing), got {alpha}")
    lam = draw_lam(alpha, generator if lam_generator is None else lam_generator)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(x.shape[0], generator=generator, device=gen_device).to(x.device)
    x_mixed = lam * x + (1.0 - lam) * x[perm]
    return x_mixed, perm, lam


# --------------------------------------------------------------------------- contrastive

# ``check=False`` (the trainer's hot path) skips the argument checks below: each reads values
# back from the device (label ranges, permutations, memory slots), a synchronisation per call
# on a GPU. The arguments must then be what the checks guarantee: int64 labels in [0, C) and
# permutations on the embeddings' device, lams as Python floats in [0, 1], a memory that holds
# the current batch, and ``num_classes`` given when a memory is.


def _contrastive_args(z1: Tensor, z2: Tensor, labels: Tensor, tau: float,
                      memory: MemoryLike | None, check: bool):
    """(B, device, labels, the memory's view or None), the arguments checked when ``check``."""
    if not check:
        view = memory.view() if callable(getattr(memory, "view", None)) else memory
        return z1.shape[0], z1.device, labels, view
    B, dev = _check_z(z1, z2), z1.device
    labels = _check_labels(labels, B).to(dev)
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    view = _memory_view(memory, 2 * B, z1.shape[1], dev) if memory is not None else None
    return B, dev, labels, view


def icl_loss_terms(z1: Tensor, z2: Tensor, labels: Tensor, perm1: Tensor, perm2: Tensor,
                   lam1: float | Tensor, lam2: float | Tensor, tau: float = 0.1,
                   memory: MemoryLike | None = None, *, num_classes: int | None = None,
                   check: bool = True) -> dict[str, Tensor]:
    """Interpolated contrastive loss terms (spec §2a).

    z1, z2: (B, D) L2-normalised projections of the two interpolated views.
    labels: (B,) given labels. perm1, perm2: (B,) the views' mixup permutations; lam1, lam2 their
    lams. memory: a CrossBatchMemory / MemoryView that ALREADY holds the current 2B rows
    (``batch_slots`` maps row r to its slot), or None. num_classes: C, when known (else read
    from the labels). check: validate the arguments (False on the trainer's hot path).
    Returns ``{"icl_batch": (), "icl_memory": ()}`` fp32 scalars (memory term 0 without memory).
    """
    B, dev, labels, view = _contrastive_args(z1, z2, labels, tau, memory, check)
    if check:
        perm1, perm2 = _check_perm(perm1, B, dev, "perm1"), _check_perm(perm2, B, dev, "perm2")
        lam1, lam2 = _check_lam(lam1, "lam1"), _check_lam(lam2, "lam2")
    with _fp32(dev):
        Z, img, y_row, mix_img, y_mix = _stack_views(z1, z2, labels, [perm1, perm2])
        lam = torch.cat([torch.full((B,), lam1, device=dev), torch.full((B,), lam2, device=dev)])
        W_a, W_b, eye = _batch_weights(img, y_row, mix_img, y_mix, interpolated=True)
        S = Z @ Z.T / tau
        mean_a, mean_b = _row_mean_log_prob(S, eye, [W_a, W_b])
        batch = -(lam * mean_a + (1.0 - lam) * mean_b).mean()
        if view is None:
            mem = torch.zeros((), device=dev)
        else:
            mean_a, mean_b = _memory_mean_log_prob(Z, tau, view, [(y_row, W_a), (y_mix, W_b)],
                                                   num_classes)
            mem = -(lam * mean_a + (1.0 - lam) * mean_b).mean()
    return {"icl_batch": batch, "icl_memory": mem}


def icl_loss(z1: Tensor, z2: Tensor, labels: Tensor, perm1: Tensor, perm2: Tensor,
             lam1: float | Tensor, lam2: float | Tensor, tau: float = 0.1,
             memory: MemoryLike | None = None) -> Tensor:
    """L_ICL = L_batch + L_mem (spec §2a); see :func:`icl_loss_terms`. Returns a fp32 scalar."""
    terms = icl_loss_terms(z1, z2, labels, perm1, perm2, lam1, lam2, tau=tau, memory=memory)
    return terms["icl_batch"] + terms["icl_memory"]


def supcon_loss(z1: Tensor, z2: Tensor, labels: Tensor, tau: float = 0.1,
                memory: MemoryLike | None = None, *, num_classes: int | None = None,
                check: bool = True) -> Tensor:
    """Plain supervised contrastive loss (Khosla et al. 2020, L_out), no interpolation.

    loss_r = -mean_{s != r, y_s = y_r} log p(r, s) over the 2B rows of ``cat([z1, z2])``,
    averaged over rows; with ``memory`` (already holding the current batch) a second term
    with all filled slots as candidates is added, the batch's slots using the batch mask.
    z1, z2: (B, D); labels: (B,). num_classes, check: as :func:`icl_loss_terms`.
    Returns a fp32 scalar. The baseline that collapses under noise.
    """
    _, dev, labels, view = _contrastive_args(z1, z2, labels, tau, memory, check)
    with _fp32(dev):
        Z, img, y_row, mix_img, y_mix = _stack_views(z1, z2, labels, [])
        W_a, _, eye = _batch_weights(img, y_row, mix_img, y_mix, interpolated=False)
        (mean_a,) = _row_mean_log_prob(Z @ Z.T / tau, eye, [W_a])
        loss = -mean_a.mean()
        if view is not None:
            (mean_a,) = _memory_mean_log_prob(Z, tau, view, [(y_row, W_a)], num_classes)
            loss = loss - mean_a.mean()
    return loss


# --------------------------------------------------------------------------- classification


def _ce_rows(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits, targets, reduction="none")


def _check_rows(logits: Tensor, lam: float | Tensor,
                **labels: Tensor) -> tuple[list[Tensor], float]:
    """(N, C) logits: the checked (N,) label tensors, in the order given, and lam."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got {tuple(logits.shape)}")
    n = logits.shape[0]
    return [_check_labels(v, n, k) for k, v in labels.items()], _check_lam(lam, "lam")


def mixup_ce(logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float | Tensor, *,
             check: bool = True) -> Tensor:
    """Mixup cross-entropy ``mean_r [lam CE(logits_r, y_a) + (1 - lam) CE(logits_r, y_b)]``.

    logits: (N, C); y_a, y_b: (N,) class indices; lam: scalar. Returns a fp32 scalar.
    check: validate the arguments (False on the trainer's hot path).
    """
    if check:
        (y_a, y_b), lam = _check_rows(logits, lam, y_a=y_a, y_b=y_b)
    with _fp32(logits.device):
        lg = logits.float()
        return (lam * _ce_rows(lg, y_a) + (1.0 - lam) * _ce_rows(lg, y_b)).mean()


def mixup_bootstrap_loss(logits: Tensor, y_a: Tensor, y_b: Tensor, pred_a: Tensor,
                         pred_b: Tensor, lam: float | Tensor, beta: float = 0.2, *,
                         check: bool = True) -> Tensor:
    """MOIT+ mixup with hard bootstrapping (spec §4).

    ``mean_r lam[(1-beta) CE(y_a) + beta CE(pred_a)] + (1-lam)[(1-beta) CE(y_b) + beta CE(pred_b)]``
    logits: (N, C); y_a, y_b: (N,) given labels of the dominant / mixed-in image; pred_a, pred_b:
    (N,) argmax of the model on the non-augmented images (the caller detaches). fp32 scalar.
    check: validate the arguments (False on the trainer's hot path).
    """
    if check:
        (y_a, y_b, pred_a, pred_b), lam = _check_rows(logits, lam, y_a=y_a, y_b=y_b,
                                                      pred_a=pred_a, pred_b=pred_b)
        beta = float(beta)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
    with _fp32(logits.device):
        lg = logits.float()
        term_a = (1.0 - beta) * _ce_rows(lg, y_a) + beta * _ce_rows(lg, pred_a)
        term_b = (1.0 - beta) * _ce_rows(lg, y_b) + beta * _ce_rows(lg, pred_b)
        return (lam * term_a + (1.0 - lam) * term_b).mean()


def classification_loss_terms(logits1: Tensor, logits2: Tensor, logits0: Tensor | None,
                              labels: Tensor, perm1: Tensor, perm2: Tensor,
                              lam1: float | Tensor, lam2: float | Tensor,
                              clean: Tensor | None = None, *,
                              check: bool = True) -> dict[str, Tensor]:
    """Classification loss terms (spec §2b) over the 2B interpolated rows.

    logits1, logits2: (B, C) of the views interpolated with (perm1, lam1), (perm2, lam2).
    logits0: (B, C) of the non-augmented images (used detached; may be None when clean is None).
    labels: (B,) given labels. clean: (B,) bool/float mask a of the batch's images, or None.
    clean None: ``cls_labeled = mean_r [lam CE(y_a) + (1-lam) CE(y_b)]``, ``cls_unlabeled = 0``.
    With clean: ``cls_labeled = mean_r a[i(r)] [lam CE(y_a) + (1-lam) CE(y_b)]`` ((release) only
    the dominant image's mask; divided by 2B), ``cls_unlabeled = mean_r [lam (1 - a[i(r)])
    H(q[i(r)]) + (1-lam)(1 - a[perm(i(r))]) H(q[perm(i(r))])]`` with ``q = softmax(logits0)`` and
    ``H(q, logits) = -sum_c q_c log_softmax(logits)_c``. Returns fp32 scalars.
    check: validate the arguments (False on the trainer's hot path).
    """
    if check and (logits1.ndim != 2 or logits1.shape != logits2.shape):
        raise ValueError(
            f"logits1 and logits2 must both be (B, C), got {tuple(logits1.shape)} and "
            f"{tuple(logits2.shape)}"
        )
    B, C = logits1.shape
    dev = logits1.device
    if check:
        labels = _check_labels(labels, B).to(dev)
        perm1, perm2 = _check_perm(perm1, B, dev, "perm1"), _check_perm(perm2, B, dev, "perm2")
        lam1, lam2 = _check_lam(lam1, "lam1"), _check_lam(lam2, "lam2")
        if clean is not None:
            if not isinstance(clean, Tensor) or clean.shape != (B,):
                raise ValueError(f"clean must be a (B,) = ({B},) bool or 0/1 float mask")
            if logits0 is None or logits0.shape != (B, C):
                got = None if logits0 is None else tuple(logits0.shape)
                raise ValueError(
                    f"with a clean mask, logits0 (the non-augmented forward pass) must be "
                    f"({B}, {C}), got {got}"
                )
    with _fp32(dev):
        logits = torch.cat([logits1, logits2]).float()
        lam = torch.cat([torch.full((B,), lam1, device=dev), torch.full((B,), lam2, device=dev)])
        img = torch.arange(2 * B, device=dev) % B
        mix_img = torch.cat([perm1, perm2])
        ce = lam * _ce_rows(logits, labels[img]) + (1.0 - lam) * _ce_rows(logits, labels[mix_img])
        if clean is None:
            return {"cls_labeled": ce.mean(), "cls_unlabeled": torch.zeros((), device=dev)}
        a = clean.to(dev).float()
        labeled = (a[img] * ce).mean()
        q = torch.softmax(logits0.detach().float(), dim=1)
        logp = torch.log_softmax(logits, dim=1)
        H_a = -(q[img] * logp).sum(1)
        H_b = -(q[mix_img] * logp).sum(1)
        unlabeled = (lam * (1.0 - a[img]) * H_a + (1.0 - lam) * (1.0 - a[mix_img]) * H_b).mean()
    return {"cls_labeled": labeled, "cls_unlabeled": unlabeled}

