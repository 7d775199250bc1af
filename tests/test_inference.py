"""Test-time augmentation: the views each choice averages, and the mean over them."""

import keras
import numpy as np

from siamdog.inference import TTA_VIEWS, image_views, predict_images, zoomed


def test_the_zoomed_view_enlarges_the_centre_of_each_image():
    images = np.zeros((2, 20, 20, 3), np.float32)
    images[:, 4:16, 4:16] = 200.0  # a centred square on black
    images[1, 4:16, 4:16, 0] = 50.0
    enlarged = zoomed(images, keep=0.6)  # the centre 12 x 12 px: the square alone
    assert enlarged.shape == images.shape
    assert np.allclose(enlarged[0], 200.0) and np.allclose(enlarged[1, ..., 0], 50.0)
    assert zoomed(np.zeros((3, 10, 16, 1), np.float32)).shape == (3, 10, 16, 1), "any size and channel count"


def test_each_tta_averages_its_views():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 12, 12, 3)).astype(np.float32)
    views = image_views(images, "crops")
    assert TTA_VIEWS["crops"] == ("as is", "mirrored", "zoomed", "zoomed mirrored")
    for got, expected in zip(views, [images, images[:, :, ::-1], zoomed(images), zoomed(images)[:, :, ::-1]]):
        np.testing.assert_array_equal(got, expected)
    assert len(image_views(images, "none")) == 1 and len(image_views(images, "flip")) == 2

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
    by_view = [np.asarray(model(view)) for view in views]
    np.testing.assert_allclose(predict_images(model, images, "none"), by_view[0], rtol=1e-5)
    np.testing.assert_allclose(predict_images(model, images, "flip"), np.mean(by_view[:2], axis=0), rtol=1e-5)
    np.testing.assert_allclose(predict_images(model, images, "crops"), np.mean(by_view, axis=0), rtol=1e-5)
    assert not np.allclose(np.mean(by_view, axis=0), np.mean(by_view[:2], axis=0)), "the zoomed views change the mean"
