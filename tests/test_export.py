"""siamdog export: the deployment formats give the probabilities best.keras gives, on decoded images."""

import json

import keras
import numpy as np
import pytest

from siamdog.cli import main
from siamdog.data.images import load_image
from tests.conftest import make_class_folders

SIZE = 24
TOLERANCE = 1e-5  # measured: ONNX Runtime within 3e-7 of Keras on the demo model, SavedModel exact


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with a small classifier (the export does not depend on the architecture)."""
    root = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="image_1")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    (root / "run").mkdir()
    model.save(root / "run" / "best.keras")
    (root / "run" / "classes.txt").write_text("a\nb\nc\n")
    images = make_class_folders(root / "images", {"x": 4}, size=(40, 30), suffix=".jpg")
    batch = np.stack([load_image(p, (SIZE, SIZE)) for p in sorted((images / "x").iterdir())]).astype("float32")  # the input contract
    return root / "run", batch, model.predict(batch, verbose=0)


def _exported(out, capsys):
    assert json.loads((out / "input.json").read_text())["input"]["shape"] == [None, SIZE, SIZE, 3]
    assert (out / "classes.txt").read_text() == "a\nb\nc\n"
    assert "wrote" in capsys.readouterr().out


def test_savedmodel_reloaded_with_tensorflow_gives_the_same_probabilities(run, tmp_path, capsys):
    import tensorflow as tf

    folder, batch, expected = run
    assert main(["export", str(folder), "--format", "savedmodel", "--out", str(tmp_path / "sm")]) == 0
    _exported(tmp_path / "sm", capsys)
    loaded = tf.saved_model.load(str(tmp_path / "sm" / "savedmodel"))  # held: its variables live as long as it does
    served = loaded.serve(batch).numpy()
    np.testing.assert_allclose(served, expected, atol=TOLERANCE)


def test_onnx_run_with_onnxruntime_gives_the_same_probabilities(run, tmp_path, capsys):
    import onnxruntime

    folder, batch, expected = run
    assert main(["export", str(folder), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    _exported(tmp_path / "onnx", capsys)
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: batch})[0]
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)


def test_an_existing_folder_is_refused_in_one_line(run, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["export", str(run[0]), "--format", "savedmodel", "--out", str(tmp_path / "taken")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "exists" in error
