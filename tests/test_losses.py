"""MOIT losses against loop references written from the spec text (§2a, §2b, §4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moit_explore.maths.losses import (
    classification_loss_terms,
    icl_loss,
    icl_loss_terms,
    mixup,
    mixup_bootstrap_loss,
    mixup_ce,
    supcon_loss,
)
from moit_explore.maths.memory import CrossBatchMemory, MemoryView

# --------------------------------------------------------------------------- loop references


def _log_p(Z, r, cands, tau):
    """{s: log p(r, s)} over the candidate list (each a (D,) row), denominator = all candidates."""
    sims = {s: float(Z[r] @ c) / tau for s, c in cands.items()}
    lse = math.log(sum(math.exp(v) for v in sims.values()))
    return {s: v - lse for s, v in sims.items()}


def _mean(xs):
    assert len(xs) > 0
    return sum(xs) / len(xs)


def ref_icl(z1, z2, y, perm1, perm2, lam1, lam2, tau, mem=None):
    """Spec §2a, literally: python loops over anchors and candidates, P_b as a multiset."""
    Z = torch.cat([z1, z2]).double()
    B = z1.shape[0]
    y, perms, lams = y.tolist(), [perm1.tolist(), perm2.tolist()], [lam1, lam2]
    batch_rows, mem_rows = [], []
    for r in range(2 * B):
        i, v = r % B, r // B
        m, lam = perms[v][i], lams[v]
        # --- batch term
        lp = _log_p(Z, r, {s: Z[s] for s in range(2 * B) if s != r}, tau)
        P_a = [s for s in lp if y[s % B] == y[i]]
        P_b = [s for s in lp if y[s % B] == y[m]]
        P_b += [s for s in lp if s % B == m]          # (release) double count of the mixed-in image
        batch_rows.append(-lam * _mean([lp[s] for s in P_a])
                          - (1 - lam) * _mean([lp[s] for s in P_b]))
        if mem is None:
            continue
        # --- memory term: candidates are slots; a slot holding batch row s uses the batch masks
        feats, mlab, slots = mem.feats.double(), mem.labels.tolist(), mem.batch_slots.tolist()
        row_of_slot = {k: s for s, k in enumerate(slots)}
        cands = {k: feats[k] for k in range(feats.shape[0]) if k != slots[r]}
        lp = _log_p(Z, r, cands, tau)
        P_a, P_b = [], []
        for k in lp:
            if k in row_of_slot:
                s = row_of_slot[k]
                if y[s % B] == y[i]:
                    P_a.append(k)
                if y[s % B] == y[m]:
                    P_b.append(k)
                if s % B == m:
                    P_b.append(k)
            else:
                if mlab[k] == y[i]:
                    P_a.append(k)
                if mlab[k] == y[m]:
                    P_b.append(k)
        mem_rows.append(-lam * _mean([lp[k] for k in P_a])
                        - (1 - lam) * _mean([lp[k] for k in P_b]))
    return _mean(batch_rows), (_mean(mem_rows) if mem is not None else 0.0)


def ref_supcon(z1, z2, y, tau, mem=None):
    """Khosla et al. L_out: -mean over positives (same label, not self) of log p, mean over rows."""
    Z = torch.cat([z1, z2]).double()
    B = z1.shape[0]
    y = y.tolist()
    total = 0.0
    rows = []
    for r in range(2 * B):
        lp = _log_p(Z, r, {s: Z[s] for s in range(2 * B) if s != r}, tau)
        rows.append(-_mean([lp[s] for s in lp if y[s % B] == y[r % B]]))
    total += _mean(rows)
    if mem is not None:
        feats, mlab, slots = mem.feats.double(), mem.labels.tolist(), mem.batch_slots.tolist()
        row_of_slot = {k: s for s, k in enumerate(slots)}
        rows = []
        for r in range(2 * B):
            lp = _log_p(Z, r, {k: feats[k] for k in range(len(mlab)) if k != slots[r]}, tau)
            pos = [k for k in lp
                   if (y[row_of_slot[k] % B] if k in row_of_slot else mlab[k]) == y[r % B]]
            rows.append(-_mean([lp[k] for k in pos]))
        total += _mean(rows)
    return total


def _ce(logits_row, t):
    return -float(torch.log_softmax(logits_row.double(), 0)[t])


def _h(q, logits_row):
    return -float((q.double() * torch.log_softmax(logits_row.double(), 0)).sum())


def ref_cls(l1, l2, l0, y, perm1, perm2, lam1, lam2, clean=None):
    """Spec §2b with explicit loops; returns (labeled, unlabeled)."""
    B = l1.shape[0]
    rows = [(l1[i], i, perm1[i].item(), lam1) for i in range(B)]
    rows += [(l2[i], i, perm2[i].item(), lam2) for i in range(B)]
    lab, unl = [], []
    q = None if l0 is None else torch.softmax(l0.double(), 1)
    for lg, i, m, lam in rows:
        ce = lam * _ce(lg, y[i]) + (1 - lam) * _ce(lg, y[m])
        if clean is None:
            lab.append(ce)
            unl.append(0.0)
        else:
            a = float(clean[i])
            lab.append(a * ce)
            a_m = float(clean[m])
            unl.append(lam * (1 - a) * _h(q[i], lg) + (1 - lam) * (1 - a_m) * _h(q[m], lg))
    return _mean(lab), _mean(unl)


# --------------------------------------------------------------------------- fixtures


def _inputs(B, D=4, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(B, D, generator=g), dim=1)
    z2 = F.normalize(torch.randn(B, D, generator=g), dim=1)
    y = torch.randint(0, C, (B,), generator=g)
    p1, p2 = torch.randperm(B, generator=g), torch.randperm(B, generator=g)
    lam1 = 0.5 + 0.5 * float(torch.rand((), generator=g))
    lam2 = 0.5 + 0.5 * float(torch.rand((), generator=g))
    return z1, z2, y, p1, p2, lam1, lam2


def _memory_with(z1, z2, y, size, n_before, C=3, seed=1):
    """A memory that received ``n_before`` random batches and then the current batch."""
    g = torch.Generator().manual_seed(seed)
    B, D = z1.shape
    mem = CrossBatchMemory(size=size, dim=D)
    for _ in range(n_before):
        mem.enqueue(F.normalize(torch.randn(2 * B, D, generator=g), dim=1),
                    torch.randint(0, C, (2 * B,), generator=g))
    mem.enqueue(torch.cat([z1, z2]).detach(), torch.cat([y, y]))
    return mem


# --------------------------------------------------------------------------- ICL


def test_icl_hand_worked_double_count():
    # B = 2, both images labelled 0, both views identical: image 0 on e1, image 1 on e2; tau = 1,
    # perm = (1, 0) in both views. For any row, the candidates have dots (0, 1, 0) with the other
    # image's two views and its own other view, so with L = log(2 + e):
    #   P_a = all three candidates             -> mean log p = (1 - 3L) / 3 = 1/3 - L
    #   P_b = all three + the mixed-in image's two views again (release double count)
    #                                          -> mean log p = (1 - 5L) / 5 = 1/5 - L
    #   loss = -lam (1/3 - L) - (1 - lam)(1/5 - L) = L - lam / 3 - (1 - lam) / 5
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z = torch.stack([e1, e2])
    y = torch.tensor([0, 0])
    perm = torch.tensor([1, 0])
    lam = 0.75
    L = math.log(2 + math.e)
    expected = L - lam / 3 - (1 - lam) / 5
    got = icl_loss_terms(z, z.clone(), y, perm, perm, lam, lam, tau=1.0)
    assert got["icl_batch"].item() == pytest.approx(expected, rel=1e-6)
    assert got["icl_memory"].item() == 0.0
    # Without the double count it would be L - 1/3 for every lam: the test can tell them apart.
    assert abs(expected - (L - 1 / 3)) > 0.03


def test_icl_hand_worked_different_labels():
    # Same geometry, labels (0, 1), tau = 1. Row on e1 (image 0): P_a = {its other view} (dot 1):
    # log p = 1 - L. P_b = image 1's two views counted twice (dots 0): log p = -L.
    # loss = -lam (1 - L) + (1 - lam) L = L - lam, the same for every row.
    z = torch.eye(2)
    perm = torch.tensor([1, 0])
    got = icl_loss(z, z.clone(), torch.tensor([0, 1]), perm, perm, 0.6, 0.9, tau=1.0)
    L = math.log(2 + math.e)
    assert got.item() == pytest.approx(L - (0.6 + 0.9) / 2, rel=1e-6)


@pytest.mark.parametrize("B", [1, 2, 5, 16])
def test_icl_batch_matches_loop_reference(B):
    for seed in range(3):
        z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, C=3, seed=seed)
        got = icl_loss_terms(z1, z2, y, p1, p2, lam1, lam2, tau=0.1)
        ref_batch, _ = ref_icl(z1, z2, y, p1, p2, lam1, lam2, 0.1)
        assert got["icl_batch"].item() == pytest.approx(ref_batch, rel=1e-5, abs=1e-5)
        assert got["icl_batch"].dtype == torch.float32


@pytest.mark.parametrize(
    "B,size,n_before",
    [
        (2, 4, 0),     # memory holds exactly the batch
        (2, 20, 3),    # not wrapped, extra slots before the batch
        (5, 23, 1),    # not wrapped, unused slots after the batch
        (5, 23, 2),    # 2 * 10 + 10 > 23 -> the batch goes to the last 10 slots, full memory
        (16, 100, 3),  # wrapped: 3 * 32 + 32 > 100
        (16, 100, 5),  # wrapped once, then written at the front, old slots behind
    ],
)
def test_icl_memory_matches_loop_reference(B, size, n_before):
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, C=3, seed=B + n_before)
    mem = _memory_with(z1, z2, y, size, n_before)
    view = mem.view()
    got = icl_loss_terms(z1, z2, y, p1, p2, lam1, lam2, tau=0.1, memory=mem)
    ref_batch, ref_mem = ref_icl(z1, z2, y, p1, p2, lam1, lam2, 0.1, mem=view)
    assert got["icl_batch"].item() == pytest.approx(ref_batch, rel=1e-5, abs=1e-5)
    assert got["icl_memory"].item() == pytest.approx(ref_mem, rel=1e-5, abs=1e-5)
    total = icl_loss(z1, z2, y, p1, p2, lam1, lam2, tau=0.1, memory=view)
    assert total.item() == pytest.approx(ref_batch + ref_mem, rel=1e-5, abs=1e-5)


def test_icl_wrapped_memory_places_batch_in_last_slots():
    B = 4
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, seed=7)
    mem = _memory_with(z1, z2, y, size=20, n_before=2)   # 16 + 8 > 20
    assert mem.view().batch_slots.tolist() == list(range(12, 20)) and mem.ptr == 0


def test_icl_memory_holding_only_the_batch_equals_batch_term():
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(6, seed=3)
    mem = _memory_with(z1, z2, y, size=12, n_before=0)
    t = icl_loss_terms(z1, z2, y, p1, p2, lam1, lam2, memory=mem)
    assert t["icl_memory"].item() == pytest.approx(t["icl_batch"].item(), rel=1e-6)


def test_icl_memory_slot_order_does_not_matter():
    # A MemoryView with the batch at scattered slots gives the same loss as the loop reference.
    B = 3
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, seed=11)
    g = torch.Generator().manual_seed(5)
    feats = F.normalize(torch.randn(10, 4, generator=g), dim=1)
    labels = torch.randint(0, 3, (10,), generator=g)
    slots = torch.tensor([9, 0, 4, 7, 2, 5])
    feats[slots] = torch.cat([z1, z2])
    labels[slots] = torch.cat([y, y])
    view = MemoryView(feats, labels, slots)
    got = icl_loss_terms(z1, z2, y, p1, p2, lam1, lam2, memory=view)["icl_memory"]
    _, ref_mem = ref_icl(z1, z2, y, p1, p2, lam1, lam2, 0.1, mem=view)
    assert got.item() == pytest.approx(ref_mem, rel=1e-5)


def test_icl_lam_one_is_supcon_and_identity_perm():
    z1, z2, y, _, _, _, _ = _inputs(8, seed=2)
    ident = torch.arange(8)
    mem = _memory_with(z1, z2, y, size=48, n_before=2)
    a = icl_loss(z1, z2, y, ident, ident, 1.0, 1.0, memory=mem)
    b = supcon_loss(z1, z2, y, memory=mem)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


# --------------------------------------------------------------------------- gradients


def test_icl_gradients_reach_anchors_not_memory():
    B = 5
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, seed=4)
    z1 = z1.clone().requires_grad_(True)
    z2 = z2.clone().requires_grad_(True)
    mem = _memory_with(z1, z2, y, size=30, n_before=2)
    assert not mem.view().feats.requires_grad
    # a MemoryView whose feats require grad must still receive none
    feats = mem.view().feats.clone().requires_grad_(True)
    view = MemoryView(feats, mem.view().labels, mem.view().batch_slots)
    loss = icl_loss(z1, z2, y, p1, p2, lam1, lam2, memory=view)
    loss.backward()
    assert feats.grad is None
    for z in (z1, z2):
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("case", ["lam_one", "single_class", "identity_perm"])
def test_icl_finite_gradients_edge_cases(case):
    B = 6
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, seed=9)
    if case == "lam_one":
        lam1 = lam2 = 1.0
    elif case == "single_class":
        y = torch.zeros(B, dtype=torch.long)
    else:
        p1 = p2 = torch.arange(B)
    z1 = z1.clone().requires_grad_(True)
    z2 = z2.clone().requires_grad_(True)
    mem = _memory_with(z1, z2, y, size=40, n_before=3)
    loss = icl_loss(z1, z2, y, p1, p2, lam1, lam2, memory=mem)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    ref_b, ref_m = ref_icl(z1.detach(), z2.detach(), y, p1, p2, lam1, lam2, 0.1, mem=mem.view())
    assert loss.item() == pytest.approx(ref_b + ref_m, rel=1e-5)


def test_icl_gradient_matches_finite_differences():
    B = 3
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, seed=12)
    z1, z2 = z1.double().requires_grad_(True), z2.double().requires_grad_(True)
    mem = MemoryView(torch.cat([z1, z2]).detach(), torch.cat([y, y]), torch.arange(2 * B))
    # fp32 inside the loss, so compare the analytic gradient with a float64 reference grad.
    loss = icl_loss(z1, z2, y, p1, p2, lam1, lam2, memory=mem)
    g1, = torch.autograd.grad(loss, z1)
    eps = 1e-3
    num = torch.zeros_like(z1)
    for idx in [(0, 0), (1, 2), (2, 3)]:
        zp, zm = z1.detach().clone(), z1.detach().clone()
        zp[idx] += eps
        zm[idx] -= eps
        fp = sum(ref_icl(zp, z2.detach(), y, p1, p2, lam1, lam2, 0.1, mem=mem))
        fm = sum(ref_icl(zm, z2.detach(), y, p1, p2, lam1, lam2, 0.1, mem=mem))
        num[idx] = (fp - fm) / (2 * eps)
        assert g1[idx].item() == pytest.approx(num[idx].item(), rel=2e-2, abs=2e-3)


def test_icl_bf16_autocast_stays_fp32():
    B = 16
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, D=32, C=4, seed=6)
    zb1, zb2 = z1.bfloat16().requires_grad_(True), z2.bfloat16().requires_grad_(True)
    mem = CrossBatchMemory(size=96, dim=32)
    mem.enqueue(F.normalize(torch.randn(64, 32), dim=1), torch.randint(0, 4, (64,)))
    mem.enqueue(torch.cat([zb1, zb2]).detach(), torch.cat([y, y]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = icl_loss(zb1, zb2, y, p1, p2, lam1, lam2, memory=mem)
        sc = supcon_loss(zb1, zb2, y, memory=mem)
    assert low.dtype == torch.float32 and sc.dtype == torch.float32
    low.backward()
    assert torch.isfinite(zb1.grad.float()).all()
    # the same (bf16-rounded) embeddings in plain fp32: identical maths, so nearly equal
    full = icl_loss(zb1.detach().float(), zb2.detach().float(), y, p1, p2, lam1, lam2,
                    memory=mem)
    assert low.item() == pytest.approx(full.item(), rel=1e-5)
    # and close to the un-rounded fp32 loss
    ref = icl_loss(z1, z2, y, p1, p2, lam1, lam2, memory=mem)
    assert low.item() == pytest.approx(ref.item(), rel=5e-2)


# --------------------------------------------------------------------------- SupCon


@pytest.mark.parametrize("B", [2, 5, 16])
def test_supcon_matches_loop_reference(B):
    z1, z2, y, _, _, _, _ = _inputs(B, C=3, seed=20 + B)
    assert supcon_loss(z1, z2, y, tau=0.1).item() == pytest.approx(
        ref_supcon(z1, z2, y, 0.1), rel=1e-5)
    mem = _memory_with(z1, z2, y, size=5 * B, n_before=2)
    assert supcon_loss(z1, z2, y, tau=0.2, memory=mem).item() == pytest.approx(
        ref_supcon(z1, z2, y, 0.2, mem=mem.view()), rel=1e-5)


# --------------------------------------------------------------------------- validation


def test_input_validation():
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(4)
    with pytest.raises(ValueError, match="same shape"):
        icl_loss(z1, z2[:3], y, p1, p2, lam1, lam2)
    with pytest.raises(ValueError, match="labels"):
        icl_loss(z1, z2, y[:3], p1, p2, lam1, lam2)
    with pytest.raises(ValueError, match="permutation"):
        icl_loss(z1, z2, y, torch.tensor([0, 0, 1, 2]), p2, lam1, lam2)
    with pytest.raises(ValueError, match="perm2"):
        icl_loss(z1, z2, y, p1, p2[:3], lam1, lam2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        icl_loss(z1, z2, y, p1, p2, 1.5, lam2)
    with pytest.raises(ValueError, match="integer"):
        supcon_loss(z1, z2, y.float())
    mem = CrossBatchMemory(size=20, dim=4)
    mem.enqueue(torch.randn(4, 4), torch.zeros(4, dtype=torch.long))   # only 4 rows, need 8
    with pytest.raises(ValueError, match="batch_slots"):
        icl_loss(z1, z2, y, p1, p2, lam1, lam2, memory=mem)
    with pytest.raises(ValueError, match="dim"):
        icl_loss(z1, z2, y, p1, p2, lam1, lam2,
                 memory=MemoryView(torch.zeros(8, 3), torch.zeros(8, dtype=torch.long),
                                   torch.arange(8)))
    with pytest.raises(ValueError, match="logits0"):
        classification_loss_terms(z1, z2, None, y, p1, p2, lam1, lam2, clean=torch.ones(4))


# --------------------------------------------------------------------------- classification


def _cls_inputs(B, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    l1, l2, l0 = (3 * torch.randn(B, C, generator=g) for _ in range(3))
    y = torch.randint(0, C, (B,), generator=g)
    p1, p2 = torch.randperm(B, generator=g), torch.randperm(B, generator=g)
    clean = torch.rand(B, generator=g) < 0.5
    return l1, l2, l0, y, p1, p2, 0.8, 0.55, clean


@pytest.mark.parametrize("B", [2, 5, 16])
def test_classification_matches_loop_reference(B):
    l1, l2, l0, y, p1, p2, lam1, lam2, clean = _cls_inputs(B, seed=B)
    t = classification_loss_terms(l1, l2, None, y, p1, p2, lam1, lam2)
    lab, unl = ref_cls(l1, l2, None, y, p1, p2, lam1, lam2)
    assert t["cls_labeled"].item() == pytest.approx(lab, rel=1e-5)
    assert t["cls_unlabeled"].item() == 0.0
    for mask in (clean, clean.float()):
        t = classification_loss_terms(l1, l2, l0, y, p1, p2, lam1, lam2, clean=mask)
        lab, unl = ref_cls(l1, l2, l0, y, p1, p2, lam1, lam2, clean=mask)
        assert t["cls_labeled"].item() == pytest.approx(lab, rel=1e-5)
        assert t["cls_unlabeled"].item() == pytest.approx(unl, rel=1e-5)


def test_classification_all_clean_and_all_noisy():
    l1, l2, l0, y, p1, p2, lam1, lam2, _ = _cls_inputs(8, seed=3)
    B = 8
    all_clean = classification_loss_terms(l1, l2, l0, y, p1, p2, lam1, lam2,
                                          clean=torch.ones(B, dtype=torch.bool))
    plain = (mixup_ce(l1, y, y[p1], lam1) + mixup_ce(l2, y, y[p2], lam2)) / 2
    assert all_clean["cls_labeled"].item() == pytest.approx(plain.item(), rel=1e-6)
    assert all_clean["cls_unlabeled"].item() == 0.0
    noisy = classification_loss_terms(l1, l2, l0, y, p1, p2, lam1, lam2,
                                      clean=torch.zeros(B, dtype=torch.bool))
    assert noisy["cls_labeled"].item() == 0.0
    # all noisy: the soft targets are q of the dominant and mixed-in image, mixed like mixup
    q = torch.softmax(l0, 1)
    exp = 0.0
    for lg, p, lam in ((l1, p1, lam1), (l2, p2, lam2)):
        ls = torch.log_softmax(lg, 1)
        exp += (-(lam * q + (1 - lam) * q[p]) * ls).sum(1).sum().item()
    assert noisy["cls_unlabeled"].item() == pytest.approx(exp / (2 * B), rel=1e-5)


def _cls_total(*args, **kwargs):
    return sum(classification_loss_terms(*args, **kwargs).values())


def test_classification_gradients_skip_logits0():
    l1, l2, l0, y, p1, p2, lam1, lam2, clean = _cls_inputs(6, seed=4)
    l1, l2, l0 = (t.clone().requires_grad_(True) for t in (l1, l2, l0))
    _cls_total(l1, l2, l0, y, p1, p2, lam1, lam2, clean=clean).backward()
    assert l0.grad is None
    assert torch.isfinite(l1.grad).all() and l1.grad.abs().sum() > 0


def test_classification_under_bf16_autocast():
    l1, l2, l0, y, p1, p2, lam1, lam2, clean = _cls_inputs(6, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _cls_total(l1.bfloat16(), l2.bfloat16(), l0.bfloat16(), y, p1, p2, lam1, lam2,
                         clean=clean)
    full = _cls_total(l1, l2, l0, y, p1, p2, lam1, lam2, clean=clean)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(full.item(), rel=2e-2)


# --------------------------------------------------------------------------- mixup & MOIT+


def test_mixup_lam_perm_and_formula():
    x = torch.randn(10, 3, 4, 4)
    lams = []
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        xm, perm, lam = mixup(x, alpha=1.0, generator=g)
        assert isinstance(lam, float) and 0.5 <= lam <= 1.0
        assert sorted(perm.tolist()) == list(range(10)) and perm.dtype == torch.int64
        assert torch.allclose(xm, lam * x + (1 - lam) * x[perm])
        lams.append(lam)
    assert len(set(lams)) == 30           # really random
    # Beta(1, 1) folded onto [.5, 1] is uniform there: mean 0.75
    assert sum(lams) / 30 == pytest.approx(0.75, abs=0.06)
    # seeded generator -> reproducible
    a = mixup(x, generator=torch.Generator().manual_seed(3))
    b = mixup(x, generator=torch.Generator().manual_seed(3))
    assert a[2] == b[2] and torch.equal(a[1], b[1])
    # global RNG is reproducible under manual_seed
    torch.manual_seed(0)
    c = mixup(x)
    torch.manual_seed(0)
    d = mixup(x)
    assert c[2] == d[2] and torch.equal(c[1], d[1])


def test_mixup_alpha_zero_and_errors():
    x = torch.randn(4, 2)
    xm, perm, lam = mixup(x, alpha=0.0)
    assert lam == 1.0 and torch.equal(xm, x)
    with pytest.raises(ValueError, match="alpha"):
        mixup(x, alpha=-1.0)
    with pytest.raises(ValueError, match="floating"):
        mixup(torch.zeros(4, 2, dtype=torch.uint8))


def test_mixup_ce_and_bootstrap_match_reference():
    g = torch.Generator().manual_seed(0)
    N, C = 7, 4
    logits = 2 * torch.randn(N, C, generator=g)
    y_a = torch.randint(0, C, (N,), generator=g)
    perm = torch.randperm(N, generator=g)
    y_b = y_a[perm]
    pred_a = torch.randint(0, C, (N,), generator=g)
    pred_b = pred_a[perm]
    lam, beta = 0.7, 0.2
    ref_ce = _mean([lam * _ce(logits[r], y_a[r]) + (1 - lam) * _ce(logits[r], y_b[r])
                    for r in range(N)])
    assert mixup_ce(logits, y_a, y_b, lam).item() == pytest.approx(ref_ce, rel=1e-6)
    ref_bs = _mean([
        lam * ((1 - beta) * _ce(logits[r], y_a[r]) + beta * _ce(logits[r], pred_a[r]))
        + (1 - lam) * ((1 - beta) * _ce(logits[r], y_b[r]) + beta * _ce(logits[r], pred_b[r]))
        for r in range(N)
    ])
    got = mixup_bootstrap_loss(logits, y_a, y_b, pred_a, pred_b, lam, beta=beta)
    assert got.item() == pytest.approx(ref_bs, rel=1e-6)
    # beta = 0 is plain mixup CE; predictions equal to labels change nothing
    assert mixup_bootstrap_loss(logits, y_a, y_b, pred_a, pred_b, lam, beta=0.0).item() == \
        pytest.approx(ref_ce, rel=1e-6)
    assert mixup_bootstrap_loss(logits, y_a, y_b, y_a, y_b, lam).item() == \
        pytest.approx(ref_ce, rel=1e-6)
    with pytest.raises(ValueError, match="beta"):
        mixup_bootstrap_loss(logits, y_a, y_b, pred_a, pred_b, lam, beta=1.5)


def _dense_ref_icl_memory(z1, z2, y, perm1, perm2, lam1, lam2, tau, view):
    """Float64 dense-matrix version of the spec's memory term, for memories too big to loop."""
    Z = torch.cat([z1, z2]).double()
    B = z1.shape[0]
    img = torch.arange(2 * B) % B
    mix = torch.cat([perm1, perm2])
    lam = torch.tensor([lam1] * B + [lam2] * B, dtype=torch.float64)
    feats, labels, slots = view.feats.double(), view.labels, view.batch_slots
    S = Z @ feats.T / tau
    self_mask = torch.zeros_like(S, dtype=torch.bool)
    self_mask[torch.arange(2 * B), slots] = True
    logp = S - torch.logsumexp(S.masked_fill(self_mask, float("-inf")), 1, keepdim=True)
    Pa = (y[img][:, None] == labels[None, :]).double()
    Pb = (y[mix][:, None] == labels[None, :]).double()
    # the batch's slots: label of the image in that row, plus the mixed-in image's two views
    row_img = img  # slot slots[s] holds row s, image img[s]
    Pa[:, slots] = (y[img][:, None] == y[row_img][None, :]).double()
    Pb[:, slots] = ((y[mix][:, None] == y[row_img][None, :]).double()
                    + (mix[:, None] == row_img[None, :]).double())
    Pa[self_mask] = 0
    Pb[self_mask] = 0
    logp = logp.masked_fill(self_mask, 0.0)
    mean_a = (Pa * logp).sum(1) / Pa.sum(1)
    mean_b = (Pb * logp).sum(1) / Pb.sum(1)
    return float((-(lam * mean_a) - (1 - lam) * mean_b).mean())


def test_icl_large_memory_few_classes_numerics():
    # 4,000 slots in 2 classes: big per-class sums, still fp32-accurate against float64.
    B, D = 32, 16
    z1, z2, y, p1, p2, lam1, lam2 = _inputs(B, D=D, C=2, seed=31)
    mem = _memory_with(z1, z2, y, size=4000, n_before=130, C=2)   # wrapped
    view = mem.view()
    assert view.feats.shape[0] == 4000
    got = icl_loss_terms(z1, z2, y, p1, p2, lam1, lam2, memory=mem)["icl_memory"]
    ref = _dense_ref_icl_memory(z1, z2, y, p1, p2, lam1, lam2, 0.1, view)
    assert got.item() == pytest.approx(ref, rel=1e-5)
