"""One pass of the frozen front of the tower over a split, stored so that later epochs, stages
and runs read it back instead of recomputing it.

The front is the part of the tower that no stage trains: the layers before the last
trainable blocks (its outputs are those blocks' input activations), or the whole tower if no
stage unfreezes any. One pass of the front over the images serves every stage: a stage that
trains fewer blocks (`heads`: none) maps the cached activations through the frozen blocks
between (a small fraction of the tower's work) and caches that too.
A pass holds views of each image: a training pass of n views holds the image as is, its
horizontal mirror, then seeded random augmentations; views may also be named (siamdog.inference's
TTA views, such as the zoomed ones of `--tta crops`), for training or scoring. Named views after
the image as is and mirrored are a pass of their own (`passes_of`), so that those two come
from the pass that every training and flip scoring shares.
The cache lives in `<split folder>/../.siamdog-cache/`, one `.npy` file (views,
samples, ...) per pass, named by everything that decides its content (the weights of the part,
image size, views, the file list, and for augmented views the seed and the augmentation
settings), so several runs on the same organized data (the
linear probe and each variant's stages) share one pass and a changed input never reuses a
stale one. Large activations are stored as float16 in a memory-mapped file. Beside each file,
`<name>.json` keeps the seconds it took to make from the images (`fill_seconds`), the passes it
was mapped from included; a file without them, from an older siamdog, is made again.
"""

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from siamdog.data.augment import Augmentation
from siamdog.data.batches import DirectoryBatches
from siamdog.files import read_json, replace_atomically, write_json
from siamdog.inference import VIEWS, predict_batch
from siamdog.models.backbones import tower_between
from siamdog.training.front_engines import FrontEngine

log = logging.getLogger(__name__)


def training_views(count: int) -> tuple[str, ...]:
    """The views a training pass of `count` views holds."""
    return ("as is", "mirrored", *["augmented"] * (count - 2))[:count]


def passes_of(views: int | tuple[str, ...]) -> list[int | tuple[str, ...]]:
    """The cached passes that hold `views` (a count of training views, or names): views named
    after the image as is and its mirror are a pass of their own, so that they reuse the pass
    of those two that training and flip scoring share."""
    if isinstance(views, int):
        return [views]
    names, flip = tuple(views), training_views(2)
    return [flip, names[len(flip):]] if len(names) > len(flip) and names[: len(flip)] == flip else [names]


def view_batch(images: np.ndarray, view: str, augmentation: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """View `view` of a batch of RGB images (float32, as DirectoryBatches yields them)."""
    if view == "augmented":
        return np.stack([augmentation.apply(image.astype(np.uint8), rng) for image in images]).astype(np.float32)
    return VIEWS[view](images)


def weights_digest(model: keras.Model) -> str:
    """A fingerprint of a model's weights (moving statistics included): whatever changes them
    changes the cache that holds its outputs."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.asarray(weight).tobytes())
    return digest.hexdigest()


def precision_key(model: keras.Model) -> dict:
    """The precision a part computes in, where it is not float32 (float32 passes keep the
    names they had before precision was a setting)."""
    policy = model.dtype_policy.name
    return {} if policy == "float32" else {"precision": policy}


def cache_path(batches: DirectoryBatches, front_key: dict, views: int | list[str]) -> Path:
    """Where the pass of a front (identified by `front_key`) over `batches` is stored."""
    listing = hashlib.sha256("\n".join(batches.filenames).encode("utf-8", "surrogateescape")).hexdigest()
    key = json.dumps({**front_key, "views": views, "size": batches.target_size, "files": listing}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    split = Path(batches.directory).resolve()  # a linked split (a pseudo-label round's valid) shares its folder's passes
    return split.parent / ".siamdog-cache" / f"{split.name}-{digest}.npy"


def _stored(path: Path, shape: tuple, dtype: str, fill, earlier_seconds: float = 0.0) -> np.ndarray:
    """The array in `path` (memory-mapped), made by `fill(array)` under a temporary name first
    if it is not there yet, and the seconds that took, plus `earlier_seconds` (those of the
    passes it is made from), kept beside it."""
    record = path.with_suffix(".json")
    if path.is_file() and record.is_file():
        log.info("reading cached outputs from %s", path)
        return np.load(path, mmap_mode="r")

    def compute(tmp):
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(out)
        out.flush()
        del out

    path.parent.mkdir(exist_ok=True)
    started = time.monotonic()
    replace_atomically(path, compute)
    write_json(record, {"seconds": round(earlier_seconds + time.monotonic() - started, 1)})
    return np.load(path, mmap_mode="r")


def fill_seconds(cached: np.ndarray) -> float:
    """The seconds an array of the cache (or a view of one) took to make from the images, the
    passes it was mapped from included."""
    return read_json(Path(cached.filename).with_suffix(".json"))["seconds"]


def cached_outputs(
    front: keras.Model,
    batches: DirectoryBatches,
    views: int | tuple[str, ...],
    augmentation: Augmentation,
    seed: int = 0,
    dtype: str = "float32",
    progress: bool = True,
    engine: FrontEngine | None = None,
) -> np.ndarray:
    """`front`'s outputs for every view of every image, shape (views, samples, ...), in the
    (unshuffled) order of `batches`: read from the cache, or computed once (run by `engine`,
    Keras by default) and stored. `views`: a count of training views, or the views' names."""
    engine = engine or FrontEngine()
    if batches.shuffle or batches.augmentation is not None:
        raise ValueError("the cache pass needs unshuffled, unaugmented batches")
    names = training_views(views) if isinstance(views, int) else tuple(views)
    # As-is and mirrored views depend on neither the seed nor the augmentation settings, so
    # runs with other seeds share that pass. Training passes keep the names they had when views
    # were only counted.
    augmented = {"seed": seed, "augmentation": dataclasses.asdict(augmentation)} if "augmented" in names else {}
    front_key = {"weights": weights_digest(front), "output": list(front.output_shape[1:]), "dtype": dtype, **augmented, **engine.key, **precision_key(front)}
    key_views = len(names) if names == training_views(len(names)) else list(names)

    def fill(out):
        run = engine.runner(front)
        with tqdm(total=len(names) * batches.samples, desc=f"{front.name} pass ({len(names)} view(s))", unit="img", disable=not progress) as bar:
            for i in range(len(batches)):
                images, _ = batches[i]
                start = i * batches.batch_size
                for v, name in enumerate(names):
                    batch = view_batch(images, name, augmentation, np.random.default_rng([seed, v, i]))
                    out[v, start : start + len(images)] = run(batch)
                    bar.update(len(images))

    shape = (len(names), batches.samples, *front.output_shape[1:])
    return _stored(cache_path(batches, front_key, key_views), shape, dtype, fill)


def cached_mapping(
    part: keras.Model, inputs: np.ndarray, batch_size: int = 32, dtype: str = "float32", progress: bool = True
) -> np.ndarray:
    """`part`'s outputs for every row of a cached array `inputs` (views, samples, ...), stored
    beside it and named by it and by `part`'s weights."""
    key = json.dumps({"weights": weights_digest(part), "output": list(part.output_shape[1:]), "dtype": dtype, **precision_key(part)})
    source = Path(inputs.filename)
    path = source.with_name(f"{source.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy")
    views, samples = inputs.shape[:2]

    def fill(out):
        with tqdm(total=views * samples, desc=f"{part.name} pass", unit="img", disable=not progress) as bar:
            for view in range(views):
                for start in range(0, samples, batch_size):
                    rows = inputs[view, start : start + batch_size].astype(np.float32)
                    out[view, start : start + len(rows)] = predict_batch(part, rows)
                    bar.update(len(rows))

    return _stored(path, (views, samples, *part.output_shape[1:]), dtype, fill, fill_seconds(inputs))


def stage_inputs(
    tower: keras.Model,
    backbone: str,
    front_blocks: int,
    blocks: int,
    batches: DirectoryBatches,
    views: int | tuple[str, ...],
    augmentation: Augmentation,
    seed: int = 0,
    progress: bool = True,
    engine: FrontEngine | None = None,
) -> np.ndarray:
    """The cached inputs of a stage that trains the last `blocks` blocks, for each view: the
    activations where those blocks begin (pooled features for 0), from a pass of the front that
    stops where the last `front_blocks` blocks begin (front_blocks >= blocks), mapped through the
    frozen blocks between if there are any. `engine` runs the front. One array (views,
    samples, ...) where the views are one pass, else a list of one array (samples, ...) per view,
    read from their passes without copying them."""
    def dtype(cut):  # pooled features are small; activations are not
        return "float16" if cut else "float32"

    front = tower_between(tower, backbone, None, front_blocks)
    middle = tower_between(tower, backbone, front_blocks, blocks) if blocks != front_blocks else None
    passes = []
    for pass_views in passes_of(views):
        activations = cached_outputs(front, batches, pass_views, augmentation, seed, dtype(front_blocks), progress, engine)
        passes.append(activations if middle is None else cached_mapping(middle, activations, batches.batch_size, dtype(blocks), progress))
    return passes[0] if len(passes) == 1 else [view for array in passes for view in array]
