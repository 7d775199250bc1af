"""How far each export format's probabilities are from the run's best.keras, on real images.

    python bench/export_check.py RUN IMAGES_ROOT     (e.g. build/demo/run build/demo/test, after make demo)

Exports RUN's classifier in every format into build/export-check/, runs each with its own
runtime (TensorFlow for the SavedModel, ONNX Runtime, the TensorFlow Lite interpreter) on up to
32 decoded images under IMAGES_ROOT/<class>/, and prints the largest absolute difference in
probability and how many top-1 classes agree.
"""

import glob
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from siamdog.data.images import load_image  # noqa: E402
from siamdog.export import FORMATS, export_model  # noqa: E402


def run_exported(fmt: str, folder: str, x: np.ndarray) -> np.ndarray:
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(os.path.join(folder, "savedmodel"))
        return loaded.serve(x).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(os.path.join(folder, "model.onnx"))
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=os.path.join(folder, "model.tflite"))
    entry = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(entry["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def main() -> None:
    run, images = sys.argv[1], sys.argv[2]
    model = keras.saving.load_model(os.path.join(run, "best.keras"))
    files = sorted(glob.glob(os.path.join(images, "*", "*")))[:32]
    x = np.stack([load_image(f, model.input_shape[1:3]) for f in files]).astype("float32")
    expected = model.predict(x, verbose=0)
    for fmt in FORMATS:
        out = os.path.join("build", "export-check", fmt)
        shutil.rmtree(out, ignore_errors=True)
        export_model(run, fmt, out)
        got = run_exported(fmt, out, x)
        agree = int((got.argmax(1) == expected.argmax(1)).sum())
        print(f"{fmt}: max abs difference {float(np.abs(got - expected).max()):.2e}, top-1 agrees on {agree}/{len(x)} images")


if __name__ == "__main__":
    main()
