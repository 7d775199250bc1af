"""Reading image files with OpenCV into RGB uint8 arrays, whatever their depth and channels."""

import io
import os
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

# Pixels an image may claim before it is refused undecoded (a decompression bomb: a tiny file
# that says it is 30000 x 30000). Pillow refuses headers above twice its own limit by itself,
# so a larger value has no effect.
DEFAULT_MAX_PIXELS = 100_000_000

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".jp2"}
)


class UnreadableImage(Exception):
    """A file that is not a usable image; the message says why, briefly."""


def is_truncated_jpeg(data: bytes) -> bool:
    """A JPEG that does not end with its end-of-image marker (libjpeg would pad it with grey)."""
    return data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert what `cv2.imdecode(..., IMREAD_UNCHANGED)` returns (BGR, BGRA, grey, 16-bit
    or float) into a contiguous RGB uint8 array."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image.astype(np.float32) * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise UnreadableImage(f"unsupported number of channels: {channels}")


def check_pixel_count(data: bytes, max_pixels: int) -> None:
    """Refuse an image whose header claims more than `max_pixels`, without decoding it.

    Pillow reads only the header here; formats it does not know are left to OpenCV.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise UnreadableImage(f"claims more than {max_pixels} pixels (decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return
    if width * height > max_pixels:
        raise UnreadableImage(f"claims {width}x{height} pixels, more than the limit of {max_pixels}")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes into RGB uint8; raise UnreadableImage if they are not one."""
    if not data:
        raise UnreadableImage("empty file")
    if is_truncated_jpeg(data):
        raise UnreadableImage("truncated JPEG")
    check_pixel_count(data, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise UnreadableImage("not a decodable image")
    return to_rgb_uint8(image)


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode one image file (any path, including non-ASCII) into RGB uint8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UnreadableImage(e.strerror or str(e)) from e
    return decode_image(data, max_pixels)


def resize_image(image: np.ndarray, size: tuple[int, int], enlarge: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize to (height, width): area averaging when shrinking, the OpenCV interpolation
    `enlarge` when enlarging (bilinear: bicubic and Lanczos did no better, bench/upscale.py)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] * image.shape[1] > height * width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else enlarge)


def load_image(
    path: str | os.PathLike, size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS, enlarge: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """Read one image file and resize it to (height, width) (see resize_image)."""
    return resize_image(read_image(path, max_pixels), size, enlarge)
