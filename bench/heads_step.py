"""Training-step time of the multi-loss heads on cached pooled features, with every batch-wide
loss output built and with none (what a model whose stages weigh none of them now has).

    python bench/heads_step.py

Xception's pooled features (2048), 120 classes, batch 32, 300 timed `train_on_batch` steps
after 20 warm-up ones; prints milliseconds per step.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from siamdog.data.pairing import pair_targets  # noqa: E402
from siamdog.models.backbones import build_tower  # noqa: E402
from siamdog.models.siamese import BATCH_OUTPUTS, build_model, heads_of  # noqa: E402
from siamdog.training.stages import compile_stage  # noqa: E402


def main() -> None:
    tower = build_tower("xception", "none", 71)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2048)).astype("float32")
    y = np.eye(120, dtype="float32")[rng.integers(0, 120, 32)]
    partner = np.roll(np.arange(32), -1).astype("int32")
    same = (y.argmax(1) == y[partner].argmax(1)).astype("float32")
    for outputs in (BATCH_OUTPUTS, ()):
        model = heads_of(build_model("multiloss", tower, 120, batch_outputs=outputs)).training
        compile_stage(model, keras.optimizers.Nadam(1e-3), binary_loss_weight=0.5)
        targets = pair_targets(y, partner, same, model.output_names)
        for _ in range(20):
            model.train_on_batch([x, partner], targets)
        start = time.perf_counter()
        for _ in range(300):
            model.train_on_batch([x, partner], targets)
        print(f"batch outputs {', '.join(outputs) or 'none'}: {(time.perf_counter() - start) / 300 * 1000:.2f} ms per step")


if __name__ == "__main__":
    main()
