"""The Baidu blog's random-quadrant mask: a training sample, with a set probability, has one of
its four quadrants, drawn at random, filled with its own mean, so the classifier cannot lean
on any one part of the dog.

It masks images, or the feature maps where the trainable blocks begin when a stage trains on
the feature cache (pooled features have no quadrants). It keeps the labels, so multi-loss pairs
keep their "same class?" answers. Each batch's draw is seeded from (seed, epoch, batch index),
as the augmentation is, so a resumed run masks as the interrupted one did.
"""

import keras
import numpy as np

_STREAM = 7  # keeps these draws apart from the mixing's, which are seeded from the same three numbers


def mask_quadrants(x: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    """A copy of the batch `x` (batch, height, width, channels) where each sample, with
    `probability`, has one random quadrant set to its mean over height and width. The middle
    row and column of an odd size go with the bottom and right quadrants."""
    masked = x.copy()
    height, width = x.shape[1:3]
    chosen = rng.random(len(x)) < probability
    quadrants = rng.integers(0, 4, len(x))  # 0 top left, 1 top right, 2 bottom left, 3 bottom right
    for i in np.flatnonzero(chosen):
        rows = slice(0, height // 2) if quadrants[i] < 2 else slice(height // 2, height)
        columns = slice(0, width // 2) if quadrants[i] % 2 == 0 else slice(width // 2, width)
        masked[i, rows, columns] = x[i].mean(axis=(0, 1))
    return masked


class QuadrantMaskedBatches(keras.utils.PyDataset):
    """The batches of `source` (a DirectoryBatches or FeatureBatches of maps: `len()`,
    `source[i] -> (x, one-hot y)`, `epoch`, `on_epoch_end()`), masked by `mask_quadrants`."""

    def __init__(self, source, probability: float, seed: int, workers: int = 1, max_queue_size: int = 10):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.source = source
        self.probability = probability
        self.seed = seed

    @property
    def epoch(self) -> int:
        return self.source.epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.source[batch_index]
        rng = np.random.default_rng([self.seed, self.source.epoch, batch_index, _STREAM])
        return mask_quadrants(x, rng, self.probability), y

    def on_epoch_end(self) -> None:
        self.source.on_epoch_end()
