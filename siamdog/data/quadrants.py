"""The Baidu blog's two quadrant augmentations, which keep the labels (so multi-loss pairs keep
their "same class?" answers):

- the random-quadrant mask: a training sample, with a set probability, has one of its four
  quadrants, drawn at random, filled with its own mean, so the classifier cannot lean on any one
  part of the dog;
- the same-class mosaic: a training sample, with a set probability, becomes a mosaic whose four
  quadrants are cut from photos of its class in the same batch (drawn at random, itself among
  them). Photos of one class meet in a batch under the class-balanced (P x K) sampler, which the
  setting therefore asks for. The photos are cut, not shrunk: each quadrant keeps its photo's
  scale, so the same cut works on the feature maps a cached fine-tuning stage trains on.

Both work on images, or on the feature maps where the trainable blocks begin when a stage trains
on the feature cache (pooled features have no quadrants). Each batch's draw is seeded from (seed,
epoch, batch index), as the augmentation is, so a resumed run draws as the interrupted one did.
"""

import keras
import numpy as np

from siamdog.data.seeds import generator


def quadrant_slices(height: int, width: int, quadrant: int) -> tuple[slice, slice]:
    """Rows and columns of `quadrant` (0 top left, 1 top right, 2 bottom left, 3 bottom right).
    The middle row and column of an odd size go with the bottom and right quadrants."""
    rows = slice(0, height // 2) if quadrant < 2 else slice(height // 2, height)
    columns = slice(0, width // 2) if quadrant % 2 == 0 else slice(width // 2, width)
    return rows, columns


def mask_quadrants(x: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    """A copy of the batch `x` (batch, height, width, channels) where each sample, with
    `probability`, has one random quadrant set to its mean over height and width."""
    masked = x.copy()
    height, width = x.shape[1:3]
    chosen = rng.random(len(x)) < probability
    quadrants = rng.integers(0, 4, len(x))
    for i in np.flatnonzero(chosen):
        masked[i, *quadrant_slices(height, width, quadrants[i])] = x[i].mean(axis=(0, 1))
    return masked


def same_class_mosaic(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    """A copy of the batch `x` (batch, height, width, channels) where each sample, with
    `probability`, has each of its quadrants taken from a sample of its class (integer `labels`)
    in the batch, drawn at random with replacement, itself included. A sample alone of its class
    in the batch stays as it is."""
    mosaic = x.copy()
    height, width = x.shape[1:3]
    chosen = rng.random(len(x)) < probability
    draws = rng.random((len(x), 4))  # drawn for every sample, so one sample's draw does not move another's
    for i in np.flatnonzero(chosen):
        members = np.flatnonzero(labels == labels[i])
        for quadrant, draw in enumerate(draws[i]):
            where = quadrant_slices(height, width, quadrant)
            mosaic[i, *where] = x[members[int(draw * len(members))], *where]
    return mosaic


class QuadrantBatches(keras.utils.PyDataset):
    """The batches of `source` (a DirectoryBatches or FeatureBatches of maps: `len()`,
    `source[i] -> (x, one-hot y)`, `epoch`, `on_epoch_end()`), made into same-class mosaics
    (`mosaic` the probability) and then masked (`mask` the probability)."""

    def __init__(self, source, mask: float, mosaic: float, seed: int, workers: int = 1, max_queue_size: int = 10):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.source = source
        self.mask = mask
        self.mosaic = mosaic
        self.seed = seed

    @property
    def epoch(self) -> int:
        return self.source.epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.source[batch_index]
        rng = generator(self.seed, self.source.epoch, "quadrants", batch_index)
        if self.mosaic:
            x = same_class_mosaic(x, np.argmax(y, axis=1), rng, self.mosaic)
        if self.mask:
            x = mask_quadrants(x, rng, self.mask)
        return x, y

    def on_epoch_end(self) -> None:
        self.source.on_epoch_end()
