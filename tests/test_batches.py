import os

import numpy as np
import pytest

from siamdog.data.augment import Augmentation
from siamdog.data.batches import DirectoryBatches, PairedBatches
from tests.conftest import make_class_folders

COUNTS = {"beagle": 5, "corgi": 1, "pug": 4, "akita": 3}


@pytest.fixture
def folders(tmp_path):
    return make_class_folders(tmp_path / "train", COUNTS)


def _legacy_iterator(directory, **kwargs):
    image = pytest.importorskip("tf_keras.preprocessing.image", reason="needs tf_keras for the legacy ImageDataGenerator")
    return image.ImageDataGenerator().flow_from_directory(str(directory), class_mode="categorical", **kwargs)


def test_matches_flow_from_directory_contract(folders):
    ours = DirectoryBatches(folders, target_size=(12, 16), batch_size=4, shuffle=False)
    legacy = _legacy_iterator(folders, target_size=(12, 16), batch_size=4, shuffle=False)
    assert ours.class_indices == legacy.class_indices == {"akita": 0, "beagle": 1, "corgi": 2, "pug": 3}
    assert ours.filenames == legacy.filenames
    assert np.array_equal(ours.classes, legacy.classes)
    assert ours.samples == legacy.samples == 13
    assert len(ours) == len(legacy) == 4
    for i in range(len(ours)):
        (x, y), (lx, ly) = ours[i], legacy[i]
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert x.shape == lx.shape and y.shape == ly.shape
        assert np.array_equal(y, ly), "one-hot labels differ"
        assert np.array_equal(x, lx), "pixels differ (PNG at native size decodes identically)"


def test_resizes_to_target_size_and_reshuffles_every_epoch(folders):
    batches = DirectoryBatches(folders, target_size=(20, 24), batch_size=13, seed=1)
    x, y = batches[0]
    assert x.shape == (13, 20, 24, 3) and y.shape == (13, 4)
    assert 0 <= x.min() and x.max() <= 255
    first = batches.index_array.copy()
    batches.on_epoch_end()
    second = batches.index_array.copy()
    assert sorted(first) == sorted(second) == list(range(13))
    assert not np.array_equal(first, second)
    assert np.array_equal(DirectoryBatches(folders, (20, 24), 13, seed=1)[0][0], x), "same seed, same batch"


def test_augmentation_changes_pixels_but_not_labels(folders):
    plain = DirectoryBatches(folders, (12, 16), 13, shuffle=False)
    augmented = DirectoryBatches(folders, (12, 16), 13, shuffle=False, augmentation=Augmentation(rotation_range=40, zoom_range=0.3))
    (x, y), (xa, ya) = plain[0], augmented[0]
    assert np.array_equal(y, ya) and not np.array_equal(x, xa)


def test_a_file_broken_after_listing_is_replaced_not_yielded(folders, caplog):
    batches = DirectoryBatches(folders, (12, 16), batch_size=13, shuffle=False)
    broken = os.path.join(folders, batches.filenames[2])
    with open(broken, "wb") as f:
        f.write(b"garbage")
    x, y = batches[0]
    assert x.shape[0] == 13 and y.shape[0] == 13
    assert list(batches.unreadable) == [2]
    batches.on_epoch_end()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "skipped 1 unreadable image(s)" in warnings[0]


def _check_pairs(paired, index):
    (x, partner), targets = paired[index]
    y1, y2, same = targets["ctg_out_1"], targets["ctg_out_2"], targets["bin_out"]
    assert len(x) == len(partner) == len(y1) == len(y2) == len(same)
    assert partner.dtype == np.int32 and sorted(partner) == list(range(len(x))), "partners are a permutation of the batch"
    assert np.array_equal(y2, y1[partner])
    assert same.shape == (len(x), 1)
    assert np.array_equal(same[:, 0], (y1.argmax(1) == y2.argmax(1)).astype(np.float32))
    return x, partner, y1, y2, same


def test_pairing_batches_swap_same_class_samples(folders):
    source = DirectoryBatches(folders, (12, 16), batch_size=13, seed=3)
    paired = PairedBatches(source, pair_every=1)
    x, partner, y1, y2, same = _check_pairs(paired, 0)
    assert np.array_equal(x, source[0][0]), "the images are the source's batch, unchanged"
    # Classes of 5, 1, 4, 3 images: 2 + 0 + 2 + 1 same-class pairs -> 10 positives; of the
    # leftovers of beagle, corgi and akita two pair up across classes (negative) and one
    # stays with itself (positive).
    assert same.sum() == 11
    assert np.array_equal(partner[partner], np.arange(13)), "swaps: each is its partner's partner"


def test_other_batches_pair_neighbours(folders):
    source = DirectoryBatches(folders, (12, 16), batch_size=4, shuffle=False)
    paired = PairedBatches(source, pair_every=4)
    x, partner, *_ = _check_pairs(paired, 1)
    assert np.array_equal(x, source[1][0]) and list(partner) == [1, 2, 3, 0]
    x, partner, *_ = _check_pairs(paired, 3)  # the last batch is short (13 = 3 * 4 + 1)
    assert len(x) == 1 and list(partner) == [0]


@pytest.mark.parametrize("batch_size", [1, 2, 5, 13, 64])
def test_never_fails_on_small_classes_short_batches_or_tiny_datasets(folders, batch_size):
    paired = PairedBatches(DirectoryBatches(folders, (12, 16), batch_size=batch_size, seed=0), pair_every=2)
    for epoch in range(2):
        seen = 0
        for i in range(len(paired)):
            seen += len(_check_pairs(paired, i)[0])
        assert seen == 13
        paired.on_epoch_end()
        assert 0.0 <= paired.last_epoch_positive_fraction <= 1.0


def test_positive_fraction_is_counted_per_epoch(folders):
    paired = PairedBatches(DirectoryBatches(folders, (12, 16), batch_size=13), pair_every=1)
    _check_pairs(paired, 0)
    paired.on_epoch_end()
    assert paired.last_epoch_positive_fraction == pytest.approx(11 / 13)


def test_a_batch_read_twice_counts_once_in_the_positive_fraction(folders):
    once, twice = (PairedBatches(DirectoryBatches(folders, (12, 16), batch_size=4), pair_every=2) for _ in range(2))
    for i in range(len(once)):
        once[i]
    for i in [0, *range(len(twice))]:  # Keras reads the first batch once more to build a model
        twice[i]
    once.on_epoch_end()
    twice.on_epoch_end()
    # batch 0 pairs within classes, the others mostly across: counting it twice would raise the fraction
    assert twice.last_epoch_positive_fraction == once.last_epoch_positive_fraction


def test_pairs_a_legacy_image_data_generator_iterator(folders):
    legacy = _legacy_iterator(folders, target_size=(12, 16), batch_size=4, shuffle=True, seed=0)
    paired = PairedBatches(legacy, pair_every=2)
    assert len(paired) == 4
    for i in range(len(paired)):
        x, partner, y1, y2, same = _check_pairs(paired, i)
        assert x.shape[1:] == (12, 16, 3) and y1.shape[1] == 4
    x, partner, y1, y2, same = _check_pairs(paired, 0)
    labels = y1.argmax(1)
    expected = sum(c // 2 for c in np.bincount(labels)) * 2
    assert same.sum() == expected
    paired.on_epoch_end()
    assert paired.last_epoch_positive_fraction is not None
