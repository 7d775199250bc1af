"""Which samples of a batch form pairs, and the answers that pairs of photos are scored by: pure functions of the labels."""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


def pair_permutation(labels: Sequence[int]) -> np.ndarray:
    """An index permutation that puts as many samples as possible next to a same-class partner.

    Samples of one class are paired greedily in order of appearance and swapped with each
    other (the permutation is its own inverse). The samples left without a partner, at most
    one per class, are then paired among themselves in the same way; if their number is odd,
    the last one stays in place. So `labels[perm[i]] == labels[i]` for every sample that has a
    same-class partner, and `perm[i] == i` only for a lone leftover.
    """
    labels = np.asarray(labels)
    perm = np.arange(len(labels))
    waiting: dict = {}
    for i, label in enumerate(labels.tolist()):
        j = waiting.pop(label, None)
        if j is None:
            waiting[label] = i
        else:
            perm[i], perm[j] = j, i
    leftovers = sorted(waiting.values())
    for a, b in zip(leftovers[0::2], leftovers[1::2]):
        perm[a], perm[b] = b, a
    return perm


def same_class(labels_1: Sequence[int], labels_2: Sequence[int]) -> np.ndarray:
    """The binary target of the pair head: 1.0 where both samples have the same class."""
    return (np.asarray(labels_1) == np.asarray(labels_2)).astype("float32")


def batch_partners(labels: Sequence[int], positives: bool) -> np.ndarray:
    """The partner of each sample of a shuffled batch: its same-class partner from
    `pair_permutation` where `positives`, else its neighbour in the batch (a random other
    sample, mostly of another class, since the batch is shuffled).

    Partners come from the same batch so that the model computes each image's features once.
    """
    if positives:
        return pair_permutation(labels)
    return np.roll(np.arange(len(labels)), -1)


def pair_targets(y: np.ndarray, partner: np.ndarray, same: np.ndarray, outputs: Sequence[str]) -> dict:
    """The multi-loss model's targets, keyed by the names of its `outputs`:
    a batch's one-hot labels, its partners' labels, the "same class?" flags, and the labels
    again for the auxiliary head and the batch-wide losses (which compare every pair of the
    batch, or each sample with its class's center)."""
    targets = {
        "ctg_out_1": y, "ctg_out_2": y[partner], "bin_out": same[:, None], "aux_out": y, "embedding_out": y, "center_out": y, "pairs_out": y
    }
    return {name: targets[name] for name in outputs}


class Answer(NamedTuple):
    description: str
    low: float  # the scores it can take: two probabilities and a cosine
    high: float


# The answers to "do these two photos show one class?", by the name `siamdog verify --by` takes.
# The classifier's agreement separates held-out pairs of dog breeds best, and every run has it
# (bench/README.md, "Same breed or not"); the cosine does not need the photos to show the
# classes the run knows; only a multi-loss run has the same-class head.
ANSWERS = {
    "agreement": Answer("the classifier's agreement", 0.0, 1.0),
    "cosine": Answer("the cosine of the features", -1.0, 1.0),
    "head": Answer("the same-class head", 0.0, 1.0),
}
DEFAULT_ANSWER = "agreement"


def verification_pairs(labels: Sequence[int], seed: int = 0, max_positives: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) for scoring the answers to "same class?", and their targets: every
    same-class pair (at most `max_positives`, drawn at random beyond that) and as many random
    other-class pairs."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first, second = np.triu_indices(len(labels), k=1)
    same = labels[first] == labels[second]
    positives = np.flatnonzero(same)
    if len(positives) > max_positives:
        positives = rng.choice(positives, max_positives, replace=False)
    negatives = np.flatnonzero(~same)
    negatives = rng.choice(negatives, min(len(positives), len(negatives)), replace=False)
    chosen = np.sort(np.concatenate([positives, negatives]))
    return np.stack([first[chosen], second[chosen]], axis=1), same[chosen].astype("float32")


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold on a same-class score (a probability, a cosine) from which the most pairs
    are classified right, and that accuracy (ties go to the threshold nearest 0.5)."""
    candidates = np.unique(np.concatenate([scores, [0.5]]))
    accuracies = np.array([np.mean((scores >= t) == (same > 0.5)) for t in candidates])
    best = np.flatnonzero(accuracies == accuracies.max())
    pick = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return float(candidates[pick]), float(accuracies[pick])
