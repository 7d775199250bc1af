"""Batch sources for `model.fit`: class folders -> (images, one-hot labels) -> Siamese pairs."""

import logging
import math
import os
import threading
from collections.abc import Sequence

import keras
import numpy as np

from siamdog.data.augment import Augmentation
from siamdog.data.images import IMAGE_EXTENSIONS, UnreadableImage, load_image
from siamdog.data.pairing import batch_partners, pair_targets, same_class
from siamdog.data.sampling import sampler_for
from siamdog.data.seeds import generator
from siamdog.errors import SiamdogError

log = logging.getLogger(__name__)


def list_classes(directory: str | os.PathLike) -> list[str]:
    """Sorted names of the class folders in `directory`."""
    if not os.path.isdir(directory):
        raise SiamdogError(f"{directory}: not a folder of class folders")
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def index_class_folders(directory: str | os.PathLike, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Image paths relative to `directory` and their class indices, in sorted order.

    Lists names only; nothing is decoded. Folders missing for some classes are fine (a
    valid split may lack a class); unknown folders are ignored.
    """
    filenames, labels = [], []
    for index, name in enumerate(classes):
        folder = os.path.join(directory, name)
        if not os.path.isdir(folder):
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                filenames.append(os.path.join(name, entry.name))
                labels.append(index)
    return filenames, np.asarray(labels, dtype=np.int64)


class DirectoryBatches(keras.utils.PyDataset):
    """(images, one-hot labels) batches from class folders, as ImageDataGenerator.flow_from_directory gives.

    The same contract: `class_indices` from sorted folder names (or `classes`), `classes`
    (label per file), `filenames`, `samples`, one-hot float32 labels, float32 RGB pixels in
    [0, 255] at `target_size`, an order reshuffled every epoch. Images are decoded with
    OpenCV; `workers` threads load batches in parallel (OpenCV releases the GIL).

    The epoch order comes from a `Sampler` (shuffled, or sequential with shuffle=False, unless
    `sampler_kind` says otherwise); it and the augmentation are seeded from (seed, epoch,
    batch index), so a batch is the same whichever worker makes it. A file that has become unreadable since it was listed is
    replaced by the next readable file of the batch order, so batches keep their size; one
    warning line per epoch counts them.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        target_size: tuple[int, int] = (299, 299),
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        classes: Sequence[str] | None = None,
        workers: int = 1,
        max_queue_size: int = 10,
        sampler_kind: str | None = None,
        images_per_class: int = 4,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.directory = str(directory)
        self.target_size = tuple(target_size)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.augmentation = augmentation
        class_names = list(classes) if classes is not None else list_classes(directory)
        self.class_indices = {name: i for i, name in enumerate(class_names)}
        self.num_classes = len(class_names)
        self.filenames, self.classes = index_class_folders(directory, class_names)
        self.samples = len(self.filenames)
        if self.samples == 0:
            raise SiamdogError(f"{directory}: no images found in class folders")
        self.unreadable: dict[int, str] = {}  # index -> reason, for files that went bad after listing
        self._reported = 0
        self._lock = threading.Lock()
        self.sampler = sampler_for(sampler_kind, shuffle, self.classes, self.batch_size, seed, images_per_class)
        self.shuffle = self.sampler.kind != "sequential"
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Use the order and augmentations of `epoch` (for resuming a run mid-way)."""
        self.epoch = epoch
        self.index_array = self.sampler.order(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.index_array) / self.batch_size)

    def _load(self, position: int) -> tuple[np.ndarray, int]:
        """The image at `position` in this epoch's order, or the next readable one after it."""
        for step in range(len(self.index_array)):
            index = int(self.index_array[(position + step) % len(self.index_array)])
            if index in self.unreadable:
                continue
            try:
                return load_image(os.path.join(self.directory, self.filenames[index]), self.target_size), index
            except UnreadableImage as e:
                with self._lock:
                    self.unreadable[index] = str(e)
        raise SiamdogError(f"{self.directory}: no readable image left")

    def report_unreadable(self) -> None:
        """One warning line for the files found unreadable since the last report."""
        with self._lock:
            new = list(self.unreadable.items())[self._reported :]
            self._reported = len(self.unreadable)
        if new:
            index, reason = new[0]
            log.warning(
                "%s: skipped %d unreadable image(s) (%d in all), replaced by others of the batch; first: %s (%s)",
                self.directory, len(new), len(self.unreadable), self.filenames[index], reason,
            )

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        start = batch_index * self.batch_size
        count = min(self.batch_size, len(self.index_array) - start)
        rng = generator(self.seed, self.epoch, "augment", batch_index)
        x = np.empty((count, *self.target_size, 3), dtype=np.float32)
        labels = np.empty(count, dtype=np.int64)
        for k in range(count):
            image, index = self._load(start + k)
            if self.augmentation is not None:
                image = self.augmentation.apply(image, rng)
            x[k] = image
            labels[k] = self.classes[index]
        return x, keras.utils.to_categorical(labels, self.num_classes).astype(np.float32)

    def on_epoch_end(self) -> None:
        self.report_unreadable()
        self.set_epoch(self.epoch + 1)


ORIGINAL_OUTPUTS = ("ctg_out_1", "ctg_out_2", "bin_out")  # the original recipe's multi-loss model


class PairedBatches(keras.utils.PyDataset):
    """Siamese batches `((x, partner), targets)` from any flow_from_directory-like source; the
    targets are keyed by output name (see siamdog.data.pairing.pair_targets).

    `source` needs `len()`, `source[i] -> (x, one-hot y)` and `on_epoch_end()`: a
    DirectoryBatches or a legacy ImageDataGenerator iterator. Both members of a pair come from
    the same batch, so the model computes every image's features once: `partner[i]` is the
    index in the batch of sample i's partner (see `batch_partners`). Every `pair_every`-th
    batch swaps same-class samples (positive pairs); the others pair neighbours (mostly
    negative pairs). The fraction of positive pairs of the last finished epoch is in
    `last_epoch_positive_fraction` (a batch read twice counts once).
    """

    def __init__(
        self, source, pair_every: int = 4, workers: int = 1, max_queue_size: int = 10, outputs: Sequence[str] = ORIGINAL_OUTPUTS
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        if pair_every < 1:
            raise ValueError(f"pair_every must be >= 1, got {pair_every}")
        self.source = source
        self.pair_every = pair_every
        self.outputs = outputs  # the names of the model's outputs to make targets for
        self._lock = threading.Lock()
        self._pair_counts: dict[int, tuple[int, int]] = {}  # batch index -> (positive pairs, pairs) this epoch
        self.last_epoch_positive_fraction: float | None = None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, batch_index: int):
        x, y = self.source[batch_index]
        labels = np.argmax(y, axis=1)
        partner = batch_partners(labels, positives=batch_index % self.pair_every == 0)
        same = same_class(labels, labels[partner])
        with self._lock:
            self._pair_counts[batch_index] = (int(same.sum()), len(same))
        return (x, partner.astype(np.int32)), pair_targets(y, partner, same, self.outputs)

    def on_epoch_end(self) -> None:
        with self._lock:
            positives = sum(count for count, _ in self._pair_counts.values())
            pairs = sum(count for _, count in self._pair_counts.values())
            self.last_epoch_positive_fraction = positives / pairs if pairs else None
            self._pair_counts = {}
        self.source.on_epoch_end()
