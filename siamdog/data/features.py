"""Batches of cached outputs of the frozen part of the tower, with the contract of image batches.

While a part of the tower is frozen it computes the same function every epoch, so its outputs
(pooled features, or the activations where the trainable blocks begin) can be computed once
per image and view and the rest trained on those (see siamdog.training.feature_cache).
`FeatureBatches` serves them like `DirectoryBatches` serves images, so the pair sampler wraps
either.
"""

import math

import keras
import numpy as np


class FeatureBatches(keras.utils.PyDataset):
    """(features, one-hot labels) batches from an array of shape (views, samples, ...): pooled
    features, or the activations where the trainable blocks begin.

    Every epoch reshuffles the samples and picks one view of each at random, seeded from
    (seed, epoch) like DirectoryBatches; with shuffle=False, batches come in order, view 0.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int = 32, shuffle: bool = True, seed: int = 0):
        super().__init__()
        if features.ndim < 3 or features.shape[1] != len(labels):
            raise ValueError(f"features must have shape (views, {len(labels)}, ...), got {features.shape}")
        self.features = features
        self.classes = np.asarray(labels, dtype=np.int64)
        self.num_classes = num_classes
        self.samples = len(labels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            self.index_array = rng.permutation(self.samples)
            self.views = rng.integers(0, len(self.features), self.samples)
        else:
            self.index_array = np.arange(self.samples)
            self.views = np.zeros(self.samples, dtype=np.int64)

    def __len__(self) -> int:
        return math.ceil(self.samples / self.batch_size)

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        # Sorted: a memory-mapped array reads fastest in file order (the batch's members, not
        # their order within it, are what the shuffle decides).
        ids = np.sort(self.index_array[batch_index * self.batch_size : (batch_index + 1) * self.batch_size])
        x = self.features[self.views[ids], ids].astype(np.float32)
        return x, keras.utils.to_categorical(self.classes[ids], self.num_classes).astype(np.float32)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)
