"""Shared fixtures: small generated images and datasets, and the path to ../shared."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def write_image(path: Path, rgb=(200, 30, 30), size=(12, 16), noise: int = 0, seed: int = 0) -> Path:
    """Write an RGB image of one colour (plus optional noise) with OpenCV; format from the suffix."""
    rng = np.random.default_rng(seed)
    image = np.empty((*size, 3), dtype=np.int16)
    image[:] = rgb
    if noise:
        image += rng.integers(-noise, noise + 1, size=image.shape, dtype=np.int16)
    bgr = np.clip(image, 0, 255).astype(np.uint8)[..., ::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix or ".png", bgr)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def make_class_folders(root: Path, counts: dict[str, int], size=(12, 16), suffix=".png") -> Path:
    """root/<class>/<class>-<k><suffix> noisy images, a distinct colour per class."""
    for c, (name, count) in enumerate(sorted(counts.items())):
        for k in range(count):
            path = root / name / f"{name}-{k:03d}{suffix}"
            write_image(path, rgb=(40 * c % 256, 255 - 30 * c, 17 * k % 256), size=size, noise=30, seed=k)
    return root


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "data" / "dogs120" / "labels.csv").is_file():
        pytest.skip(f"needs the shared data set at {SHARED}/data/dogs120 (not present on this machine)")
    return SHARED
