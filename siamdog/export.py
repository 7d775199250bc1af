"""A run's classifier in a deployment format, with what a user of it needs written beside it.

Keras 3's `model.export` does the conversion (TensorFlow SavedModel; ONNX through tf2onnx;
LiteRT through the TensorFlow Lite converter). The folder holds the model, `classes.txt`
(the outputs' order) and `input.json`, the input contract: one batch of RGB pixels in
[0, 255] at the model's size, float32; the preprocessing is inside the model.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np

from siamdog.errors import SiamdogError
from siamdog.evaluate import load_classifier
from siamdog.files import TEMP_PREFIX

# siamdog's name -> (Keras's format name, the file or folder written, modules it needs)
FORMATS = {
    "savedmodel": ("tf_saved_model", "savedmodel", ()),
    "onnx": ("onnx", "model.onnx", ("tf2onnx", "onnx")),
    "litert": ("litert", "model.tflite", ()),
}


def export_model(model: str | os.PathLike, fmt: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Export the classifier of a run folder (or `.keras` file) as `fmt`; returns the folder.

    The folder (default: `export-<fmt>/` beside the model) is written under a temporary name
    and renamed, so it is complete or absent; an existing one is refused.
    """
    if fmt not in FORMATS:
        raise SiamdogError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    keras_format, artifact, needs = FORMATS[fmt]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        raise SiamdogError(f"{fmt} export needs {' and '.join(missing)}: pip install 'siamdog[export]'")
    classifier, classes, model_file = load_classifier(model)
    out = Path(out_dir) if out_dir is not None else model_file.parent / f"export-{fmt}"
    if out.exists():
        raise SiamdogError(f"{out} exists; remove it or choose another --out")
    tmp = out.parent / (TEMP_PREFIX + out.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _, height, width, channels = classifier.input_shape
        classifier(np.zeros((1, height, width, channels), "float32"))  # the ONNX path refuses a model never called
        try:
            classifier.export(str(tmp / artifact), format=keras_format, verbose=False)
        except Exception as e:  # the converters raise anything; one line says which failed
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise SiamdogError(f"{fmt} export of {model_file} failed: {reason}") from None
        (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        contract = {
            "model": artifact,
            "format": fmt,
            "input": {"name": classifier.inputs[0].name, "shape": [None, height, width, channels], "dtype": "float32",
                      "pixels": "RGB, 0..255, resized to the shape; the model preprocesses them itself"},
            "output": {"shape": [None, len(classes)], "meaning": "class probabilities, in the order of classes.txt"},
            "source": str(model_file),
        }
        (tmp / "input.json").write_text(json.dumps(contract, indent=1), encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
