"""One pass of the frozen tower over a split, stored so that every later use reads it back.

Views of an image: 0 is the image as is, 1 its horizontal mirror, 2 and above seeded random
augmentations. The cache lives in `<split folder>/../.siamdog-cache/`, named by everything
that decides its content (tower weights, image size, views, seed and the file list), so
several runs on the same organized data (the linear probe and each variant's heads stage)
share one pass, and a changed input never reuses a stale one.
"""

import hashlib
import json
import logging
import os
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from siamdog.data.augment import Augmentation
from siamdog.data.batches import DirectoryBatches
from siamdog.training.callbacks import replace_atomically

log = logging.getLogger(__name__)


def view_batch(images: np.ndarray, view: int, augmentation: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """View `view` of a batch of RGB images (float32, as DirectoryBatches yields them)."""
    if view == 0:
        return images
    if view == 1:
        return images[:, :, ::-1]
    return np.stack([augmentation.apply(image.astype(np.uint8), rng) for image in images]).astype(np.float32)


def weights_identity(weights: str) -> str:
    """What identifies a weights setting: the file's path, size and time for a file."""
    if os.path.isfile(weights):
        stat = os.stat(weights)
        return f"{os.path.realpath(weights)}:{stat.st_size}:{stat.st_mtime_ns}"
    return weights


def cache_path(batches: DirectoryBatches, tower_key: dict, views: int) -> Path:
    listing = hashlib.sha256("\n".join(batches.filenames).encode("utf-8", "surrogateescape")).hexdigest()
    key = json.dumps({**tower_key, "views": views, "size": batches.target_size, "files": listing}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    split = Path(batches.directory)
    return split.parent / ".siamdog-cache" / f"{split.name}-{digest}.npy"


def tower_features(
    tower: keras.Model,
    batches: DirectoryBatches,
    views: int,
    augmentation: Augmentation,
    tower_key: dict,
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Pooled features of shape (views, samples, dim), in `batches`' (unshuffled) order.

    Read from the cache when an identical pass was made before; computed and stored otherwise.
    """
    if batches.shuffle or batches.augmentation is not None:
        raise ValueError("the cache pass needs unshuffled, unaugmented batches")
    path = cache_path(batches, tower_key, views)
    if path.is_file():
        log.info("reading cached tower features from %s", path)
        return np.load(path, mmap_mode="r")
    dim = tower.output_shape[-1]
    features = np.empty((views, batches.samples, dim), dtype=np.float32)
    with tqdm(total=views * batches.samples, desc=f"tower features ({views} view(s))", unit="img", disable=not progress) as bar:
        for i in range(len(batches)):
            images, _ = batches[i]
            start = i * batches.batch_size
            for view in range(views):
                rng = np.random.default_rng([seed, view, i])
                batch = view_batch(images, view, augmentation, rng)
                features[view, start : start + len(images)] = np.asarray(tower.predict_on_batch(batch))
                bar.update(len(images))
    def save(tmp):
        with open(tmp, "wb") as f:
            np.save(f, features)

    path.parent.mkdir(exist_ok=True)
    replace_atomically(path, save)
    return features
