"""Shared fixtures: small generated images and datasets, and the path to ../shared."""

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# The files that train for a minute or more each. With `--dist loadfile` a worker takes a whole
# file at a time, so starting the long ones first keeps the two workers busy to the end instead
# of leaving one of them alone with a long file after the short ones are done.
SLOWEST_FILES = ("test_interruptions.py", "test_training.py", "test_feature_cache.py", "test_distribution.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: tests keep their order within a file


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


NUM_CLASSES = 4
STAGES = [
    {"name": "heads", "epochs": 4, "optimizer": "nadam", "learning_rate": 2e-3},
    {"name": "finetune", "epochs": 3, "optimizer": "sgd", "learning_rate": 1e-3, "momentum": 0.9, "trainable_blocks": 2, "binary_loss_weight": 0.5},
    {"name": "polish", "epochs": 1, "optimizer": "sgd", "learning_rate": 1e-4, "momentum": 0.9, "trainable_blocks": 2, "binary_loss_weight": 0.5, "augment": False},
]


def tiny_config(**changes):
    """A run that takes seconds per epoch on a CPU: random tower at 71 px, few epochs."""
    from siamdog.config import load_config

    return load_config(None, {"weights": "none", "image_size": 71, "batch_size": 16, "stages": STAGES, **changes})


def read_history(run: Path, stage: str) -> list[dict]:
    with open(run / "history" / f"{stage}.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """The generated demo set, organized: DEMO/data/{train,valid} and held-out DEMO/test."""
    from siamdog.data.organize import organize
    from siamdog.demo import make_demo_images

    root = tmp_path_factory.mktemp("demo")
    make_demo_images(root / "raw", root / "test", num_classes=NUM_CLASSES, per_class=30, test_per_class=8, size=72)
    organize(root / "raw", root / "data", progress=False)
    return root
