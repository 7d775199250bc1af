"""The train/valid/test split: stratified, seeded, and independent of the order files are listed in."""

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "valid", "test")


def _class_seed(seed: int, label: str) -> list[int]:
    digest = hashlib.sha256(label.encode("utf-8", "surrogatepass")).digest()
    return [seed, int.from_bytes(digest[:8], "little")]


def held_out_counts(n: int, valid_fraction: float, test_fraction: float = 0.0) -> tuple[int, int]:
    """How many of a class's `n` images go to valid and to test: each a rounded fraction of
    `n`, at least one where the class can spare it (valid first), never its last training image."""

    def share(fraction: float, spare: int) -> int:
        return int(min(max(round(n * fraction), 1), spare)) if spare >= 1 and fraction > 0 else 0

    valid = share(valid_fraction, n - 1)
    return valid, share(test_fraction, n - valid - 1)


def stratified_split(
    labels: Sequence[str], keys: Sequence[str], valid_fraction: float, seed: int, test_fraction: float = 0.0
) -> np.ndarray:
    """The split of each item: an array of "train", "valid" and "test".

    Each class is split on its own: its items are sorted by `keys` (unique names, e.g.
    source file names) and shuffled by a generator seeded from `seed` and the class name,
    so the split does not depend on listing order or on which other classes are present.
    The first of the shuffled items go to valid and the next ones to test (`held_out_counts`),
    so adding a test split leaves the valid split as it was.
    """
    if len(labels) != len(keys):
        raise ValueError("labels and keys must have the same length")
    for name, fraction in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    if valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid and test fractions must leave images to train on, got {valid_fraction} + {test_fraction}")
    members = defaultdict(list)
    for index, label in enumerate(labels):
        members[label].append(index)
    splits = np.full(len(labels), "train", dtype=object)
    for label, indices in members.items():
        indices.sort(key=lambda i: keys[i])
        order = np.asarray(indices)[np.random.default_rng(_class_seed(seed, label)).permutation(len(indices))]
        n_valid, n_test = held_out_counts(len(indices), valid_fraction, test_fraction)
        splits[order[:n_valid]] = "valid"
        splits[order[n_valid : n_valid + n_test]] = "test"
    return splits
