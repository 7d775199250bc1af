"""Random image augmentation with ImageDataGenerator's knobs, done by one OpenCV affine warp.

Each image gets one 3x3 matrix that composes rotation, shear, zoom, flip and shift about the
image centre (as ImageDataGenerator.get_random_transform does), applied by cv2.warpAffine.
Randomness comes from a numpy Generator passed in, so a batch is reproducible from its seed.
"""

from dataclasses import dataclass

import cv2
import numpy as np

FILL_MODES = {
    "nearest": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT_101,
    "wrap": cv2.BORDER_WRAP,
    "constant": cv2.BORDER_CONSTANT,
}


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=np.float64)


@dataclass(frozen=True)
class Augmentation:
    """ImageDataGenerator's augmentation settings, with the same meanings and units.

    rotation_range: degrees; width/height_shift_range: fractions of the size; shear_range:
    degrees; zoom_range: z for [1-z, 1+z] or a (low, high) pair; brightness_range: a
    (low, high) pair of factors or None.
    """

    rotation_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    shear_range: float = 0.0
    zoom_range: float | tuple[float, float] = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    brightness_range: tuple[float, float] | None = None
    fill_mode: str = "nearest"

    def __post_init__(self):
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {sorted(FILL_MODES)}, got {self.fill_mode!r}")

    @property
    def zoom_bounds(self) -> tuple[float, float]:
        if isinstance(self.zoom_range, (int, float)):
            return 1.0 - self.zoom_range, 1.0 + self.zoom_range
        low, high = self.zoom_range
        return float(low), float(high)

    def random_matrix(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """A 3x3 matrix mapping output pixel coordinates to input ones (an inverse map, like
        scipy's affine_transform that ImageDataGenerator uses)."""
        theta = np.deg2rad(rng.uniform(-self.rotation_range, self.rotation_range))
        shear = np.deg2rad(rng.uniform(-self.shear_range, self.shear_range))
        tx = rng.uniform(-self.width_shift_range, self.width_shift_range) * width
        ty = rng.uniform(-self.height_shift_range, self.height_shift_range) * height
        low, high = self.zoom_bounds
        zx, zy = (1.0, 1.0) if (low, high) == (1.0, 1.0) else rng.uniform(low, high, 2)
        flip_x = -1.0 if self.horizontal_flip and rng.random() < 0.5 else 1.0
        flip_y = -1.0 if self.vertical_flip and rng.random() < 0.5 else 1.0
        cos, sin = np.cos(theta), np.sin(theta)
        rotation = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
        shearing = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
        scaling = np.diag([zx * flip_x, zy * flip_y, 1.0])
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        return _translate(cx, cy) @ _translate(tx, ty) @ rotation @ shearing @ scaling @ _translate(-cx, -cy)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random augmentation of an RGB uint8 image, at the same size."""
        height, width = image.shape[:2]
        matrix = self.random_matrix(rng, height, width)
        out = cv2.warpAffine(
            image,
            matrix[:2],
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=FILL_MODES[self.fill_mode],
        )
        if self.brightness_range is not None:
            factor = rng.uniform(*self.brightness_range)
            out = cv2.convertScaleAbs(out, alpha=factor)
        return out
