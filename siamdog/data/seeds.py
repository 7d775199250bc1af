"""The random generators of the batch sources: one per (seed, epoch, purpose, batch).

Every draw comes from a generator seeded from these numbers alone, not from a shared state:
a batch is the same whichever loader thread makes it, and a resumed run draws what the
interrupted one did. The purpose keeps draws apart that would otherwise share a generator
(batch k's augmentation and its mixing; the epoch's views and batch 1's draws).
"""

import numpy as np

PURPOSES = ("order", "augment", "views", "mix", "quadrants")


def generator(seed: int, epoch: int, purpose: str, batch_index: int = 0) -> np.random.Generator:
    """The generator of `purpose` for `batch_index` of `epoch` (0 for a draw per epoch)."""
    # Always four numbers: numpy's SeedSequence pads a shorter key with zeros, so [a, b, c]
    # and [a, b, c, 0] would give the same generator.
    return np.random.default_rng([seed, epoch, PURPOSES.index(purpose), batch_index])
