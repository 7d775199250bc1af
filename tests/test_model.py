import keras
import numpy as np
import pytest

from siamdog.errors import SiamdogError
from siamdog.models.backbones import block_learning_rates, build_tower, calibrate_batchnorm, tail_layers, tower_between, unfreeze_last_blocks
from siamdog.data.pairing import pair_targets
from siamdog.models.siamese import HeadFusion, accuracy_share, build_model, heads_of
from siamdog.training.stages import compile_stage, learning_rate_schedule, make_optimizer

SIZE = 71


@pytest.fixture(scope="module")
def tower():
    return build_tower("xception", "none", SIZE)


def test_siamese_outputs(tower):
    built = build_model("multiloss", tower, num_classes=5)
    model = built.training
    assert [t.name for t in model.inputs] == ["image_1", "partner"]
    assert model.output_names == ["ctg_out_1", "ctg_out_2", "bin_out", "embedding_out", "center_out", "pairs_out"]
    x = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    partner = np.array([1, 0, 2], dtype="int32")
    ctg_1, ctg_2, same, embedding, to_centers, every_pair = model.predict([x, partner], verbose=0)
    assert to_centers.shape == (3, 5) and every_pair.shape == (3, 3)
    assert ctg_1.shape == ctg_2.shape == (3, 5) and same.shape == (3, 1)
    np.testing.assert_allclose(ctg_1.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ctg_2, ctg_1[partner], rtol=1e-4, atol=1e-6)  # one tower, one classifier
    # bin_out sees the squared difference of each sample's features and its partner's.
    features = tower.predict(x, verbose=0)
    np.testing.assert_allclose(embedding, features, rtol=1e-5)
    kernel, bias = (np.asarray(w) for w in built.parts.same_head.weights)
    logits = (features - features[partner]) ** 2 @ kernel + bias
    np.testing.assert_allclose(same, 1 / (1 + np.exp(-logits)), rtol=1e-5)
    # pairs_out is the same head on every pair of the batch: row i, column partner[i] is bin_out.
    np.testing.assert_allclose(every_pair[np.arange(3), partner], same[:, 0], rtol=1e-5)
    # The two heads share one tower: the tower's weights appear once.
    assert len(model.weights) == len({id(w) for w in model.weights})


def test_softmax_only_and_inference_model(tower, tmp_path):
    model = build_model("softmax", tower, num_classes=3).training
    assert model.output_names == ["ctg_out"]
    classifier = build_model("multiloss", tower, 3).image_classifier
    assert len(classifier.inputs) == 1 and classifier.output_shape == (None, 3)
    classifier.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.full((1, SIZE, SIZE, 3), 128.0, "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), classifier.predict(x, verbose=0), rtol=1e-5)


def test_preprocessing_is_inside_the_tower(tower):
    assert tower.get_layer("preprocess").get_config()["scale"] == pytest.approx(1 / 127.5)
    assert tower.get_layer("preprocess").get_config()["offset"] == -1.0


def test_unfreeze_last_two_xception_blocks(tower):
    unfreeze_last_blocks(tower, "xception", 2)
    base = tower.get_layer("base")
    trainable = [layer.name for layer in base.layers if layer.trainable and layer.weights]
    assert trainable, "block13 and block14 should train"
    named = [n for n in trainable if n.startswith("block")]
    assert {n.split("_")[0] for n in named} == {"block13", "block14"}
    assert len(trainable) - len(named) == 1, "plus block13's residual convolution"
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in base.layers if layer.trainable)
    unfreeze_last_blocks(tower, "xception", 0)
    assert tower.trainable_weights == []


def test_fine_tuning_keeps_batchnorm_in_inference_mode():
    # fit calls the model with training=True; batch statistics in the unfrozen blocks would
    # make those outputs differ from inference, and a step would move the moving statistics.
    tower = build_tower("xception", "none", SIZE)
    x = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    calibrate_batchnorm(tower, [x])
    unfreeze_last_blocks(tower, "xception", 2)
    model = build_model("softmax", tower, num_classes=3, dropout=0.0).training
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), rtol=1e-5, atol=1e-6)
    norm = tower.get_layer("base").get_layer("block14_sepconv2_bn")
    moving_mean = np.asarray(norm.moving_mean)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy")
    model.train_on_batch(x, np.eye(3)[[0, 1, 2, 0]])
    np.testing.assert_array_equal(np.asarray(norm.moving_mean), moving_mean)


def test_inception_v3_last_blocks():
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3), pooling="avg")
    names = {layer.name for layer in tail_layers(base, "inception_v3", 2)}
    assert {"mixed9", "mixed10"} <= names and "mixed8" not in names


def test_weights_errors(tmp_path):
    with pytest.raises(SiamdogError, match="no such weights file"):
        build_tower("xception", str(tmp_path / "missing.weights.h5"), SIZE)
    other = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3), pooling="avg")
    wrong = tmp_path / "inception.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(SiamdogError, match="not a weights file for xception"):
        build_tower("xception", str(wrong), SIZE)
    with pytest.raises(SiamdogError, match="too small"):
        build_tower("xception", "none", 32)


def test_calibration_gives_a_random_tower_usable_features():
    tower = build_tower("xception", "none", SIZE)
    x = np.random.default_rng(0).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    before = np.asarray(tower(x, training=False))
    calibrate_batchnorm(tower, [x])
    after = np.asarray(tower(x, training=False))
    assert before.std() < 1e-3 < 1e-2 < after.std()


def test_calibration_on_several_batches_keeps_the_mean_of_their_statistics():
    tower = build_tower("xception", "none", SIZE)
    base = tower.get_layer("base")
    norm = base.get_layer("block1_conv1_bn")
    conv = keras.Model(base.input, base.get_layer("block1_conv1").output)
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 85 * (k + 1), (4, SIZE, SIZE, 3)).astype("float32") for k in range(3)]  # unlike statistics
    outputs = [np.asarray(conv(tower.get_layer("preprocess")(x))) for x in batches]
    calibrate_batchnorm(tower, batches)
    np.testing.assert_allclose(norm.moving_mean, np.mean([o.mean(axis=(0, 1, 2)) for o in outputs], axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance, np.mean([o.var(axis=(0, 1, 2)) for o in outputs], axis=0), rtol=1e-3, atol=1e-5)
    assert norm.momentum == 0.99, "the layer's own momentum is back"


def test_binary_loss_on_a_frozen_tower_trains_only_the_same_class_head(tower):
    # Why heads can train bin_out at no cost to the classifier: with the tower frozen, the
    # "same class?" loss reaches only bin_out's weights.
    unfreeze_last_blocks(tower, "xception", 0)
    features = np.random.default_rng(0).normal(size=(8, 2048)).astype("float32")
    partner = np.array([1, 0, 3, 2, 5, 4, 7, 6], dtype="int32")
    y = np.eye(3, dtype="float32")[[0, 0, 1, 1, 2, 2, 0, 1]]
    same = np.array([1, 1, 1, 1, 1, 1, 0, 0], dtype="float32")[:, None]
    trained = {}
    for weight in (0.0, 0.5):
        keras.utils.set_random_seed(0)
        built = build_model("multiloss", tower, num_classes=3)
        model = heads_of(built).training
        compile_stage(model, keras.optimizers.SGD(0.1), binary_loss_weight=weight)
        model.train_on_batch([features, partner], pair_targets(y, partner, same[:, 0], model.output_names))
        same_head = {id(w) for w in built.parts.same_head.weights}
        trained[weight] = [(id(w) in same_head, np.asarray(w)) for w in model.trainable_weights]
    changed = [in_head for (in_head, a), (_, b) in zip(trained[0.0], trained[0.5]) if not np.array_equal(a, b)]
    assert changed == [True, True], "bin_out's kernel and bias, and nothing else"


def test_losses_and_weights_come_from_the_outputs_table(tower):
    model = heads_of(build_model("multiloss", tower, num_classes=3)).training
    compile_stage(
        model, keras.optimizers.SGD(0.1), label_smoothing=0.1,
        binary_loss_weight=0.25, triplet_loss_weight=2.0, center_loss_weight=0.01, mined_pair_loss_weight=0.5,
    )
    assert model.loss["ctg_out_1"].get_config()["label_smoothing"] == pytest.approx(0.1)
    features = np.random.default_rng(1).normal(size=(6, 2048)).astype("float32")
    partner = np.array([1, 0, 3, 2, 5, 4], dtype="int32")
    y = np.eye(3, dtype="float32")[[0, 0, 1, 1, 2, 1]]
    logs = model.evaluate([features, partner], pair_targets(y, partner, (y.argmax(1) == y[partner].argmax(1)).astype("float32"), model.output_names),
                          verbose=0, return_dict=True)
    parts = {name: logs[f"{name}_loss"] for name in ("ctg_out_1", "ctg_out_2", "bin_out", "embedding_out", "center_out", "pairs_out")}
    assert parts["embedding_out"] > 0 and parts["center_out"] > 0 and parts["pairs_out"] > 0
    expected = (
        parts["ctg_out_1"] + parts["ctg_out_2"] + 0.25 * parts["bin_out"]
        + 2.0 * parts["embedding_out"] + 0.01 * parts["center_out"] + 0.5 * parts["pairs_out"]
    )
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)


def test_batch_hard_triplet_loss_matches_its_definition():
    from siamdog.training.losses import batch_hard_triplet

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(7, 5)).astype("float32")
    labels = np.array([0, 0, 1, 1, 1, 2, 3])
    got = np.asarray(batch_hard_triplet(np.eye(4, dtype="float32")[labels], embeddings, margin=0.3))
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    distance = np.linalg.norm(unit[:, None] - unit[None], axis=-1)
    for i in range(7):
        positives = [j for j in range(7) if labels[j] == labels[i] and j != i]
        negatives = [j for j in range(7) if labels[j] != labels[i]]
        want = max(0.0, distance[i, positives].max() - distance[i, negatives].min() + 0.3) if positives else 0.0
        assert got[i] == pytest.approx(want, abs=1e-4), f"sample {i}"


def test_center_loss_is_half_the_squared_distance_to_the_own_class_center():
    from siamdog.models.siamese import ClassCenters
    from siamdog.training.losses import center_loss

    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 4)).astype("float32")
    labels = np.array([0, 2, 1, 2, 0])
    layer = ClassCenters(3)
    layer.build((None, 4))
    centers = rng.normal(size=(3, 4)).astype("float32")
    layer.centers.assign(centers)
    got = np.asarray(center_loss(np.eye(3, dtype="float32")[labels], layer(features)))
    want = 0.5 * ((features - centers[labels]) ** 2).sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mined_pair_loss_uses_every_positive_and_the_hardest_negative():
    from siamdog.training.losses import mined_pair_loss

    rng = np.random.default_rng(1)
    labels = np.array([0, 0, 0, 1, 1, 2])
    probability = rng.uniform(0.05, 0.95, size=(6, 6)).astype("float32")
    got = np.asarray(mined_pair_loss(np.eye(3, dtype="float32")[labels], probability))
    for i in range(6):
        positives = [j for j in range(6) if labels[j] == labels[i] and j != i]
        negatives = [j for j in range(6) if labels[j] != labels[i]]
        terms = [-np.log(probability[i, j]) for j in positives] + [-np.log(1 - probability[i, negatives].max())]
        want = np.mean(terms) if positives else 0.0
        assert got[i] == pytest.approx(want, rel=1e-4), f"sample {i}"


def test_an_embedding_lets_the_same_class_loss_shape_what_the_classifier_reads(tower, tmp_path):
    unfreeze_last_blocks(tower, "xception", 0)
    built = build_model("multiloss", tower, num_classes=3, embedding_size=8)
    model, cached_classifier = heads_of(built)[:2]
    assert cached_classifier.output_shape == (None, 3) and built.parts.embedding.compute_output_shape((None, 2048)) == (None, 8)
    features = np.random.default_rng(0).normal(size=(6, 2048)).astype("float32")
    partner = np.array([1, 0, 3, 2, 5, 4], dtype="int32")
    y = np.eye(3, dtype="float32")[[0, 0, 1, 1, 2, 0]]
    targets = pair_targets(y, partner, (y.argmax(1) == y[partner].argmax(1)).astype("float32"), model.output_names)
    compile_stage(model, keras.optimizers.SGD(0.1), binary_loss_weight=1.0)
    before = np.asarray(built.parts.embedding.gate.kernel).copy()
    model.train_on_batch([features, partner], targets)
    assert not np.array_equal(before, np.asarray(built.parts.embedding.gate.kernel))
    built.image_classifier.save(tmp_path / "m.keras")
    image = np.full((1, SIZE, SIZE, 3), 90.0, "float32")
    np.testing.assert_allclose(
        keras.saving.load_model(tmp_path / "m.keras").predict_on_batch(image), built.image_classifier.predict_on_batch(image), rtol=1e-5
    )


def test_a_model_has_only_the_batch_outputs_its_stages_weigh(tower):
    from siamdog.config import load_config
    from siamdog.training.trainer import weighed_batch_outputs

    stages = [{"name": "heads", "epochs": 1, "optimizer": "nadam", "learning_rate": 1e-3, "center_loss_weight": 0.01},
              {"name": "finetune", "epochs": 1, "optimizer": "sgd", "learning_rate": 1e-3, "triplet_loss_weight": 1.0}]
    assert weighed_batch_outputs(load_config(None, {"stages": stages})) == ("embedding_out", "center_out")
    assert weighed_batch_outputs(load_config(None, {})) == (), "the default recipe weighs none of them"
    built = build_model("multiloss", tower, num_classes=3, batch_outputs=("center_out",))
    assert built.training.output_names == ["ctg_out_1", "ctg_out_2", "bin_out", "center_out"]
    assert heads_of(built)[0].output_names == built.training.output_names
    assert build_model("multiloss", tower, num_classes=3, batch_outputs=()).parts.centers is None


def test_a_mixed_precision_tower_feeds_float32_heads():
    precision = "mixed_float16"  # mixed_bfloat16 trains in tests/test_training.py
    tower = build_tower("xception", "none", 71, precision)
    assert keras.config.dtype_policy().name == "float32", "the global policy is back"
    assert tower.get_layer("base").layers[1].compute_dtype == precision.removeprefix("mixed_")
    assert tower.get_layer("base").layers[1].variable_dtype == "float32"
    model = build_model("multiloss", tower, 3)
    image = np.full((2, 71, 71, 3), 100.0, "float32")
    probabilities = model.image_classifier.predict_on_batch(image)
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    front = tower_between(tower, "xception", None, 2)
    assert front.dtype_policy.name == precision, "a part computes in its tower's precision"
    with pytest.raises(SiamdogError, match="unknown precision"):
        build_tower("xception", "none", 71, "float8")


def test_learning_rate_schedules_follow_their_curves():
    assert learning_rate_schedule("plateau", 0.1, 5, 10) == 0.1  # ReduceLROnPlateau lowers it
    cosine = learning_rate_schedule("cosine", 0.1, 5, 10, warmup_epochs=1)
    # 10 steps of warmup from 0, then 40 of cosine decay: halfway down at step 30, 0 at 50.
    at = {step: float(cosine(step)) for step in (0, 5, 10, 30, 50)}
    assert at == pytest.approx({0: 0.0, 5: 0.05, 10: 0.1, 30: 0.05, 50: 0.0}, abs=1e-6)
    restarts = learning_rate_schedule("cosine_restarts", 0.1, 5, 10, cycle_epochs=1)
    # Cycles of 10, then 20 steps: back at the peak at steps 10 and 30.
    at = {step: float(restarts(step)) for step in (0, 5, 10, 20, 30)}
    assert at == pytest.approx({0: 0.1, 5: 0.05, 10: 0.1, 20: 0.05, 30: 0.1}, abs=1e-6)


def test_an_auxiliary_head_reads_the_pooled_features_and_the_shipped_classifier_fuses_both(tower, tmp_path):
    unfreeze_last_blocks(tower, "xception", 0)
    built = build_model("multiloss", tower, num_classes=3, embedding_size=8, batch_outputs=(), auxiliary_head=True)
    assert built.training.output_names == ["ctg_out_1", "ctg_out_2", "bin_out", "aux_out"]
    image = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    pooled = tower.predict_on_batch(image)
    classifier = np.asarray(built.parts.classifier(built.parts.embedding(pooled), training=False))
    auxiliary = np.asarray(built.parts.auxiliary(pooled, training=False))
    np.testing.assert_allclose(built.head_probabilities.predict_on_batch(image), np.concatenate([classifier, auxiliary], axis=1), rtol=1e-5)
    built.parts.fusion.share.assign(0.8)
    fused = 0.8 * classifier + 0.2 * auxiliary
    np.testing.assert_allclose(built.image_classifier.predict_on_batch(image), fused, rtol=1e-5)
    cached = heads_of(built)
    np.testing.assert_allclose(cached.classifier.predict_on_batch(pooled), fused, rtol=1e-5)
    assert cached.head_probabilities.output_shape == (None, 6)
    built.image_classifier.save(tmp_path / "fused.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "fused.keras").predict_on_batch(image), fused, rtol=1e-5)
    with pytest.raises(ValueError, match="multiloss mode and an embedding"):
        build_model("multiloss", tower, num_classes=3, auxiliary_head=True)


def test_the_fusion_weighs_each_head_by_its_share_of_the_accuracies():
    assert accuracy_share(0.6, 0.2) == pytest.approx(0.75)
    assert accuracy_share(0.5, 0.5) == 0.5
    assert accuracy_share(0.0, 0.0) == 0.5, "an even split when neither head gets anything right"


def test_validation_sets_the_fusion_from_the_heads_valid_accuracies_and_scores_the_fused_classifier():
    from siamdog.training.callbacks import ClassifierValidation

    labels = np.array([0, 1, 0, 1])
    wrong = 1 - labels
    # The classifier is right on 3 of 4 images, the auxiliary head on 1 of 4: shares 0.75 / 0.25.
    classifier = np.eye(2, dtype="float32")[[0, 1, 0, 0]]
    auxiliary = np.eye(2, dtype="float32")[[0, *wrong[1:]]]
    both = np.concatenate([classifier, auxiliary], axis=1)

    class Batches:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return both, np.eye(2, dtype="float32")[labels]

        def on_epoch_end(self):
            pass

    passthrough = keras.Input((4,))
    heads = keras.Model(passthrough, keras.layers.Identity()(passthrough))
    fusion = HeadFusion()
    fusion.build(None)
    logs = {}
    ClassifierValidation(None, Batches(), heads, fusion).on_epoch_end(0, logs)
    assert logs["val_classifier_accuracy"] == 0.75 and logs["val_auxiliary_accuracy"] == 0.25
    assert logs["fusion_share"] == pytest.approx(0.75) and float(fusion.share) == pytest.approx(0.75)
    assert logs["val_accuracy"] == 0.75, "the fused vote follows the more accurate head where they disagree"


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_scaled_learning_rates_update_each_variable_at_its_rate(name):
    plain, fast, slow = (keras.Variable(np.zeros(3, "float32"), name=n) for n in ("plain", "fast", "slow"))
    gradient = keras.ops.full((3,), 2.0)  # a backend tensor: the torch optimizers take no numpy array
    make_optimizer(name, 0.1, momentum=0.9 if name == "sgd" else 0.0).apply([gradient], [plain])
    make_optimizer(name, 0.1, momentum=0.9 if name == "sgd" else 0.0, multipliers={"slow": 0.25}).apply([gradient, gradient], [fast, slow])
    np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), rtol=1e-6)
    # Adam's step does not depend on the gradient's scale, so only a scaled rate slows it down.
    np.testing.assert_allclose(np.asarray(slow), 0.25 * np.asarray(plain), rtol=1e-5)
    assert np.all(np.asarray(plain) < 0)


def test_block_learning_rates_lower_the_rate_block_by_block_down_from_the_top(tower):
    multipliers = block_learning_rates(tower, "xception", 2, 0.5)
    base = tower.get_layer("base")
    by_block = {0.5: set(), 0.25: set()}
    for path, multiplier in multipliers.items():
        by_block[multiplier].add(path.split("/")[0])
    assert {name for name in by_block[0.5] if name.startswith("block")} == {
        layer.name for layer in base.layers if layer.name.startswith("block14") and layer.weights
    }
    assert all(not name.startswith(("block14", "block12")) for name in by_block[0.25])
    assert any(name.startswith("block13") for name in by_block[0.25])
    unfreeze_last_blocks(tower, "xception", 2)
    assert {v.path for v in tower.trainable_variables} <= set(multipliers), "every unfrozen variable has its block's rate"
    unfreeze_last_blocks(tower, "xception", 0)
