from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siamdog.data.split import held_out_counts, stratified_split


def test_every_class_with_two_images_gets_a_valid_image_and_keeps_a_train_image():
    labels = ["a"] * 2 + ["b"] * 3 + ["c"] * 1 + ["d"] * 40
    keys = [f"f{i}" for i in range(len(labels))]
    splits = stratified_split(labels, keys, 0.1, seed=0)
    assert set(splits) == {"train", "valid"}
    valid = Counter(label for label, s in zip(labels, splits) if s == "valid")
    assert valid == {"a": 1, "b": 1, "d": 4}


def test_a_test_split_leaves_the_valid_split_as_it_was():
    labels = ["a"] * 3 + ["b"] * 2 + ["d"] * 40
    keys = [f"f{i}" for i in range(len(labels))]
    two_way = stratified_split(labels, keys, 0.1, seed=0)
    three_way = stratified_split(labels, keys, 0.1, seed=0, test_fraction=0.2)
    assert np.array_equal(two_way == "valid", three_way == "valid")
    test = Counter(label for label, s in zip(labels, three_way) if s == "test")
    assert test == {"a": 1, "d": 8}, "b has no image to spare for test"


def test_split_does_not_depend_on_listing_order_or_other_classes():
    labels = ["a"] * 10 + ["b"] * 10
    keys = [f"img{i:02d}" for i in range(20)]
    splits = stratified_split(labels, keys, 0.3, seed=5, test_fraction=0.2)
    order = np.random.default_rng(1).permutation(20)
    shuffled = stratified_split([labels[i] for i in order], [keys[i] for i in order], 0.3, seed=5, test_fraction=0.2)
    assert {keys[i]: s for i, s in zip(order, shuffled)} == dict(zip(keys, splits))
    only_a = stratified_split(labels[:10], keys[:10], 0.3, seed=5, test_fraction=0.2)
    assert np.array_equal(only_a, splits[:10])


def test_different_seeds_give_different_splits():
    labels, keys = ["a"] * 50, [str(i) for i in range(50)]
    assert not np.array_equal(stratified_split(labels, keys, 0.2, 0), stratified_split(labels, keys, 0.2, 1))


def test_fractions_that_leave_nothing_to_train_on_are_refused():
    with pytest.raises(ValueError, match="leave images to train on"):
        stratified_split(["a"] * 4, list("wxyz"), 0.5, seed=0, test_fraction=0.5)


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8),
    fraction=st.floats(min_value=0.0, max_value=0.6),
    test_fraction=st.floats(min_value=0.0, max_value=0.35),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_split_properties(counts, fraction, test_fraction, seed):
    labels = [f"class{c}" for c, n in enumerate(counts) for _ in range(n)]
    keys = [f"{label}-{i}" for i, label in enumerate(labels)]
    splits = stratified_split(labels, keys, fraction, seed, test_fraction)
    assert len(splits) == len(labels) and set(splits) <= {"train", "valid", "test"}
    for c, n in enumerate(counts):
        taken = Counter(s for label, s in zip(labels, splits) if label == f"class{c}")
        assert (taken["valid"], taken["test"]) == held_out_counts(n, fraction, test_fraction)
        assert taken["train"] >= 1, "every class keeps a training image"
        if n >= 2 and fraction > 0:
            assert taken["valid"] >= 1
        if n - taken["valid"] >= 2 and test_fraction > 0:
            assert taken["test"] >= 1
    assert np.array_equal(splits, stratified_split(labels, keys, fraction, seed, test_fraction))
