"""The one inference loop: class probabilities for batches of images or cached features, with
optional test-time augmentation (TTA). Validation during training, evaluate and predict all
call it, so they score a model the same way.

TTA averages the probabilities of each image as is and mirrored left-right: a dog breed does
not change in a mirror, and the augmentations the model was trained with include that flip.
"""

import numpy as np

TTA_VIEWS = ("as is", "mirrored")


def image_views(images: np.ndarray, tta: bool) -> list[np.ndarray]:
    """The views of a batch of images (batch, height, width, channels) that TTA averages."""
    return [images, images[:, :, ::-1]] if tta else [images]


def predict_batch(model, inputs) -> np.ndarray:
    """The model's outputs for one batch, as a NumPy array."""
    if _in_tensorflow_strategy():
        # Under a MirroredStrategy, Keras's predict_on_batch runs the whole batch on every
        # replica and returns the copies one after another; a plain call computes it once.
        return np.asarray(model(inputs, training=False))
    return np.asarray(model.predict_on_batch(inputs))


def _in_tensorflow_strategy() -> bool:
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def predict_images(model, images: np.ndarray, tta: bool = False) -> np.ndarray:
    """Class probabilities for one batch, averaged over its TTA views."""
    return np.mean([predict_batch(model, view) for view in image_views(images, tta)], axis=0)


def predict_batches(model, batches, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and true class indices for every sample of `batches` (any source
    of (x, one-hot y) batches, in order)."""
    probabilities, labels = [], []
    for i in range(len(batches)):
        x, y = batches[i]
        probabilities.append(predict_images(model, x, tta))
        labels.append(np.argmax(y, axis=1))
    return np.concatenate(probabilities), np.concatenate(labels)
