"""The frozen pass against the hardware's limit: GEMM peaks, the forward alone, and the cache
pass with decoding, for each engine that can run the frozen front.

    python bench/frozen_pass.py --image-size 299      (part of make bench-speed)

All figures come from one process, so they compare as ratios (machines differ up to 2x):

  GEMM          a 4096x4096 matmul in float32 and bfloat16 (TensorFlow, oneDNN): the machine's
                dense peak, in GFLOPS;
  forward       the whole Xception tower on an in-memory batch of 32: a `tf.function` (the
                model alone), Keras `predict_on_batch`, Keras under the mixed_bfloat16 policy,
                ONNX Runtime float32, OpenVINO float32 and OpenVINO int8 (NNCF post-training
                quantization calibrated on real training photos); images/s, GFLOPS (2 x multiply-adds per second) and
                the fraction of the float32 GEMM peak;
  cache pass    siamdog's feature-cache pass (decoding, resizing, the front to where the cpu
                profile's last 2 blocks begin, storing) over real dogs120 training photos,
                with each front engine.

Multiply-adds are counted from the layers' shapes (convolutions, separable convolutions,
dense layers). Writes bench/results/frozen-pass-<size>px-<date>.json and .md.
"""

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import header, images_per_second, markdown_table, write_results  # noqa: E402
from bench.runner import SHARED, organized_data  # noqa: E402
from siamdog.data.augment import Augmentation  # noqa: E402
from siamdog.data.batches import DirectoryBatches  # noqa: E402
from siamdog.models.backbones import build_tower, tower_between  # noqa: E402
from siamdog.training.feature_cache import cached_outputs  # noqa: E402
from siamdog.training.front_engines import FrontEngine  # noqa: E402

WEIGHTS = SHARED / "weights" / "xception_imagenet_notop.weights.h5"


def gemm_gflops(dtype: tf.DType, n: int = 4096, repeats: int = 10) -> float:
    a = tf.random.normal((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
    matmul()
    started = time.perf_counter()
    for _ in range(repeats):
        matmul().numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def layers_of(model: keras.Model):
    for layer in model.layers:
        yield from layers_of(layer) if isinstance(layer, keras.Model) else [layer]


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one image through the convolutions and dense layers of `model` (nested
    models included)."""
    total = 0
    for layer in layers_of(model):
        if isinstance(layer, keras.layers.SeparableConv2D):
            kh, kw, channels, multiplier = layer.depthwise_kernel.shape
            out = layer.output.shape
            total += out[1] * out[2] * (kh * kw * channels * multiplier + channels * multiplier * out[3])
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, channels, filters = layer.kernel.shape
            out = layer.output.shape
            total += out[1] * out[2] * kh * kw * channels * filters
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


def onnxruntime_runner(model: keras.Model, sample: np.ndarray):
    """`model` exported to ONNX and run by ONNX Runtime (float32)."""
    import onnxruntime

    model.predict_on_batch(sample)  # the exporter needs a model that has been called
    path = Path(tempfile.mkdtemp(prefix="frozen-pass-onnx-")) / "model.onnx"
    model.export(str(path), format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=3, help="timed batches of 32 per forward figure")
    parser.add_argument("--pass-images", type=int, default=320, help="training photos in each timed cache pass")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    if not WEIGHTS.is_file():
        raise SystemExit(f"skipped: needs the ImageNet Xception weights at {WEIGHTS} (not present)")
    size = args.image_size
    data = organized_data(Path(args.work))
    batches = DirectoryBatches(data / "train", (size, size), 32, shuffle=False)
    photos = np.concatenate([batches[i][0] for i in range(2)])[:32]
    results = {**header("frozen pass"), "image_size": size, "backend": keras.backend.backend(),
               "gemm_gflops": {"float32": round(gemm_gflops(tf.float32), 1), "bfloat16": round(gemm_gflops(tf.bfloat16), 1)}}
    peak = results["gemm_gflops"]["float32"]

    tower = build_tower("xception", str(WEIGHTS), size)
    front = tower_between(tower, "xception", None, 2)
    macs = {"tower": multiply_adds(tower), "front": multiply_adds(front)}
    results["multiply_adds_g"] = {k: round(v / 1e9, 2) for k, v in macs.items()}
    # The cache passes come first, one engine at a time and each released before the next, so
    # that no engine compiled for the forward section holds threads while a pass is timed.
    subset = Path(tempfile.mkdtemp(prefix="frozen-pass-"))
    try:
        for path in batches.filenames[:: max(1, len(batches.filenames) // args.pass_images)][: args.pass_images]:
            (subset / "train" / path).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(data / "train" / path, subset / "train" / path)
        passes = {}
        for engine in ("keras", "openvino", "openvino_int8"):
            subset_batches = DirectoryBatches(subset / "train", (size, size), 32, shuffle=False, workers=2)
            front_engine = FrontEngine(engine, calibration=batches if engine == "openvino_int8" else None)
            front_engine.runner(front)  # exporting and quantizing are paid once per run, not per image
            started = time.perf_counter()
            cached_outputs(front, subset_batches, 1, Augmentation(), dtype="float16", progress=False, engine=front_engine)
            rate = subset_batches.samples / (time.perf_counter() - started)
            passes[engine] = {"images_s": round(rate, 2), "of_float32_gemm_peak": round(2 * macs["front"] * rate / 1e9 / peak, 3)}
            del front_engine
            gc.collect()
        results["cache_pass"] = passes
    finally:
        shutil.rmtree(subset)

    compiled = tf.function(lambda x: tower(x, training=False))
    forward = {
        "tf.function": lambda x: compiled(x).numpy(),
        "keras predict_on_batch": lambda x: np.asarray(tower.predict_on_batch(x)),
        "onnxruntime float32": onnxruntime_runner(tower, photos[:1]),
        "openvino float32": FrontEngine("openvino").runner(tower),
        "openvino int8": FrontEngine("openvino_int8", calibration=batches).runner(tower),
    }
    rates = {name: images_per_second(run, photos, args.repeats) for name, run in forward.items()}
    tower_bf16 = build_tower("xception", str(WEIGHTS), size, precision="mixed_bfloat16")
    rates["keras mixed_bfloat16"] = images_per_second(lambda x: np.asarray(tower_bf16.predict_on_batch(x)), photos, args.repeats)
    results["forward"] = {
        name: {"images_s": round(rate, 2), "gflops": round(2 * macs["tower"] * rate / 1e9, 1),
               "of_float32_gemm_peak": round(2 * macs["tower"] * rate / 1e9 / peak, 3)}
        for name, rate in rates.items()
    }

    keras_rate = results["cache_pass"]["keras"]["images_s"]
    rows = [[name, v["images_s"], v["gflops"], v["of_float32_gemm_peak"]] for name, v in results["forward"].items()]
    pass_rows = [[engine, v["images_s"], v["of_float32_gemm_peak"], round(v["images_s"] / keras_rate, 2)] for engine, v in results["cache_pass"].items()]
    gemm = results["gemm_gflops"]
    body = (
        f"Backend: {results['backend']}. GEMM (4096x4096 matmul): float32 {gemm['float32']} GFLOPS, "
        f"bfloat16 {gemm['bfloat16']} GFLOPS. Xception at {size} px: {results['multiply_adds_g']['tower']} G "
        f"multiply-adds per image, {results['multiply_adds_g']['front']} G of them before the last 2 blocks.\n\n"
        "## The forward alone (whole tower, in-memory batch of 32)\n\n"
        + markdown_table(["engine", "images/s", "GFLOPS", "of the float32 GEMM peak"], rows)
        + f"\n## The cache pass with decoding ({args.pass_images} training photos, 1 view, front to where the last 2 blocks begin)\n\n"
        + markdown_table(["front engine", "images/s", "of the float32 GEMM peak", "vs keras"], pass_rows)
    )
    write_results(args.out, f"frozen-pass-{size}px-{results['date']}", results, "The frozen pass against the hardware's limit", body)


if __name__ == "__main__":
    main()
