import cv2
import numpy as np
import pytest

from siamdog.data.augment import Augmentation
from siamdog.data.images import UnreadableImage, decode_image, read_image, resize_image
from tests.conftest import write_image


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def test_colour_order_is_rgb(tmp_path):
    path = write_image(tmp_path / "red.png", rgb=(250, 10, 5))
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (12, 16, 3)
    assert image[0, 0].tolist() == [250, 10, 5]


def test_grayscale_rgba_and_16_bit_become_rgb_uint8():
    gray = np.full((5, 6), 77, np.uint8)
    assert decode_image(_encode(gray, ".png"))[0, 0].tolist() == [77, 77, 77]
    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 10  # blue, nearly transparent
    assert decode_image(_encode(bgra, ".png"))[0, 0].tolist() == [0, 0, 200]
    deep = np.full((5, 6, 3), 65535, np.uint16)
    deep[..., 2] = 256 * 100  # red channel in BGR order
    out = decode_image(_encode(deep, ".png"))
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [100, 255, 255]


def test_non_ascii_path(tmp_path):
    path = write_image(tmp_path / "chien é 犬.jpg")
    assert read_image(path).shape == (12, 16, 3)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"this is text, not an image\n", "not a decodable image"),
    ],
)
def test_unreadable_bytes(data, reason):
    with pytest.raises(UnreadableImage, match=reason):
        decode_image(data)


def test_truncated_jpeg_is_refused(tmp_path):
    data = write_image(tmp_path / "a.jpg", size=(64, 64), noise=40).read_bytes()
    assert decode_image(data).shape == (64, 64, 3)
    with pytest.raises(UnreadableImage, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableImage):
        read_image(tmp_path / "nope.jpg")


def test_resize_to_height_width():
    image = np.zeros((10, 20, 3), np.uint8)
    assert resize_image(image, (30, 40)).shape == (30, 40, 3)
    assert resize_image(image, (5, 8)).shape == (5, 8, 3)


def _gradient(h=32, w=48):
    x = np.linspace(0, 255, w, dtype=np.float32)
    return np.stack([np.broadcast_to(x, (h, w))] * 3, axis=-1).astype(np.uint8)


def test_no_augmentation_is_identity():
    image = _gradient()
    out = Augmentation().apply(image, np.random.default_rng(0))
    assert np.array_equal(out, image)


def test_horizontal_flip_flips_about_half_the_time():
    image = _gradient()
    aug = Augmentation(horizontal_flip=True)
    rng = np.random.default_rng(0)
    outcomes = []
    for _ in range(200):
        out = aug.apply(image, rng)
        if np.array_equal(out, image):
            outcomes.append(False)
        else:
            assert np.array_equal(out, image[:, ::-1])
            outcomes.append(True)
    assert 70 < sum(outcomes) < 130


def test_augmentation_is_reproducible_from_the_seed_and_keeps_shape():
    image = _gradient()
    aug = Augmentation(rotation_range=30, width_shift_range=0.2, height_shift_range=0.2, shear_range=10, zoom_range=0.2, brightness_range=(0.5, 1.5))
    a = aug.apply(image, np.random.default_rng(3))
    b = aug.apply(image, np.random.default_rng(3))
    c = aug.apply(image, np.random.default_rng(4))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_shift_moves_content_by_the_fraction():
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, 10] = 255
    aug = Augmentation(width_shift_range=0.25)
    rng = np.random.default_rng(0)
    columns = {int(np.argmax(aug.apply(image, rng)[0, :, 0])) for _ in range(50)}
    assert min(columns) >= 5 and max(columns) <= 15 and len(columns) > 3

