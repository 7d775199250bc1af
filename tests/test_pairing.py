from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from siamdog.data.pairing import batch_partners, pair_permutation, same_class


def test_swaps_same_class_neighbours_and_pairs_leftovers():
    labels = [0, 1, 0, 2, 1, 3]
    perm = pair_permutation(labels)
    assert perm.tolist() == [2, 4, 0, 5, 1, 3]
    assert same_class(labels, np.asarray(labels)[perm]).tolist() == [1, 1, 1, 0, 1, 0]


def test_lone_leftover_stays_in_place():
    assert pair_permutation([5, 5, 7]).tolist() == [1, 0, 2]
    assert pair_permutation([3]).tolist() == [0]
    assert pair_permutation([]).tolist() == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=6), max_size=64))
def test_pair_permutation_properties(labels):
    labels = np.asarray(labels, dtype=np.int64)
    perm = pair_permutation(labels)
    n = len(labels)
    # A valid permutation that is its own inverse (pairs are swaps).
    assert sorted(perm.tolist()) == list(range(n))
    assert np.array_equal(perm[perm], np.arange(n))
    # Greedy maximum: every class with c members yields c // 2 same-class pairs.
    same = int(np.sum(labels[perm] == labels) - np.sum(perm == np.arange(n)))
    assert same == 2 * sum(c // 2 for c in Counter(labels.tolist()).values())
    # No self-pair except a lone leftover: at most one, and only if the leftovers are odd.
    leftovers = sum(c % 2 for c in Counter(labels.tolist()).values())
    assert int(np.sum(perm == np.arange(n))) == leftovers % 2


def test_batch_partners_are_swaps_or_neighbours():
    labels = [0, 1, 0, 2, 1, 3]
    assert batch_partners(labels, positives=True).tolist() == pair_permutation(labels).tolist()
    assert batch_partners(labels, positives=False).tolist() == [1, 2, 3, 4, 5, 0]
    assert batch_partners([4], positives=False).tolist() == [0]


def test_verification_pairs_take_every_positive_and_as_many_negatives():
    from siamdog.data.pairing import verification_pairs

    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pairs, same = verification_pairs(labels, seed=1)
    positives = {(i, j) for i in range(9) for j in range(i + 1, 9) if labels[i] == labels[j]}
    assert {tuple(p) for p, s in zip(pairs.tolist(), same) if s == 1} == positives
    assert (same == 0).sum() == len(positives) and all(labels[i] != labels[j] for (i, j), s in zip(pairs.tolist(), same) if s == 0)
    assert np.array_equal(verification_pairs(labels, seed=1)[0], pairs), "seeded"


def test_best_threshold_maximizes_pair_accuracy():
    from siamdog.data.pairing import best_threshold

    probabilities = np.array([0.9, 0.8, 0.35, 0.3, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0], dtype="float32")
    threshold, accuracy = best_threshold(probabilities, same)
    assert accuracy == 1.0 and 0.3 < threshold <= 0.35
