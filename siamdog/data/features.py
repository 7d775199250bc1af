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

from siamdog.data.sampling import sampler_for
from siamdog.data.seeds import generator


class FeatureBatches(keras.utils.PyDataset):
    """(features, one-hot labels) batches from views of cached features: an array of shape
    (views, samples, ...) or a list of one array (samples, ...) per view, of pooled features or
    of the activations where the trainable blocks begin.

    The epoch order comes from the same `Sampler` as DirectoryBatches' (so a batch holds the
    same samples, in the same order, whether its images or their cached features are read),
    and every epoch picks one view of each sample at random, seeded from (seed, epoch); with
    shuffle=False, batches come in order, view 0.
    """

    def __init__(
        self,
        features: np.ndarray | list[np.ndarray],
        labels: np.ndarray,
        num_classes: int,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        sampler_kind: str | None = None,
        images_per_class: int = 4,
    ):
        super().__init__()
        if any(view.ndim < 2 or len(view) != len(labels) for view in features):
            raise ValueError(f"each view of the features must have shape ({len(labels)}, ...), got {[view.shape for view in features]}")
        self.features = features
        self.classes = np.asarray(labels, dtype=np.int64)
        self.num_classes = num_classes
        self.samples = len(labels)
        self.batch_size = batch_size
        self.seed = seed
        self.sampler = sampler_for(sampler_kind, shuffle, self.classes, batch_size, seed, images_per_class)
        self.shuffle = self.sampler.kind != "sequential"
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.index_array = self.sampler.order(epoch)
        if self.shuffle:
            self.views = generator(self.seed, epoch, "views").integers(0, len(self.features), self.samples)
        else:
            self.views = np.zeros(self.samples, dtype=np.int64)

    def __len__(self) -> int:
        return math.ceil(len(self.index_array) / self.batch_size)

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        ids = self.index_array[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
        x = np.empty((len(ids), *self.features[0].shape[1:]), dtype=np.float32)
        views = self.views[ids]
        for view in np.unique(views):
            # Read in file order (a memory-mapped array reads fastest so), into the rows of the
            # sampler's order: the pairs a batch makes depend on that order.
            rows = np.flatnonzero(views == view)
            rows = rows[np.argsort(ids[rows], kind="stable")]
            x[rows] = self.features[view][ids[rows]]
        return x, keras.utils.to_categorical(self.classes[ids], self.num_classes).astype(np.float32)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)
