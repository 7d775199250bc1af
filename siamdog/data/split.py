"""The train/valid split: stratified, seeded, and independent of the order files are listed in."""

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def _class_seed(seed: int, label: str) -> list[int]:
    digest = hashlib.sha256(label.encode("utf-8", "surrogatepass")).digest()
    return [seed, int.from_bytes(digest[:8], "little")]


def valid_count(n: int, valid_fraction: float) -> int:
    """How many of a class's `n` images go to valid: a rounded fraction, at least one when
    the class has two or more images, and never the whole class."""
    if n < 2 or valid_fraction <= 0:
        return 0
    return int(min(max(round(n * valid_fraction), 1), n - 1))


def stratified_split(labels: Sequence[str], keys: Sequence[str], valid_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask, True where an item goes to the valid split.

    Each class is split on its own: its items are sorted by `keys` (unique names, e.g.
    source file names) and shuffled by a generator seeded from `seed` and the class name,
    so the split does not depend on listing order or on which other classes are present.
    """
    if len(labels) != len(keys):
        raise ValueError("labels and keys must have the same length")
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    members = defaultdict(list)
    for index, label in enumerate(labels):
        members[label].append(index)
    is_valid = np.zeros(len(labels), dtype=bool)
    for label, indices in members.items():
        indices.sort(key=lambda i: keys[i])
        order = np.random.default_rng(_class_seed(seed, label)).permutation(len(indices))
        chosen = order[: valid_count(len(indices), valid_fraction)]
        is_valid[np.asarray(indices)[chosen]] = True
    return is_valid
