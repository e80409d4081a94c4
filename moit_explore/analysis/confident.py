"""Confident learning on the neighbours' votes: the maths behind :mod:`label_issues`.

The votes of a sample's ``k`` nearest neighbours estimate p(given label = c | x), the
posterior of the NOISY labels. Confident learning (Northcutt, Jiang, Chuang, JAIR 2021) turns
such a posterior into an estimate of the joint of given and true labels without knowing the
truth: a sample counts towards "truly j" when its vote for j reaches class j's threshold (the
mean vote for j among the samples labelled j), the counts are calibrated to the label counts,
and the ``N * joint[i, j]`` samples labelled i with the largest lead of j over i are the label
issues of the pair (i, j). Written from the paper's description; cleanlab is not imported.

All functions take and return NumPy arrays; shapes are in the docstrings.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RANK_DECAY",
    "SUSPECT_WEIGHT",
    "calibrated_joint",
    "confident_counts",
    "neighbour_votes",
    "prune_by_noise_rate",
    "rank_weights",
    "thresholds",
]

# vote weight exp(-r / (RANK_DECAY * k)) of the r-th nearest neighbour (r = 0 the nearest):
# by rank, not by similarity, so it does not depend on the embedding's scale
RANK_DECAY = 0.5
# in the second pass, a neighbour whose own label was found to be an issue votes with this
# weight (0 would leave some samples without votes; 1 is the first pass)
SUSPECT_WEIGHT = 0.1


def rank_weights(k: int) -> np.ndarray:
    """float64 (k,): the vote weight of the 1st ... k-th nearest neighbour, summing to 1."""
    w = np.exp(-np.arange(k, dtype=np.float64) / (RANK_DECAY * k))
    return w / w.sum()


def neighbour_votes(indices: np.ndarray, labels: np.ndarray, num_classes: int, *,
                    vote_weight: np.ndarray | None = None) -> np.ndarray:
    """float64 (N, C): each sample's rank-weighted vote of its neighbours' labels, rows sum to 1.

    indices int (N, k): the neighbours, nearest first; labels int (M,) for every index;
    vote_weight float (M,): a per-neighbour factor (the second pass lowers suspect labels).
    A row whose neighbours all have weight 0 gets the unweighted vote.
    """
    n, k = indices.shape
    w = np.broadcast_to(rank_weights(k), (n, k))
    if vote_weight is not None:
        w = w * vote_weight[indices]
        total = w.sum(axis=1, keepdims=True)
        w = np.where(total > 0, w / np.where(total > 0, total, 1.0), rank_weights(k))
    votes = np.empty((n, num_classes), dtype=np.float64)
    # bincount over (row, class) cells, in row blocks of ~4M votes: bounded memory at any N
    step = max(1, (1 << 22) // max(k, 1))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        cell = (np.arange(hi - lo)[:, None] * num_classes + labels[indices[lo:hi]]).ravel()
        votes[lo:hi] = np.bincount(cell, weights=np.asarray(w[lo:hi]).ravel(),
                                   minlength=(hi - lo) * num_classes).reshape(hi - lo,
                                                                             num_classes)
    return votes


def thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 (C,): t_j = mean of probs[:, j] over the samples labelled j (inf for a class
    nobody is labelled with: no sample can be confidently in it)."""
    c = probs.shape[1]
    counts = np.bincount(labels, minlength=c)
    sums = np.zeros(c)
    np.add.at(sums, labels, probs[np.arange(labels.shape[0]), labels])
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_counts(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 (C, C): C[i, j] = samples labelled i whose best class at or above its threshold
    is j (the confident joint, uncalibrated); samples with no class above threshold are left
    out."""
    n, c = probs.shape
    above = probs >= thresholds(probs, labels) - 1e-12
    best = np.where(above, probs, -1.0).argmax(axis=1)
    has = above.any(axis=1)
    counts = np.zeros((c, c))
    np.add.at(counts, (labels[has], best[has]), 1.0)
    return counts


def calibrated_joint(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 (C, C): the estimated joint Q[i, j] = P(given i, true j), summing to 1.

    The confident counts with each row rescaled to the number of samples labelled i.
    """
    c = probs.shape[1]
    counts = confident_counts(probs, labels)
    sizes = np.bincount(labels, minlength=c).astype(np.float64)
    row = counts.sum(axis=1, keepdims=True)
    # a class whose samples were never confident keeps its labels: all on the diagonal
    cal = np.where(row > 0, counts / np.where(row > 0, row, 1.0), np.eye(c)) * sizes[:, None]
    return cal / max(labels.shape[0], 1)


def prune_by_noise_rate(probs: np.ndarray, labels: np.ndarray,
                        joint: np.ndarray) -> np.ndarray:
    """bool (N,): for each pair i != j, the round(N * joint[i, j]) samples labelled i with the
    largest lead probs[j] - probs[i], among those with some support for j (probs[j] > 0: a
    sample whose neighbours never name j is not an issue of the pair (i, j))."""
    n, c = probs.shape
    flagged = np.zeros(n, dtype=bool)
    counts = np.rint(joint * n).astype(np.int64)
    for i in range(c):
        members = np.flatnonzero(labels == i)
        for j in range(c):
            m = counts[i, j] if i != j else 0
            if m <= 0 or members.size == 0:
                continue
            cand = members[probs[members, j] > 0]
            lead = probs[cand, j] - probs[cand, i]
            # stable: equal leads in index order, so the verdict is deterministic
            flagged[cand[np.argsort(-lead, kind="stable")[:m]]] = True
    return flagged
