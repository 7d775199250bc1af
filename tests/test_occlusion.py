"""The random-quadrant mask: which samples and quadrants it fills, and its seeding."""

import numpy as np
import pytest

from siamdog.data.occlusion import QuadrantMaskedBatches, mask_quadrants

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
    batches = QuadrantMaskedBatches(source, 1.0, seed=3)
    x, y = batches[1]
    np.testing.assert_array_equal(y, source.y)
    np.testing.assert_array_equal(batches[1][0], x, "the same batch of the same epoch is masked the same way")
    assert not np.array_equal(batches[2][0], x)
    batches.on_epoch_end()
    assert batches.epoch == 1 and not np.array_equal(batches[1][0], x), "another epoch, another mask"
    assert not np.array_equal(QuadrantMaskedBatches(_Source(), 1.0, seed=4)[1][0], x)


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_the_setting_is_a_probability(probability):
    from siamdog.config import load_config
    from siamdog.errors import SiamdogError

    stage = {"name": "heads", "epochs": 1, "optimizer": "nadam", "learning_rate": 1e-3, "quadrant_mask": probability}
    with pytest.raises(SiamdogError, match="quadrant_mask"):
        load_config(None, {"stages": [stage]})


def test_a_frozen_stage_on_the_feature_cache_cannot_mask_pooled_features():
    from siamdog.config import load_config
    from siamdog.errors import SiamdogError

    stage = {"name": "heads", "epochs": 1, "optimizer": "nadam", "learning_rate": 1e-3, "quadrant_mask": 0.5}
    with pytest.raises(SiamdogError, match="stages.heads.quadrant_mask: with feature_cache_views a frozen stage trains on pooled features"):
        load_config(None, {"stages": [stage], "feature_cache_views": 1})
    assert load_config(None, {"stages": [stage]}).stages[0].quadrant_mask == 0.5, "on images it masks the images"
