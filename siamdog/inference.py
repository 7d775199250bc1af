"""The one inference loop: class probabilities for batches of images or cached features, with
optional test-time augmentation (TTA). Validation during training, evaluate and predict all
call it, so they score a model the same way.

TTA averages the probabilities of several views of each image. `flip`: the image as is and
mirrored left-right (a dog breed does not change in a mirror, and training augments with that
flip). `crops` adds the centre of the image enlarged to the full input size, as is and
mirrored: a closer look at the dog, which photos tend to centre.
"""

import cv2
import numpy as np

ZOOM = 0.85  # the fraction of each side the zoomed views keep (crops on the valid split: bench/tta_views.py)
TTA_VIEWS = {
    "none": ("as is",),
    "flip": ("as is", "mirrored"),
    "crops": ("as is", "mirrored", "zoomed", "zoomed mirrored"),
}
# What a bare --tta means: crops beat flip by 1.4 points on 5,724 training photos, each scored
# by a probe fitted without it (bench/tta_views.py, cross-validated; p < 1e-6).
DEFAULT_TTA = "crops"


def mirrored(images: np.ndarray) -> np.ndarray:
    return images[:, :, ::-1]


def zoomed(images: np.ndarray, keep: float = ZOOM) -> np.ndarray:
    """The centre of each image (`keep` of each side) resized back to the image's size."""
    height, width = images.shape[1:3]
    crop_h, crop_w = round(height * keep), round(width * keep)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return np.stack([
        cv2.resize(image[top : top + crop_h, left : left + crop_w], (width, height), interpolation=cv2.INTER_LINEAR).reshape(image.shape)
        for image in images
    ])


VIEWS = {
    "as is": lambda images: images,
    "mirrored": mirrored,
    "zoomed": zoomed,
    "zoomed mirrored": lambda images: mirrored(zoomed(images)),
}


def image_views(images: np.ndarray, tta: str) -> list[np.ndarray]:
    """The views of a batch of images (batch, height, width, channels) that a TTA averages."""
    return [VIEWS[name](images) for name in TTA_VIEWS[tta]]


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


def predict_images(model, images: np.ndarray, tta: str = "none") -> np.ndarray:
    """Class probabilities for one batch, averaged over its TTA views."""
    return np.mean([predict_batch(model, view) for view in image_views(images, tta)], axis=0)


def predict_batches(model, batches, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and true class indices for every sample of `batches` (any source
    of (x, one-hot y) batches, in order)."""
    probabilities, labels = [], []
    for i in range(len(batches)):
        x, y = batches[i]
        probabilities.append(predict_images(model, x, tta))
        labels.append(np.argmax(y, axis=1))
    return np.concatenate(probabilities), np.concatenate(labels)
