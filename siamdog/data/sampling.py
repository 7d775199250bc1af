"""The order in which an epoch visits the samples: a pure function of the labels, the seed
and the epoch, shared by every batch source (images and cached features alike), so that the
pairs a batch makes never depend on how its samples are read.

Samplers, chosen by name (`sampler` in the config):

  shuffled        every sample once per epoch, in a random order (the original recipe)
  sequential      every sample once, in file order (validation, cache passes)
  class_balanced  P x K batches: P classes, K images of each (torchreid's
                  RandomIdentitySampler, pytorch-metric-learning's MPerClassSampler). An
                  epoch has as many batches as the shuffled sampler; each batch draws P
                  distinct classes at random and takes the next K images of each class from
                  a per-class cycle through its shuffled images, so every class is seen
                  equally often (small classes repeat their images, large ones are not all
                  seen in one epoch).
"""

from collections.abc import Sequence

import numpy as np

from siamdog.data.seeds import generator

SAMPLERS = ("shuffled", "sequential", "class_balanced")


class Sampler:
    """`order(epoch)`: the sample indices of an epoch, batch after batch."""

    def __init__(self, kind: str, labels: Sequence[int], batch_size: int, seed: int = 0, images_per_class: int = 4):
        if kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {kind!r} (choose from {', '.join(SAMPLERS)})")
        self.kind = kind
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.images_per_class = int(images_per_class)
        if kind == "class_balanced":
            check_class_balanced(self.batch_size, self.images_per_class, len(np.unique(self.labels)))

    def order(self, epoch: int) -> np.ndarray:
        if self.kind == "sequential":
            return np.arange(len(self.labels))
        rng = generator(self.seed, epoch, "order")
        if self.kind == "shuffled":
            return rng.permutation(len(self.labels))
        return class_balanced_order(self.labels, self.batch_size // self.images_per_class, self.images_per_class, rng)


def sampler_for(kind: str | None, shuffle: bool, labels: Sequence[int], batch_size: int, seed: int, images_per_class: int) -> Sampler:
    """A batch source's sampler: `kind` if given, else shuffled or sequential by `shuffle`."""
    return Sampler(kind or ("shuffled" if shuffle else "sequential"), labels, batch_size, seed, images_per_class)


def check_class_balanced(batch_size: int, images_per_class: int, num_classes: int) -> None:
    """Refuse P x K settings that cannot make a batch of distinct classes."""
    if images_per_class < 2:
        raise ValueError(f"images_per_class must be at least 2 to make same-class pairs, got {images_per_class}")
    if batch_size % images_per_class:
        raise ValueError(f"batch_size {batch_size} is not a multiple of images_per_class {images_per_class}")
    if batch_size // images_per_class > num_classes:
        raise ValueError(
            f"a batch of {batch_size} with {images_per_class} images per class needs "
            f"{batch_size // images_per_class} classes; the data has {num_classes}"
        )


def class_balanced_order(labels: np.ndarray, classes_per_batch: int, images_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """P x K batches covering about len(labels) samples (see the module docstring)."""
    classes = np.unique(labels)
    cycles = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes.tolist()}
    position = dict.fromkeys(cycles, 0)
    batch = classes_per_batch * images_per_class
    order = []
    for _ in range(-(-len(labels) // batch)):
        for c in rng.choice(classes, size=classes_per_batch, replace=False).tolist():
            members = cycles[c]
            take = (position[c] + np.arange(images_per_class)) % len(members)
            order.append(members[take])
            position[c] += images_per_class
    return np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
