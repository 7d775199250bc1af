"""The epoch order (pure): shuffled, sequential and class-balanced P x K batches."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siamdog.data.sampling import Sampler
from siamdog.data.seeds import PURPOSES, generator


def test_shuffled_visits_every_sample_once_in_a_new_order_each_epoch():
    sampler = Sampler("shuffled", [0, 1, 2, 0, 1, 2, 0], batch_size=3, seed=5)
    first, second = sampler.order(0), sampler.order(1)
    assert sorted(first) == sorted(second) == list(range(7))
    assert not np.array_equal(first, second)
    assert np.array_equal(Sampler("shuffled", [0] * 7, 3, seed=5).order(0), first), "the order depends on seed and epoch only"


def test_sequential_is_file_order():
    assert Sampler("sequential", [2, 0, 1], batch_size=2).order(3).tolist() == [0, 1, 2]


@settings(max_examples=100, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=12), min_size=2, max_size=8),
    images_per_class=st.integers(min_value=2, max_value=4),
    epoch=st.integers(min_value=0, max_value=3),
)
def test_class_balanced_batches_hold_p_classes_of_k_images(counts, images_per_class, epoch):
    labels = np.repeat(np.arange(len(counts)), counts)
    classes_per_batch = min(2, len(counts))
    batch_size = classes_per_batch * images_per_class
    order = Sampler("class_balanced", labels, batch_size, seed=1, images_per_class=images_per_class).order(epoch)
    assert len(order) == -(-len(labels) // batch_size) * batch_size, "as many batches as the shuffled sampler"
    for start in range(0, len(order), batch_size):
        batch = labels[order[start : start + batch_size]]
        per_class = Counter(batch.tolist())
        assert len(per_class) == classes_per_batch and set(per_class.values()) == {images_per_class}
        members = order[start : start + batch_size]
        for c in per_class:
            # K distinct images of a class whenever it has K or more.
            assert len(set(members[batch == c].tolist())) == min(images_per_class, counts[c])


def test_class_balanced_settings_that_cannot_make_a_batch_are_refused():
    with pytest.raises(ValueError, match="multiple"):
        Sampler("class_balanced", [0, 1, 2], batch_size=7, images_per_class=2)
    with pytest.raises(ValueError, match="needs 4 classes"):
        Sampler("class_balanced", [0, 1, 2], batch_size=8, images_per_class=2)
    with pytest.raises(ValueError, match="at least 2"):
        Sampler("class_balanced", [0, 1, 2], batch_size=3, images_per_class=1)
    with pytest.raises(ValueError, match="unknown sampler"):
        Sampler("random", [0, 1], batch_size=2)


def test_each_purpose_of_a_batch_draws_from_a_generator_of_its_own():
    def draws(*key, **batch):
        return generator(*key, **batch).integers(2**31, size=4).tolist()

    assert draws(3, 1, "mix", batch_index=2) == draws(3, 1, "mix", batch_index=2), "numbers alone seed it"
    keys = [(3, 1, purpose, batch) for purpose in PURPOSES for batch in (0, 1, 2)] + [(4, 1, "mix", 2), (3, 2, "mix", 2)]
    assert len({tuple(draws(*key[:3], batch_index=key[3])) for key in keys}) == len(keys)
