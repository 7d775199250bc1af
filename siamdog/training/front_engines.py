"""Engines that run the frozen front of the tower for the feature cache.

On a CPU the cached pass of the front over every image and view is most of a run's time, and
the front never trains, so it can run on an inference engine instead of Keras:

    keras          Keras itself (float32), exactly the model that evaluate and predict run.
    openvino       the front exported with `model.export(format="openvino")` and run by
                   OpenVINO in float32.
    openvino_int8  the same, quantized to int8 by NNCF's post-training quantization, its
                   activation ranges calibrated on training images.

Only the training pass runs on the engine: the valid pass, which picks the best epoch, goes
through the Keras front, as evaluate and predict do, and the saved model is the Keras one.
On the project's 2-core machine the int8 cache pass ran 2.5-3.2x as fast as the Keras one, and
heads or a linear probe trained on its features tie float32 ones on the test split
(bench/README.md).
"""

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from siamdog.data.batches import DirectoryBatches
from siamdog.errors import SiamdogError
from siamdog.inference import predict_batch

FRONT_ENGINES = ("keras", "openvino", "openvino_int8")

Runner = Callable[[np.ndarray], np.ndarray]  # a batch of RGB images -> the front's outputs


# The calibration images do not depend on a run's seed, so runs with other seeds share one pass.
CALIBRATION_SEED = 0


def calibration_batches(batches: DirectoryBatches, images: int) -> list[np.ndarray]:
    """About `images` training images (whole batches, a seeded choice) as float32 arrays."""
    count = min(len(batches), math.ceil(images / batches.batch_size))
    chosen = np.sort(np.random.default_rng(CALIBRATION_SEED).choice(len(batches), count, replace=False))
    return [np.asarray(batches[int(i)][0], dtype=np.float32) for i in chosen]


def _openvino():
    try:
        import openvino
    except ImportError:
        raise SiamdogError("front_engine openvino needs OpenVINO: pip install 'siamdog[openvino]'") from None
    return openvino


def _quantize(model, calibration: list[np.ndarray]):
    try:
        import nncf
    except ImportError:
        raise SiamdogError("front_engine openvino_int8 needs NNCF: pip install 'siamdog[openvino]'") from None
    return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))  # items are batches


def _openvino_runner(front: keras.Model, calibration: list[np.ndarray] | None) -> Runner:
    openvino = _openvino()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "front.xml"
        try:
            front.export(str(path), format="openvino", verbose=False)
        except Exception as e:  # the exporter raises whatever its converter raises
            raise SiamdogError(f"front_engine openvino: the front could not be exported ({type(e).__name__}: {e})") from e
        model = openvino.Core().read_model(str(path))
        if calibration is not None:
            model = _quantize(model, calibration)
        # float32 explicitly: OpenVINO would pick bfloat16 on CPUs with AVX-512 BF16, which was
        # slower than float32 for this model on the project's machine, and less exact.
        compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    output = compiled.output(0)
    return lambda batch: request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[output].copy()


@dataclass
class FrontEngine:
    """How the feature cache runs a front; `calibration` (the training batches, unshuffled and
    unaugmented) is needed by `openvino_int8` only."""

    name: str = "keras"
    calibration: DirectoryBatches | None = None
    calibration_images: int = 300
    _runners: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.name not in FRONT_ENGINES:
            raise SiamdogError(f"unknown front_engine {self.name!r} (choose from {', '.join(FRONT_ENGINES)})")
        if self.name == "openvino_int8" and self.calibration is None:
            raise ValueError("openvino_int8 needs calibration batches")

    @property
    def key(self) -> dict:
        """What of the engine decides the cached numbers (part of the cache's name)."""
        if self.name == "keras":
            return {}
        if self.name == "openvino":
            return {"engine": self.name}
        listing = "\n".join(self.calibration.filenames)
        return {"engine": self.name, "calibration": [self.calibration_images, CALIBRATION_SEED, listing]}

    def runner(self, front: keras.Model) -> Runner:
        """The function that runs `front` on a batch, built once per front (quantizing takes
        about a minute)."""
        if front.name not in self._runners:
            if self.name == "keras":
                self._runners[front.name] = lambda batch: predict_batch(front, batch)
            else:
                calibration = (
                    calibration_batches(self.calibration, self.calibration_images)
                    if self.name == "openvino_int8" else None
                )
                self._runners[front.name] = _openvino_runner(front, calibration)
        return self._runners[front.name]
