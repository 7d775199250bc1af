"""MixUp and CutMix batches: what they mix, how they are seeded, and where they are refused."""

import keras
import numpy as np
import pytest

from siamdog.config import load_config
from siamdog.data.features import FeatureBatches
from siamdog.data.mixing import MixedBatches
from siamdog.errors import SiamdogError
from siamdog.training.trainer import train
from tests.conftest import read_history, tiny_config

CLASSES = 4


def labelled_features(shape=()) -> FeatureBatches:
    """24 samples of 4 classes whose features are their one-hot labels (spread over `shape`),
    so that a mixed sample's features must equal its mixed labels."""
    labels = np.arange(24) % CLASSES
    one_hot = np.eye(CLASSES, dtype=np.float32)[labels]
    features = np.broadcast_to(one_hot.reshape(24, *(1,) * len(shape), CLASSES), (24, *shape, CLASSES))
    return FeatureBatches(features[None].copy(), labels, CLASSES, batch_size=8, seed=3)


def test_mixup_blends_two_samples_and_their_labels_by_one_weight():
    batches = MixedBatches(labelled_features(), "mixup", 0.4, seed=1)
    mixed_rows = 0
    for i in range(len(batches)):
        x, y = batches[i]
        assert x.shape == y.shape == (8, CLASSES)
        np.testing.assert_allclose(x, y, atol=1e-6)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
        mixed_rows += int(np.sum(y.max(axis=1) < 0.99))
    assert mixed_rows > 0, "some samples are blends of two classes"


def test_cutmix_pastes_a_box_of_another_sample_into_a_feature_map():
    batches = MixedBatches(labelled_features((6, 6)), "cutmix", 1.0, seed=1)
    pasted = 0
    for i in range(len(batches)):
        x, y = batches[i]
        assert x.shape == (8, 6, 6, CLASSES) and y.shape == (8, CLASSES)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
        for sample, labels in zip(x, y):
            classes_seen = set(np.argmax(sample.reshape(-1, CLASSES), axis=1))
            assert np.all(sample.max(axis=-1) == 1.0), "every position is one sample's, unblended"
            assert classes_seen <= set(np.flatnonzero(labels > 0)), "the labels weigh every class whose pixels are there"
            pasted += len(classes_seen) > 1
    assert pasted > 0, "some maps hold a box of another class"


def test_a_batch_s_mix_depends_on_the_seed_epoch_and_index_only():
    first = MixedBatches(labelled_features(), "mixup", 0.4, seed=1)
    again = first[1]
    np.testing.assert_array_equal(first[1][1], again[1])
    first.on_epoch_end()
    resumed = MixedBatches(labelled_features(), "mixup", 0.4, seed=1)
    resumed.source.set_epoch(1)
    np.testing.assert_array_equal(first[1][1], resumed[1][1])
    assert not np.array_equal(first[1][1], again[1]), "another epoch mixes otherwise"
    other_seed = MixedBatches(labelled_features(), "mixup", 0.4, seed=2)
    assert not np.array_equal(other_seed[1][1], again[1])


def test_mixing_is_refused_for_the_multi_loss_model_and_cutmix_on_pooled_features(demo, tmp_path):
    with pytest.raises(SiamdogError, match=r"^config: stages.heads.mix: mixing batches needs mode softmax \("):
        load_config(None, {"stages": [{"name": "heads", "epochs": 1, "optimizer": "sgd", "learning_rate": 0.1, "mix": "mixup"}]})
    stages = [{"name": "heads", "epochs": 1, "optimizer": "sgd", "learning_rate": 0.1, "mix": "cutmix"}]
    with pytest.raises(SiamdogError, match="no box to cut"):
        train(demo / "data", tmp_path / "run", tiny_config(mode="softmax", feature_cache_views=1, stages=stages), verbose=0)
    assert not (tmp_path / "run").exists()


def test_a_softmax_run_learns_on_mixed_cached_features(demo, tmp_path):
    stages = [
        {"name": "heads", "epochs": 3, "optimizer": "nadam", "learning_rate": 2e-3, "mix": "mixup", "mix_alpha": 0.4},
        {"name": "finetune", "epochs": 1, "optimizer": "sgd", "learning_rate": 1e-3, "momentum": 0.9, "trainable_blocks": 2, "mix": "cutmix", "mix_alpha": 1.0},
    ]
    run = tmp_path / "run"
    state = train(demo / "data", run, tiny_config(mode="softmax", feature_cache_views=2, stages=stages), workers=2, verbose=0)
    assert set(state["completed"]) == {"heads", "finetune"}
    assert all(np.isfinite(float(r["loss"])) for stage in ("heads", "finetune") for r in read_history(run, stage))
    assert state["best"]["val_accuracy"] >= 0.5, "chance is 0.25"
    assert keras.saving.load_model(run / "best.keras").input_shape == (None, 71, 71, 3)
