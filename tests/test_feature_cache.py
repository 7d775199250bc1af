"""Cached tower features for frozen-tower stages: the batch source, the cache, the heads model."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from siamdog.data.augment import Augmentation
from siamdog.data.batches import DirectoryBatches, PairedBatches
from siamdog.data.features import FeatureBatches
from siamdog.models.backbones import build_tower, split_tower, tower_between
from siamdog.models.siamese import HeadFusion, accuracy_share, build_model, heads_of
from siamdog.similarity import calibrate_verification
from siamdog.inference import zoomed
from siamdog.training.feature_cache import cached_outputs, fill_seconds, stage_inputs, training_views, view_batch, weights_digest
from siamdog.errors import SiamdogError
from siamdog.training.front_engines import FrontEngine
from siamdog.training.trainer import train
from tests.conftest import make_class_folders, read_history, tiny_config


def test_feature_batches_contract():
    features = np.stack([np.arange(10)[:, None] * np.ones((10, 3)), -np.arange(10)[:, None] * np.ones((10, 3))])
    labels = np.array([0, 1] * 5)
    batches = FeatureBatches(features.astype("float32"), labels, num_classes=2, batch_size=4, seed=0)
    assert len(batches) == 3
    seen, views = [], set()
    for i in range(len(batches)):
        x, y = batches[i]
        assert x.shape[1] == 3 and y.shape == (len(x), 2)
        ids = np.abs(x[:, 0]).astype(int)
        assert np.array_equal(y.argmax(1), labels[ids])
        views |= set(np.sign(x[:, 0][ids > 0]).tolist())
        seen += ids.tolist()
    assert sorted(seen) == list(range(10)) and views == {1.0, -1.0}
    first = batches.index_array.copy()
    batches.on_epoch_end()
    assert not np.array_equal(first, batches.index_array)
    ordered = FeatureBatches(features.astype("float32"), labels, 2, batch_size=4, shuffle=False)
    assert np.array_equal(ordered[0][0][:, 0], [0, 1, 2, 3])
    paired = PairedBatches(batches, pair_every=1)
    (x, partner), targets = paired[0]
    y1, y2, same = targets["ctg_out_1"], targets["ctg_out_2"], targets["bin_out"]
    assert np.array_equal(x, batches[0][0]) and np.array_equal(y2, y1[partner]) and same.sum() >= 2


def test_training_views_are_original_mirror_then_augmented():
    assert training_views(1) == ("as is",) and training_views(3) == ("as is", "mirrored", "augmented")
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 10, 3)).astype("float32")
    aug = Augmentation(rotation_range=30)
    rng = np.random.default_rng(0)
    assert view_batch(images, "as is", aug, rng) is images
    assert np.array_equal(view_batch(images, "mirrored", aug, rng), images[:, :, ::-1])
    augmented = view_batch(images, "augmented", aug, rng)
    assert augmented.shape == images.shape and not np.allclose(augmented, images)


@pytest.fixture(scope="module")
def tower():
    return build_tower("xception", "none", 71)


def test_one_pass_is_cached_and_keyed_by_what_decides_it(tower, tmp_path):
    folders = make_class_folders(tmp_path / "data" / "train", {"a": 3, "b": 2}, size=(30, 30))
    batches = DirectoryBatches(folders, (71, 71), batch_size=2, shuffle=False)
    cache = tmp_path / "data" / ".siamdog-cache"
    features = cached_outputs(tower, batches, 2, Augmentation(), progress=False)
    assert features.shape == (2, 5, 2048) and features.dtype == np.float32
    assert len(list(cache.glob("train-*.npy"))) == 1
    again = cached_outputs(tower, batches, 2, Augmentation(), progress=False)
    assert np.array_equal(np.asarray(again), np.asarray(features)) and len(list(cache.glob("*.npy"))) == 1
    cached_outputs(tower, batches, 2, Augmentation(rotation_range=5), seed=7, progress=False)
    assert len(list(cache.glob("*.npy"))) == 1, "as-is and mirrored views depend on no seed or augmentation setting"
    cached_outputs(tower, batches, 3, Augmentation(), progress=False)
    cached_outputs(tower, batches, 3, Augmentation(rotation_range=5), progress=False)
    cached_outputs(tower, batches, 3, Augmentation(rotation_range=5), seed=7, progress=False)
    assert len(list(cache.glob("*.npy"))) == 4, "augmented views are keyed by the augmentation and its seed"
    for path in cache.glob("*.npy"):
        if np.load(path, mmap_mode="r").shape[0] == 3:
            path.unlink()
    direct = tower.predict_on_batch(batches[0][0][:, :, ::-1])
    np.testing.assert_allclose(features[1, :2], direct, rtol=1e-4, atol=1e-6)
    # Other views, or other weights, make another pass.
    cached_outputs(tower, batches, 1, Augmentation(), progress=False)
    assert len(list(cache.glob("*.npy"))) == 2
    before = weights_digest(tower)
    dense_kernel = tower.get_layer("base").layers[-3].weights[0]
    dense_kernel.assign(dense_kernel + 0.01)
    assert weights_digest(tower) != before
    cached_outputs(tower, batches, 1, Augmentation(), progress=False)
    assert len(list(cache.glob("*.npy"))) == 3
    with pytest.raises(ValueError, match="unshuffled"):
        cached_outputs(tower, DirectoryBatches(folders, (71, 71), 2), 1, Augmentation())


def test_a_pass_keeps_the_seconds_it_took_from_the_images_and_one_cached_without_them_is_made_again(tower, tmp_path):
    folders = make_class_folders(tmp_path / "data" / "train", {"a": 3, "b": 2}, size=(30, 30))
    batches = DirectoryBatches(folders, (71, 71), batch_size=2, shuffle=False)
    front = stage_inputs(tower, "xception", 1, 1, batches, 1, Augmentation(), progress=False)
    record = Path(front.filename).with_suffix(".json")
    assert fill_seconds(front) == json.loads(record.read_text())["seconds"] >= 0
    record.write_text(json.dumps({"seconds": 100.0}))  # as if the front's pass had been long
    pooled = stage_inputs(tower, "xception", 1, 0, batches, 1, Augmentation(), progress=False)
    assert Path(pooled.filename) != Path(front.filename)
    assert fill_seconds(pooled) >= 100.0 and fill_seconds(pooled[0]) == fill_seconds(pooled), "a mapping counts the pass it was made from"
    made = Path(front.filename).stat().st_ino
    record.unlink()
    again = stage_inputs(tower, "xception", 1, 1, batches, 1, Augmentation(), progress=False)
    assert Path(again.filename).stat().st_ino != made and fill_seconds(again) < 100.0, "a pass whose seconds were not kept is made again"


def test_a_pass_of_named_views_holds_those_views(tower, tmp_path):
    folders = make_class_folders(tmp_path / "data" / "test", {"a": 3, "b": 2}, size=(30, 30))
    batches = DirectoryBatches(folders, (71, 71), batch_size=2, shuffle=False)
    cache = tmp_path / "data" / ".siamdog-cache"
    flip = cached_outputs(tower, batches, ("as is", "mirrored"), Augmentation(), progress=False)
    assert cached_outputs(tower, batches, 2, Augmentation(), progress=False).filename == flip.filename, "the training pass of 2 views is the flip pass"
    crops = cached_outputs(tower, batches, ("zoomed", "zoomed mirrored"), Augmentation(), progress=False)
    assert crops.shape == flip.shape and len(list(cache.glob("*.npy"))) == 2
    images = batches[0][0]
    np.testing.assert_allclose(crops[0, :2], tower.predict_on_batch(zoomed(images)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(crops[1, :2], tower.predict_on_batch(zoomed(images)[:, :, ::-1]), rtol=1e-4, atol=1e-6)


def test_named_training_views_reuse_the_flip_pass(tower, tmp_path):
    folders = make_class_folders(tmp_path / "data" / "train", {"a": 3, "b": 2}, size=(30, 30))
    batches = DirectoryBatches(folders, (71, 71), batch_size=2, shuffle=False)
    cache = tmp_path / "data" / ".siamdog-cache"
    flip = stage_inputs(tower, "xception", 0, 0, batches, 2, Augmentation(), progress=False)
    views = stage_inputs(tower, "xception", 0, 0, batches, ("as is", "mirrored", "zoomed"), Augmentation(), progress=False)
    assert len(views) == 3 and all(view.shape == (5, 2048) for view in views)
    assert np.array_equal(views[0], flip[0]) and np.array_equal(views[1], flip[1])
    zoomed_pass = cached_outputs(tower, batches, ("zoomed",), Augmentation(), progress=False)
    assert np.array_equal(views[2], zoomed_pass[0])
    assert len(list(cache.glob("*.npy"))) == 2, "the flip pass and one pass of the zoomed view, nothing copied"
    # Views that do not begin with the flip pair are one pass of their own.
    assert stage_inputs(tower, "xception", 0, 0, batches, ("as is", "zoomed"), Augmentation(), progress=False).shape == (2, 5, 2048)


def test_feature_batches_read_a_list_of_views_as_the_stacked_array():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 30, 4)).astype("float32")
    labels = np.array([0, 1] * 15)
    stacked = FeatureBatches(features, labels, 2, batch_size=4, seed=5)
    listed = FeatureBatches(list(features), labels, 2, batch_size=4, seed=5)
    for epoch in range(2):
        for i in range(len(stacked)):
            assert all(np.array_equal(a, b) for a, b in zip(stacked[i], listed[i]))
        assert len(set(stacked.views)) == 3, "the comparison reads every view"
        stacked.on_epoch_end()
        listed.on_epoch_end()
    with pytest.raises(ValueError, match="each view"):
        FeatureBatches([features[0], features[1][:5]], labels, 2)


def test_front_and_tail_compose_to_the_tower(tower):
    front, tail = split_tower(tower, "xception", 2)
    image = np.random.default_rng(1).uniform(0, 255, (2, 71, 71, 3)).astype("float32")
    activations = front.predict_on_batch(image)
    assert activations.shape[1:] == tail.input_shape[1:]
    np.testing.assert_allclose(tail.predict_on_batch(activations), tower.predict_on_batch(image), rtol=1e-4, atol=1e-5)
    assert split_tower(tower, "xception", 0) == (tower, None)
    middle = tower_between(tower, "xception", 2, 1)
    np.testing.assert_allclose(
        split_tower(tower, "xception", 1)[1].predict_on_batch(middle.predict_on_batch(activations)),
        tower.predict_on_batch(image), rtol=1e-4, atol=1e-5,
    )
    with pytest.raises(ValueError, match="start before it ends"):
        tower_between(tower, "xception", 1, 2)


def test_one_front_pass_serves_every_stage(tower, tmp_path):
    folders = make_class_folders(tmp_path / "data" / "train", {"a": 3, "b": 2}, size=(30, 30))
    batches = DirectoryBatches(folders, (71, 71), batch_size=2, shuffle=False)
    cache = tmp_path / "data" / ".siamdog-cache"
    activations = stage_inputs(tower, "xception", 2, 2, batches, 2, Augmentation(), progress=False)
    assert activations.shape[:2] == (2, 5) and activations.dtype == np.float16
    pooled = stage_inputs(tower, "xception", 2, 0, batches, 2, Augmentation(), progress=False)
    assert pooled.shape == (2, 5, 2048) and pooled.dtype == np.float32
    assert len(list(cache.glob("*.npy"))) == 2, "one pass of the front, one mapping of it"
    # Pooled features through the cut equal the tower's own, up to float16 storage.
    direct = tower.predict_on_batch(batches[0][0][:, :, ::-1])
    np.testing.assert_allclose(pooled[1, :2], direct, rtol=2e-2, atol=2e-3 * np.abs(direct).max())
    again = stage_inputs(tower, "xception", 2, 0, batches, 2, Augmentation(), progress=False)
    assert np.array_equal(np.asarray(again), np.asarray(pooled)) and len(list(cache.glob("*.npy"))) == 2


@pytest.mark.parametrize("blocks", [0, 2])
@pytest.mark.parametrize("mode", ["multiloss", "softmax"])
def test_models_on_cached_inputs_share_the_models_layers(tower, mode, blocks):
    model = build_model(mode, tower, 3)
    front, tail = split_tower(tower, "xception", blocks)
    on_cache = heads_of(model, tail)
    assert on_cache.training.output_names == model.training.output_names
    image = np.full((1, 71, 71, 3), 100.0, "float32")
    cached = front.predict_on_batch(image)
    for _ in range(2):  # before and after a change to a shared weight
        np.testing.assert_allclose(on_cache.classifier.predict_on_batch(cached), model.image_classifier.predict_on_batch(image), rtol=1e-4)
        np.testing.assert_allclose(on_cache.embedder.predict_on_batch(cached), model.embedder.predict_on_batch(image), rtol=1e-4, atol=1e-6)
        dense = model.parts.classifier.layers[-1]
        dense.kernel.assign(dense.kernel + 1.0)


def test_cached_stages_learn_and_resume_on_the_int8_front(demo, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(feature_cache_views=2, front_engine="openvino_int8")

    class StopInHeads(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1 and not (run / "checkpoints" / "heads.weights.h5").exists():
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(demo / "data", run, config, workers=2, verbose=0, callbacks=[StopInHeads()])
    assert list((demo / "data" / ".siamdog-cache").glob("train-*.npy"))
    state = train(demo / "data", run, config, workers=2, verbose=0)
    # One pass of the front (block-12 activations, 2 views) for all stages, and the pooled
    # features that heads trains on, mapped from it; polish reads view 0 of the same pass.
    assert len(list((demo / "data" / ".siamdog-cache").glob("train-*.npy"))) == 2
    assert [int(r["epoch"]) for r in read_history(run, "heads")] == [0, 1, 2, 3]
    assert set(state["completed"]) == {"heads", "finetune", "polish"}
    model = keras.saving.load_model(run / "best.keras")
    assert len(model.inputs) == 1 and model.input_shape == (None, 71, 71, 3), "the saved model takes images"
    assert state["best"]["val_accuracy"] >= 0.75, "chance is 0.25"
    with pytest.raises(SiamdogError, match="needs feature_cache_views"):
        train(demo / "data", tmp_path / "other", tiny_config(front_engine="openvino"), verbose=0)


def test_stages_train_on_named_cached_views(demo, tmp_path):
    cache = demo / "data" / ".siamdog-cache"
    before = set(cache.glob("train-*.npy"))
    config = tiny_config(mode="softmax", feature_cache_views=["as is", "mirrored", "zoomed"])
    state = train(demo / "data", tmp_path / "run", config, verbose=0)
    assert set(state["completed"]) == {"heads", "finetune", "polish"}
    views = [np.load(path, mmap_mode="r").shape[0] for path in set(cache.glob("train-*.npy")) - before]
    assert 1 in views and 3 not in views, "the zoomed view is a pass of its own beside the flip pass"


@pytest.mark.parametrize("sampler_kind", ["shuffled", "class_balanced"])
def test_cached_and_uncached_batches_make_the_same_pairs(tmp_path, sampler_kind):
    """Pairs must not depend on how a batch is read: reading cached features in file order
    once made the neighbour of a sample mostly one of its own class."""
    folders = make_class_folders(tmp_path / "train", {name: 6 for name in "abcdef"}, size=(8, 8))
    images = DirectoryBatches(folders, (8, 8), batch_size=8, seed=3, sampler_kind=sampler_kind, images_per_class=2)
    features = np.arange(images.samples, dtype="float32")[None, :, None] * np.ones((1, 1, 2), "float32")
    cached = FeatureBatches(features, images.classes, images.num_classes, batch_size=8, seed=3, sampler_kind=sampler_kind, images_per_class=2)
    fractions = []
    for source in (images, cached):
        paired = PairedBatches(source, pair_every=4)
        for epoch in range(2):
            for i in range(len(paired)):
                _, targets = paired[i]
                assert np.array_equal(targets["ctg_out_1"].argmax(1), images.classes[source.index_array[i * 8 : (i + 1) * 8]])
            paired.on_epoch_end()
        fractions.append(paired.last_epoch_positive_fraction)
    assert fractions[0] == fractions[1]
    if sampler_kind == "shuffled":
        assert fractions[1] < 0.5, "with 6 classes most neighbour pairs are negative"


def test_openvino_engines_run_the_front_pass_and_are_cached_apart_from_keras(tower, tmp_path):
    folders = make_class_folders(tmp_path / "data" / "train", {"a": 3, "b": 3}, size=(30, 30))
    batches = DirectoryBatches(folders, (71, 71), batch_size=2, shuffle=False)
    cache = tmp_path / "data" / ".siamdog-cache"
    by_keras = np.asarray(cached_outputs(tower, batches, 2, Augmentation(), progress=False))
    by_openvino = np.asarray(cached_outputs(tower, batches, 2, Augmentation(), progress=False, engine=FrontEngine("openvino")))
    np.testing.assert_allclose(by_openvino, by_keras, rtol=1e-3, atol=1e-4 * np.abs(by_keras).max())
    int8 = FrontEngine("openvino_int8", calibration=batches, calibration_images=4)
    by_int8 = np.asarray(cached_outputs(tower, batches, 2, Augmentation(), progress=False, engine=int8))
    assert len(list(cache.glob("*.npy"))) == 3, "each engine's numbers are a pass of their own"
    assert not np.array_equal(by_int8, by_keras)
    assert np.corrcoef(by_int8.ravel(), by_keras.ravel())[0, 1] > 0.95, "int8 keeps the features"
    again = cached_outputs(tower, batches, 2, Augmentation(), progress=False, engine=FrontEngine("openvino_int8", calibration=batches, calibration_images=4))
    assert np.array_equal(np.asarray(again), by_int8) and len(list(cache.glob("*.npy"))) == 3
    with pytest.raises(SiamdogError, match="unknown front_engine"):
        FrontEngine("tensorrt")



def test_a_fused_auxiliary_head_trains_on_the_cache_and_is_saved_with_its_valid_share(demo, tmp_path):
    run = tmp_path / "run"
    state = train(demo / "data", run, tiny_config(feature_cache_views=1, embedding_size=16, auxiliary_head=True), verbose=0)
    assert set(state["completed"]) == {"heads", "finetune", "polish"}
    rows = [row for stage in ("heads", "finetune", "polish") for row in read_history(run, stage)]
    assert {"aux_out_accuracy", "val_classifier_accuracy", "val_auxiliary_accuracy", "fusion_share"} <= set(rows[0])
    for row in rows:
        share = accuracy_share(float(row["val_classifier_accuracy"]), float(row["val_auxiliary_accuracy"]))
        assert float(row["fusion_share"]) == pytest.approx(share, abs=1e-6)
    best = state["best"]
    best_row = read_history(run, best["stage"])[best["epoch"] - 1]
    model = keras.saving.load_model(run / "best.keras")
    fusion = next(layer for layer in model.layers if isinstance(layer, HeadFusion))
    assert float(fusion.share) == pytest.approx(float(best_row["fusion_share"]), abs=1e-6), "best.keras keeps the share of its epoch"
    # A cached run calibrates verify's answers on the cached valid pass, also when a rerun
    # finds it stopped while calibrating (a fresh model, given the saved best weights): the
    # figures of the valid photos read through the whole saved embedder, to float16 caching.
    (run / "verification.json").unlink()
    del state["verification_seconds"]
    (run / "state.json").write_text(json.dumps(state))
    rerun = train(demo / "data", run, tiny_config(feature_cache_views=1, embedding_size=16, auxiliary_head=True), verbose=0)
    on_cache = json.loads((run / "verification.json").read_text())
    from_photos = calibrate_verification(run, demo / "data" / "valid")
    assert rerun["verification_seconds"] > 0 and on_cache["pairs"] == from_photos["pairs"] > 0
    assert on_cache["same_class_pairs"] == from_photos["same_class_pairs"]
    assert set(on_cache["answers"]) == set(from_photos["answers"]) == {"agreement", "cosine", "head"}
    for answer, figures in on_cache["answers"].items():
        for key in ("roc_auc", "accuracy"):
            assert figures[key] == pytest.approx(from_photos["answers"][answer][key], abs=0.02), (answer, key)
