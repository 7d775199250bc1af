"""The quadrant augmentations: which samples and quadrants the mask fills and the mosaic takes
from where, their seeding, and their settings."""

import numpy as np
import pytest

from siamdog.data.quadrants import QuadrantBatches, mask_quadrants, same_class_mosaic

QUADRANTS = [(slice(0, 2), slice(0, 3)), (slice(0, 2), slice(3, 7)), (slice(2, 5), slice(0, 3)), (slice(2, 5), slice(3, 7))]


def _constant_quadrants(sample: np.ndarray) -> list[int]:
    return [q for q, (rows, columns) in enumerate(QUADRANTS) if np.ptp(sample[rows, columns], axis=(0, 1)).max() == 0]


def test_every_chosen_sample_has_one_quadrant_filled_with_its_mean_and_the_rest_kept():
    x = np.random.default_rng(0).uniform(0, 255, (16, 5, 7, 3)).astype("float32")
    masked = mask_quadrants(x, np.random.default_rng(1), probability=1.0)
    seen = set()
    for original, sample in zip(x, masked):
        (quadrant,) = _constant_quadrants(sample)  # odd sizes: the middle row and column go bottom and right
        rows, columns = QUADRANTS[quadrant]
        np.testing.assert_allclose(sample[rows, columns][0, 0], original.mean(axis=(0, 1)), rtol=1e-6)
        outside = np.ones(sample.shape[:2], bool)
        outside[rows, columns] = False
        np.testing.assert_array_equal(sample[outside], original[outside])
        seen.add(quadrant)
    assert seen == {0, 1, 2, 3}, "16 draws reach every quadrant"
    assert not _constant_quadrants(x[0]), "the input is not changed in place"


def test_the_probability_sets_how_many_samples_are_masked():
    x = np.random.default_rng(0).normal(size=(400, 4, 4, 2)).astype("float32")
    np.testing.assert_array_equal(mask_quadrants(x, np.random.default_rng(2), 0.0), x)
    changed = np.any(mask_quadrants(x, np.random.default_rng(2), 0.25) != x, axis=(1, 2, 3))
    assert 0.18 < changed.mean() < 0.32


def test_a_mosaic_takes_each_quadrant_from_a_sample_of_the_same_class():
    x = np.random.default_rng(0).uniform(size=(12, 5, 7, 2)).astype("float32")
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 4])
    mosaic = same_class_mosaic(x, labels, np.random.default_rng(1), probability=1.0)
    donors_seen = set()
    for i, sample in enumerate(mosaic):
        for rows, columns in QUADRANTS:
            (donor,) = [j for j in range(len(x)) if np.array_equal(sample[rows, columns], x[j, rows, columns])]
            assert labels[donor] == labels[i]
            donors_seen.add(donor != i)
    np.testing.assert_array_equal(mosaic[9], x[9], "a sample alone of its class stays as it is")
    assert donors_seen == {True, False}, "quadrants come from the sample itself and from others"
    assert not np.array_equal(mosaic, x) and np.array_equal(x, np.random.default_rng(0).uniform(size=(12, 5, 7, 2)).astype("float32"))


def test_the_mosaic_probability_sets_how_many_samples_change():
    x = np.random.default_rng(0).normal(size=(400, 4, 4, 2)).astype("float32")
    labels = np.repeat(np.arange(100), 4)
    np.testing.assert_array_equal(same_class_mosaic(x, labels, np.random.default_rng(2), 0.0), x)
    changed = np.any(same_class_mosaic(x, labels, np.random.default_rng(2), 0.5) != x, axis=(1, 2, 3))
    # A chosen sample keeps its own four quadrants with chance (1/4)^4.
    assert 0.42 < changed.mean() < 0.58


class _Source:
    epoch = 0

    def __init__(self):
        self.x = np.random.default_rng(0).uniform(size=(8, 6, 6, 4)).astype("float32")
        self.y = np.eye(2, dtype="float32")[[0, 1] * 4]

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.x, self.y

    def on_epoch_end(self):
        self.epoch += 1


def test_masked_batches_depend_on_seed_epoch_and_batch_alone_and_keep_the_labels():
    source = _Source()
    batches = QuadrantBatches(source, 1.0, 0.0, seed=3)
    x, y = batches[1]
    np.testing.assert_array_equal(y, source.y)
    np.testing.assert_array_equal(batches[1][0], x, "the same batch of the same epoch is masked the same way")
    assert not np.array_equal(batches[2][0], x)
    batches.on_epoch_end()
    assert batches.epoch == 1 and not np.array_equal(batches[1][0], x), "another epoch, another mask"
    assert not np.array_equal(QuadrantBatches(_Source(), 1.0, 0.0, seed=4)[1][0], x)


def test_mosaic_batches_make_mosaics_of_each_class_before_masking_them():
    source = _Source()  # classes 0 and 1 alternate: four photos of each per batch
    mosaics, y = QuadrantBatches(source, 0.0, 1.0, seed=3)[1]
    np.testing.assert_array_equal(y, source.y)
    assert not np.array_equal(mosaics, source.x)
    both, _ = QuadrantBatches(source, 1.0, 1.0, seed=3)[1]
    changed = np.any(both != mosaics, axis=-1)
    assert changed.any(axis=(1, 2)).all() and np.all(changed.mean(axis=(1, 2)) <= 0.25), "then one quadrant of each is masked"


STAGE = {"name": "heads", "epochs": 1, "optimizer": "nadam", "learning_rate": 1e-3}


@pytest.mark.parametrize("key", ["quadrant_mask", "same_class_mosaic"])
@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_the_settings_are_probabilities(key, probability):
    from siamdog.config import load_config
    from siamdog.errors import SiamdogError

    with pytest.raises(SiamdogError, match=key):
        load_config(None, {"stages": [{**STAGE, key: probability}], "sampler": "class_balanced"})


@pytest.mark.parametrize("key", ["quadrant_mask", "same_class_mosaic"])
def test_a_frozen_stage_on_the_feature_cache_has_no_quadrants(key):
    from siamdog.config import load_config
    from siamdog.errors import SiamdogError

    settings = {"stages": [{**STAGE, key: 0.5}], "sampler": "class_balanced"}
    with pytest.raises(SiamdogError, match=f"stages.heads.{key}: with feature_cache_views a frozen stage trains on pooled features"):
        load_config(None, {**settings, "feature_cache_views": 1})
    assert getattr(load_config(None, settings).stages[0], key) == 0.5, "on images it changes the images"


def test_the_mosaic_needs_the_class_balanced_sampler():
    from siamdog.config import load_config
    from siamdog.errors import SiamdogError

    with pytest.raises(SiamdogError, match="stages.heads.same_class_mosaic: needs sampler class_balanced"):
        load_config(None, {"stages": [{**STAGE, "same_class_mosaic": 0.5}]})
