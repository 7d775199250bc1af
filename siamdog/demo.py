"""A small, learnable image set that the project makes itself, for the demo and the tests.

Each class is a coloured shape (a red disc, a green square, ...) drawn at a random place,
size and angle on a noisy background. The training images are written flat, named
`<class>_<hash>.jpg` like the Baidu dog competition; held-out test images go into class folders.
"""

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

CLASSES = (
    ("reddisc", (220, 40, 40), "disc"),
    ("greensquare", (40, 200, 60), "square"),
    ("bluetriangle", (40, 70, 230), "triangle"),
    ("yellowring", (230, 210, 40), "ring"),
    ("magentacross", (210, 40, 200), "cross"),
    ("cyanbars", (40, 210, 220), "bars"),
)


def draw_shape(rng: np.random.Generator, color: tuple[int, int, int], shape: str, size: int) -> np.ndarray:
    """One RGB uint8 image of `shape` in (a jittered) `color` on a noisy background."""
    background = rng.integers(60, 140, size=3)
    image = np.clip(rng.normal(background, 18, size=(size, size, 3)), 0, 255).astype(np.uint8)
    jitter = np.clip(np.asarray(color) + rng.integers(-25, 26, size=3), 0, 255)
    bgr = tuple(int(c) for c in jitter[::-1])
    cx, cy = rng.integers(size // 3, 2 * size // 3, size=2)
    radius = int(rng.integers(size // 6, size // 3))
    angle = rng.uniform(0, np.pi)
    canvas = image[..., ::-1].copy()  # OpenCV draws in BGR
    if shape == "disc":
        cv2.circle(canvas, (int(cx), int(cy)), radius, bgr, -1)
    elif shape == "ring":
        cv2.circle(canvas, (int(cx), int(cy)), radius, bgr, max(2, radius // 3))
    elif shape in ("square", "triangle"):
        sides = 4 if shape == "square" else 3
        points = [
            (cx + radius * np.cos(angle + 2 * np.pi * k / sides), cy + radius * np.sin(angle + 2 * np.pi * k / sides))
            for k in range(sides)
        ]
        cv2.fillPoly(canvas, [np.array(points, dtype=np.int32)], bgr)
    else:  # cross: two crossing strokes; bars: two parallel strokes
        for k in range(2):
            a = angle + np.pi / 2 * k if shape == "cross" else angle
            shift = (k - 0.5) * radius * 0.8 if shape == "bars" else 0.0
            dx, dy = np.cos(a) * radius, np.sin(a) * radius
            ox, oy = -np.sin(a) * shift, np.cos(a) * shift
            cv2.line(canvas, (int(cx - dx + ox), int(cy - dy + oy)), (int(cx + dx + ox), int(cy + dy + oy)), bgr, max(2, radius // 3))
    return canvas[..., ::-1].copy()


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(data.tobytes())


def make_demo_images(
    raw_dir: str | os.PathLike,
    test_dir: str | os.PathLike | None = None,
    num_classes: int = 4,
    per_class: int = 30,
    test_per_class: int = 10,
    size: int = 96,
    seed: int = 0,
) -> list[str]:
    """Write `per_class` training images per class flat into `raw_dir` and, if `test_dir` is
    given, `test_per_class` more into `test_dir/<class>/`. Returns the class names."""
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be between 2 and {len(CLASSES)}")
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for name, color, shape in CLASSES[:num_classes]:
        names.append(name)
        for k in range(per_class):
            tag = hashlib.sha1(f"{seed}-{name}-{k}".encode()).hexdigest()[:12]
            _write_jpeg(raw_dir / f"{name}_{tag}.jpg", draw_shape(rng, color, shape, size))
        if test_dir is not None:
            folder = Path(test_dir) / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(test_per_class):
                _write_jpeg(folder / f"{name}_test{k:03d}.jpg", draw_shape(rng, color, shape, size))
    return names
