"""Integration with the real photos and ImageNet weights in ../shared (skipped where absent)."""

import csv

import numpy as np
import pytest

from siamdog.data.images import load_image
from siamdog.data.organize import organize
from siamdog.models.backbones import build_tower


def test_organize_the_kaggle_dogs(shared_dir, tmp_path):
    dogs = shared_dir / "data" / "dogs120"
    with open(dogs / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    result = organize(dogs / "train", tmp_path / "dogs", labels=dogs / "labels.csv", link="sym", progress=False)
    assert len(result.classes) == len({r["breed"] for r in rows}) == 120
    assert result.counts["train"] + result.counts["valid"] + len(result.rejected) == len(rows)
    for breed in result.classes:
        assert any((tmp_path / "dogs" / "valid" / breed).iterdir())
        assert any((tmp_path / "dogs" / "train" / breed).iterdir())


@pytest.mark.parametrize("name", ["xception_imagenet_notop.weights.h5", "xception_imagenet_notop.fp16.weights.h5"])
def test_imagenet_weights_load_into_the_tower(shared_dir, name):
    weights = shared_dir / "weights" / name
    if not weights.is_file():
        pytest.skip(f"{weights} is not present")
    tower = build_tower("xception", str(weights), 96)
    photos = sorted((shared_dir / "data" / "dogs120" / "train").glob("*.jpg"))[:4]
    x = np.stack([load_image(p, (96, 96)) for p in photos]).astype("float32")
    features = np.asarray(tower(x, training=False))
    random_features = np.asarray(build_tower("xception", "none", 96)(x, training=False))
    assert features.shape == (4, 2048) and np.isfinite(features).all()
    # ImageNet features of real photos are sparse, non-negative and of order 0.1-1;
    # an uncalibrated random tower's are about 1e-5.
    assert features.min() >= 0 and 0.05 < features.mean() < 5
    assert random_features.std() < 1e-3
