"""The epoch checkpoint on a small model: what it restores, and what it ignores."""

import keras
import numpy as np

from siamdog.training.checkpoint import StageCheckpoint, load_training_state, save_training_state, seed_variables


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "categorical_crossentropy")
    return model


X = np.random.default_rng(0).random((32, 4)).astype("float32")
Y = np.eye(2, dtype="float32")[np.arange(32) % 2]


def test_a_restored_model_trains_on_exactly_as_the_saved_one(tmp_path):
    saved = _model()
    saved.fit(X, Y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    stopping = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    stopping.wait, stopping.best, stopping.best_epoch, stopping.best_weights = 2, 0.25, 1, saved.get_weights()
    save_training_state(tmp_path / "s.weights.h5", saved, epoch=1, callbacks=[stopping])

    restored, counters = _model(), keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    assert load_training_state(tmp_path / "s.weights.h5", restored, [counters]) == {"epoch": 1, "stop_training": False}
    assert (counters.wait, counters.best, counters.best_epoch) == (2, 0.25, 1)
    for a, b in zip(counters.best_weights, saved.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(seed_variables(restored)[0].numpy(), seed_variables(saved)[0].numpy())
    after = [m.fit(X, Y, epochs=1, batch_size=8, shuffle=False, verbose=0).history["loss"] for m in (saved, restored)]
    assert after[0] == after[1], "dropout masks and momentum carried over"


def test_a_plain_weights_file_is_not_taken_for_a_checkpoint(tmp_path):
    model = _model()
    (tmp_path / "backup").mkdir()
    model.save_weights(tmp_path / "backup" / "latest.weights.h5")  # what an earlier version left
    checkpoint = StageCheckpoint(tmp_path / "backup")
    checkpoint.set_model(model)
    checkpoint.set_params({"epochs": 3})
    checkpoint.on_train_begin()
    assert not getattr(model, "_initial_epoch", None), "the stage starts over"
