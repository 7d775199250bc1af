"""Mixed batches: Keras's MixUp or CutMix over any (x, one-hot y) batch source.

MixUp blends each sample with another of its batch, and their labels by the same weight;
CutMix pastes a box of another sample (of the image, or of the feature map where the trainable
blocks begin when a stage trains on the feature cache) and weighs the labels by the box's area.
Each batch's draw is seeded from (seed, epoch, batch index), as the augmentation is, so a
resumed run mixes as the interrupted one did. The targets become soft, so only the softmax
model trains on mixed batches: a mixed pair has no "same class?" answer.
"""

import keras
import numpy as np

from siamdog.data.seeds import generator


def mixing_layer(kind: str, alpha: float) -> keras.layers.Layer:
    """The Keras layer of `kind` ("mixup" or "cutmix"); `alpha` is the Beta distribution's
    parameter of the mix weight (CutMix draws its parameter between 0 and `alpha`). It mixes in
    float32, whatever the global dtype policy: it prepares data, it is not part of a model."""
    layers = {"mixup": lambda: keras.layers.MixUp(alpha=alpha, dtype="float32"), "cutmix": lambda: keras.layers.CutMix(factor=alpha, dtype="float32")}
    return layers[kind]()


class MixedBatches(keras.utils.PyDataset):
    """The batches of `source` (a DirectoryBatches or FeatureBatches: `len()`, `source[i] ->
    (x, one-hot y)`, `epoch`, `on_epoch_end()`), each mixed by the layer of `kind`."""

    def __init__(self, source, kind: str, alpha: float, seed: int, workers: int = 1, max_queue_size: int = 10):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.source = source
        self.layer = mixing_layer(kind, alpha)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.source[batch_index]
        # The layers weigh batches of maps; pooled features (MixUp only) are 1x1 maps.
        maps = x.reshape(len(x), 1, 1, -1) if x.ndim == 2 else x
        # One seed for Keras's layer, from this batch's own generator (an integer seed would give
        # CutMix's two box corners the same draw).
        draw = int(generator(self.seed, self.source.epoch, "mix", batch_index).integers(2**31))
        change = self.layer.get_random_transformation({"images": maps, "labels": y}, seed=keras.random.SeedGenerator(draw))
        mixed = self.layer.transform_images(maps, change)
        labels = self.layer.transform_labels(y, change)
        return keras.ops.convert_to_numpy(mixed).reshape(x.shape), keras.ops.convert_to_numpy(labels)

    def on_epoch_end(self) -> None:
        self.source.on_epoch_end()
