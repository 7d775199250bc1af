"""The backbone registry: which `keras.applications` network a tower is built from, how its
pixels are preprocessed, and where its last blocks begin (for staged fine-tuning)."""

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import keras

from siamdog.config import PRECISIONS
from siamdog.errors import SiamdogError


def _first_layer_named(model: keras.Model, prefix: str) -> keras.layers.Layer:
    return next(layer for layer in model.layers if layer.name.startswith(prefix))


def _xception_tail_input(model: keras.Model, blocks: int):
    # Xception's blocks are named block1_* .. block14_*; the residual branch of a block
    # starts from the same tensor as its first named layer.
    return _first_layer_named(model, f"block{15 - blocks}_").input


def _inception_v3_tail_input(model: keras.Model, blocks: int):
    # InceptionV3's blocks end in concatenations named mixed0 .. mixed10.
    return model.input if blocks == 11 else model.get_layer(f"mixed{10 - blocks}").output


@dataclass(frozen=True)
class Backbone:
    """How to build one kind of tower and split it for fine-tuning."""

    name: str
    constructor: Callable[..., keras.Model]
    min_size: int
    num_blocks: int
    tail_input: Callable[[keras.Model, int], object]  # (base, n) -> tensor where the last n blocks start

    def preprocessing(self) -> keras.layers.Layer:
        # Both registered networks were trained on pixels scaled to [-1, 1] ("tf" mode of
        # keras.applications' preprocess_input), which a Rescaling layer reproduces.
        return keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="preprocess")


BACKBONES = {
    "xception": Backbone("xception", keras.applications.Xception, 71, 14, _xception_tail_input),
    "inception_v3": Backbone("inception_v3", keras.applications.InceptionV3, 75, 11, _inception_v3_tail_input),
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise SiamdogError(f"unknown backbone {name!r} (choose from {', '.join(BACKBONES)})") from None


def resolve_weights(weights: str | None) -> str | None:
    """`imagenet`, `none`/None (random initialization) or the path of an existing weights file."""
    if weights is None or str(weights).lower() == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    if not os.path.isfile(weights):
        raise SiamdogError(f"{weights}: no such weights file (expected 'imagenet', 'none' or a .weights.h5 path)")
    return str(weights)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers made inside compute in `name` (a Keras dtype policy); the previous global policy
    is back afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_tower(backbone: str, weights: str | None, image_size: int, precision: str = "float32") -> keras.Model:
    """RGB pixels in [0, 255] -> pooled features: preprocessing + a headless, avg-pooled backbone.

    The backbone is the tower's layer named "base"; `unfreeze_last_blocks` works on it.
    `precision` (see PRECISIONS) is the tower's: mixed precision pays where the compute is, so
    the heads built on it stay float32 and read its features cast back to float32.
    """
    spec = get_backbone(backbone)
    if image_size < spec.min_size:
        raise SiamdogError(f"image size {image_size} is too small for {backbone} (minimum {spec.min_size})")
    if precision not in PRECISIONS:
        raise SiamdogError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    with dtype_policy(precision):
        return _build_tower(spec, backbone, weights, image_size)


def _build_tower(spec, backbone: str, weights: str | None, image_size: int) -> keras.Model:
    resolved = resolve_weights(weights)
    shape = (image_size, image_size, 3)
    if resolved in (None, "imagenet"):
        base = spec.constructor(include_top=False, pooling="avg", weights=resolved, input_shape=shape)
    else:
        try:
            with warnings.catch_warnings():
                # Keras only warns about the layers of a weights file it cannot place.
                warnings.simplefilter("error", UserWarning)
                base = spec.constructor(include_top=False, pooling="avg", weights=resolved, input_shape=shape)
        except (ValueError, OSError, UserWarning) as e:
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise SiamdogError(f"{weights}: not a weights file for {backbone} without its top ({reason})") from None
    base.name = "base"
    inputs = keras.Input(shape, name="image")
    return keras.Model(inputs, base(spec.preprocessing()(inputs)), name=f"{backbone}_tower")


def _checked_tail_input(base: keras.Model, backbone: str, blocks: int):
    """The tensor where the last `blocks` blocks start (None for none)."""
    spec = get_backbone(backbone)
    if not 0 <= blocks <= spec.num_blocks:
        raise SiamdogError(f"{backbone} has {spec.num_blocks} blocks; cannot unfreeze {blocks}")
    return spec.tail_input(base, blocks) if blocks else None


def tail_layers(base: keras.Model, backbone: str, blocks: int) -> list[keras.layers.Layer]:
    """The layers of `base` that compute its last `blocks` blocks."""
    tail_input = _checked_tail_input(base, backbone, blocks)
    if tail_input is None:
        return []
    tail = keras.Model(tail_input, base.output)
    own = {id(layer) for layer in base.layers}
    return [layer for layer in tail.layers if id(layer) in own]


def tower_between(tower: keras.Model, backbone: str, start: int | None, end: int) -> keras.Model:
    """The part of a tower from where its last `start` blocks begin (None: from the pixels,
    preprocessing included) to where its last `end` blocks begin (0: the pooled features).
    It shares the tower's layers.
    """
    with dtype_policy(tower.dtype_policy.name):  # a part computes in its tower's precision
        return _tower_between(tower, backbone, start, end)


def _tower_between(tower: keras.Model, backbone: str, start: int | None, end: int) -> keras.Model:
    base = tower.get_layer("base")
    end_tensor = _checked_tail_input(base, backbone, end) if end else base.output
    if start is None:
        if end == 0:
            return tower
        image = keras.Input(tower.input_shape[1:], name="image")
        front = keras.Model(base.input, end_tensor, name="base_front")
        return keras.Model(image, front(tower.get_layer("preprocess")(image)), name=f"front_{end}")
    if not start > end:
        raise ValueError(f"a part must start before it ends (start {start}, end {end})")
    return keras.Model(_checked_tail_input(base, backbone, start), end_tensor, name=f"blocks_{start}_to_{end}")


def split_tower(tower: keras.Model, backbone: str, blocks: int) -> tuple[keras.Model, keras.Model | None]:
    """(front, tail) of a tower, sharing its layers: `front` maps pixels to the input of the
    last `blocks` blocks, `tail` maps that to pooled features. With blocks == 0 the front is
    the whole tower and there is no tail.
    """
    tail = tower_between(tower, backbone, blocks, 0) if blocks else None
    return tower_between(tower, backbone, None, blocks), tail


def block_learning_rates(tower: keras.Model, backbone: str, blocks: int, factor: float) -> dict[str, float]:
    """The learning-rate multiplier of each variable of the last `blocks` blocks, by variable
    path: `factor` for the last block, `factor` ** 2 for the one before it, and so on (the
    heads, absent here, keep 1)."""
    base = tower.get_layer("base")
    multipliers, later = {}, set()
    for depth in range(1, blocks + 1):
        block = [layer for layer in tail_layers(base, backbone, depth) if id(layer) not in later]
        multipliers.update({variable.path: factor**depth for layer in block for variable in layer.weights})
        later.update(id(layer) for layer in block)
    return multipliers


def unfreeze_last_blocks(tower: keras.Model, backbone: str, blocks: int) -> None:
    """Make only the last `blocks` blocks of the tower's backbone trainable (0: all frozen).

    BatchNormalization layers stay frozen, in unfrozen blocks too: a frozen BatchNorm always
    normalizes with its moving (ImageNet) statistics. Calling the tower with training=False is
    not enough for that: a functional model that `fit` calls in training mode passes
    training=True down to the models nested in it (checked on Keras 3.15), and batch
    statistics in the fine-tuned blocks wreck the pretrained features.
    """
    base = tower.get_layer("base")
    trainable = {id(layer) for layer in tail_layers(base, backbone, blocks)}
    base.trainable = bool(trainable)
    for layer in base.layers:
        layer.trainable = id(layer) in trainable and not isinstance(layer, keras.layers.BatchNormalization)


def calibrate_batchnorm(tower: keras.Model, batches: Iterable) -> None:
    """Set every BatchNorm layer's moving statistics to the mean of its statistics over
    `batches` (batches of pixels), each batch in training mode.

    A randomly initialized tower (weights "none") has no statistics: with BatchNorm in
    inference mode its activations shrink block after block, down to pooled features too
    small for any head to learn from. One forward pass in training mode with momentum
    0 makes inference on this batch equal training-mode normalization, a data-dependent
    initialization; each further batch k (from 0) is weighed in with momentum k / (k + 1),
    which keeps the plain mean of every batch's statistics. Pretrained towers must not be
    calibrated: it would overwrite ImageNet's statistics, which the dog photos' probe prefers
    to their own (bench/batchnorm_adaptation.py).
    """
    norms = [layer for layer in tower.get_layer("base").layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        for k, images in enumerate(batches):
            for layer in norms:
                layer.momentum = k / (k + 1)
            tower(images, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
