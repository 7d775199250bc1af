"""One pass of the frozen front of the tower over a split, stored so that later epochs, stages
and runs read it back instead of recomputing it.

The front is the whole tower while it is frozen (its outputs are pooled features), or the
layers before the last trainable blocks (its outputs are those blocks' input activations).
Views of an image: 0 is the image as is, 1 its horizontal mirror, 2 and above seeded random
augmentations. The cache lives in `<split folder>/../.siamdog-cache/`, one `.npy` file (views,
samples, ...) per pass, named by everything that decides its content (the weights of the front,
image size, views, seed, the file list), so several runs on the same organized data (the
linear probe and each variant's stages) share one pass and a changed input never reuses a
stale one. Large activations are stored as float16 in a memory-mapped file.
"""

import hashlib
import json
import logging
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from siamdog.data.augment import Augmentation
from siamdog.data.batches import DirectoryBatches
from siamdog.files import replace_atomically

log = logging.getLogger(__name__)


def view_batch(images: np.ndarray, view: int, augmentation: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """View `view` of a batch of RGB images (float32, as DirectoryBatches yields them)."""
    if view == 0:
        return images
    if view == 1:
        return images[:, :, ::-1]
    return np.stack([augmentation.apply(image.astype(np.uint8), rng) for image in images]).astype(np.float32)


def weights_digest(model: keras.Model) -> str:
    """A fingerprint of a model's weights (moving statistics included): whatever changes them
    changes the cache that holds its outputs."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.asarray(weight).tobytes())
    return digest.hexdigest()


def cache_path(batches: DirectoryBatches, front_key: dict, views: int) -> Path:
    """Where the pass of a front (identified by `front_key`) over `batches` is stored."""
    listing = hashlib.sha256("\n".join(batches.filenames).encode("utf-8", "surrogateescape")).hexdigest()
    key = json.dumps({**front_key, "views": views, "size": batches.target_size, "files": listing}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    split = Path(batches.directory)
    return split.parent / ".siamdog-cache" / f"{split.name}-{digest}.npy"


def cached_outputs(
    front: keras.Model,
    batches: DirectoryBatches,
    views: int,
    augmentation: Augmentation,
    seed: int = 0,
    dtype: str = "float32",
    progress: bool = True,
) -> np.ndarray:
    """`front`'s outputs for every view of every image, shape (views, samples, ...), in the
    (unshuffled) order of `batches`: read from the cache, or computed once and stored."""
    if batches.shuffle or batches.augmentation is not None:
        raise ValueError("the cache pass needs unshuffled, unaugmented batches")
    front_key = {"weights": weights_digest(front), "output": list(front.output_shape[1:]), "dtype": dtype, "seed": seed}
    path = cache_path(batches, front_key, views)
    if path.is_file():
        log.info("reading cached %s outputs from %s", front.name, path)
        return np.load(path, mmap_mode="r")

    def compute(tmp):
        shape = (views, batches.samples, *front.output_shape[1:])
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        with tqdm(total=views * batches.samples, desc=f"{front.name} pass ({views} view(s))", unit="img", disable=not progress) as bar:
            for i in range(len(batches)):
                images, _ = batches[i]
                start = i * batches.batch_size
                for view in range(views):
                    batch = view_batch(images, view, augmentation, np.random.default_rng([seed, view, i]))
                    out[view, start : start + len(images)] = np.asarray(front.predict_on_batch(batch))
                    bar.update(len(images))
        out.flush()
        del out

    path.parent.mkdir(exist_ok=True)
    replace_atomically(path, compute)
    return np.load(path, mmap_mode="r")
