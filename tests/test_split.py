from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from siamdog.data.split import stratified_split, valid_count


def test_every_class_with_two_images_gets_a_valid_image_and_keeps_a_train_image():
    labels = ["a"] * 2 + ["b"] * 3 + ["c"] * 1 + ["d"] * 40
    keys = [f"f{i}" for i in range(len(labels))]
    mask = stratified_split(labels, keys, 0.1, seed=0)
    valid = Counter(label for label, v in zip(labels, mask) if v)
    assert valid == {"a": 1, "b": 1, "d": 4}


def test_split_does_not_depend_on_listing_order_or_other_classes():
    labels = ["a"] * 10 + ["b"] * 10
    keys = [f"img{i:02d}" for i in range(20)]
    mask = stratified_split(labels, keys, 0.3, seed=5)
    order = np.random.default_rng(1).permutation(20)
    shuffled = stratified_split([labels[i] for i in order], [keys[i] for i in order], 0.3, seed=5)
    assert {keys[i] for i in order[shuffled]} == {keys[i] for i in np.flatnonzero(mask)}
    only_a = stratified_split(labels[:10], keys[:10], 0.3, seed=5)
    assert np.array_equal(only_a, mask[:10])


def test_different_seeds_give_different_splits():
    labels, keys = ["a"] * 50, [str(i) for i in range(50)]
    assert not np.array_equal(stratified_split(labels, keys, 0.2, 0), stratified_split(labels, keys, 0.2, 1))


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8),
    fraction=st.floats(min_value=0.0, max_value=0.95),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_split_properties(counts, fraction, seed):
    labels = [f"class{c}" for c, n in enumerate(counts) for _ in range(n)]
    keys = [f"{label}-{i}" for i, label in enumerate(labels)]
    mask = stratified_split(labels, keys, fraction, seed)
    assert mask.dtype == bool and len(mask) == len(labels)
    for c, n in enumerate(counts):
        taken = sum(v for label, v in zip(labels, mask) if label == f"class{c}")
        assert taken == valid_count(n, fraction)
        assert taken < n or n == 0
        if n >= 2 and fraction > 0:
            assert taken >= 1
    assert np.array_equal(mask, stratified_split(labels, keys, fraction, seed))
