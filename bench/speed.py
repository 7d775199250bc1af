"""Training throughput on the real dog photos: does the input pipeline hold the model back?

    python bench/speed.py --image-size 299 --batch-size 32      (make bench-speed)

Organizes ../shared/data/dogs120 (labels.csv) into build/bench/dogs120 once, then measures at
the given image size and batch size, for the default recipe's stages:

  loader   the batch source alone (decode, resize, augment, pair) with `--workers` threads,
           as Keras's PyDataset runs it;
  step     one training step (`train_on_batch`) on in-memory random batches, for each stage's
           trainable set: the model alone;
  fit      `model.fit` on the real batch source: the two together.

fit / step near 1 means the input pipeline keeps up with the model. A sample is one image
(with its partner from the same batch, the multi-loss model runs the tower once per image).
The first step of each measurement (tracing, warm-up) is not timed. Also estimates one
inference pass of the frozen tower over the training set from timed batches.
Writes bench/results/speed-<image_size>px-<date>.json and .md.
"""

import argparse
import dataclasses
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import header, markdown_table, peak_rss_mb, write_results  # noqa: E402
from bench.runner import organized_data  # noqa: E402
from siamdog.config import TrainConfig  # noqa: E402
from siamdog.data.augment import Augmentation  # noqa: E402
from siamdog.data.batches import DirectoryBatches, PairedBatches  # noqa: E402
from siamdog.data.pairing import batch_partners, pair_targets, same_class  # noqa: E402
from siamdog.models.backbones import build_tower, unfreeze_last_blocks  # noqa: E402
from siamdog.models.siamese import build_model  # noqa: E402
from siamdog.training.stages import compile_stage, make_optimizer  # noqa: E402

SHARED = REPO.parent / "shared"


class BatchTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def loader_rate(paired: PairedBatches, batches: int, workers: int) -> float:
    """Samples per second of the pair sampler over its batch source, `workers` batches at a time."""
    paired[0]  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        samples = sum(len(x) for (x, _), _ in pool.map(paired.__getitem__, range(1, batches + 1)))
    return samples / (time.perf_counter() - started)


def step_rate(model: keras.Model, batch_size: int, size: int, classes: int, steps: int) -> float:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    labels = rng.integers(0, classes, batch_size)
    partner = batch_partners(labels, positives=False).astype("int32")
    y = keras.utils.to_categorical(labels, classes)
    targets = pair_targets(y, partner, same_class(labels, labels[partner]), model.output_names)
    model.train_on_batch([x, partner], targets)  # traces the step
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch([x, partner], targets)
    return steps * batch_size / (time.perf_counter() - started)


def fit_rate(model: keras.Model, data: PairedBatches, batch_size: int, steps: int) -> float:
    times = BatchTimes()
    model.fit(data, epochs=1, steps_per_epoch=steps + 1, callbacks=[times], verbose=0)
    return steps * batch_size / (times.ends[-1] - times.ends[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "xception_imagenet_notop.weights.h5"))
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    data = organized_data(Path(args.work))
    recipe = TrainConfig()
    size, batch = (args.image_size, args.image_size), args.batch_size
    results = {**header("speed"), "image_size": args.image_size, "batch_size": batch, "workers": args.workers,
               "backend": keras.backend.backend(), "sample": "one image (and its partner in the batch, multi-loss model)"}
    augmentation = Augmentation(**dataclasses.asdict(recipe.augment))

    tower = build_tower("xception", args.weights, args.image_size)
    train_batches = DirectoryBatches(data / "train", size, batch, augmentation=augmentation)
    model = build_model("multiloss", tower, train_batches.num_classes).training

    tower.predict_on_batch(train_batches[0][0])  # traces
    images = [train_batches[i][0] for i in range(1, 4)]
    timed = sum(len(x) for x in images)
    started = time.perf_counter()
    for x in images:
        tower.predict_on_batch(x)
    per_image = (time.perf_counter() - started) / timed
    speed = {"inference_img_s": round(1 / per_image, 2),
             "inference_pass_seconds_estimated": round(per_image * train_batches.samples, 1),
             "train_images": train_batches.samples, "stages": {}}

    for stage in recipe.stages:
        batches = DirectoryBatches(data / "train", size, batch, augmentation=augmentation if stage.augment else None)
        paired = PairedBatches(batches, recipe.pair_every, workers=args.workers, outputs=model.output_names)
        unfreeze_last_blocks(tower, "xception", stage.trainable_blocks)
        compile_stage(model, make_optimizer(stage.optimizer, stage.learning_rate, stage.momentum), **stage.loss_weights())
        loader = loader_rate(paired, args.loader_batches, args.workers)
        step = step_rate(model, batch, args.image_size, batches.num_classes, args.steps)
        fit = fit_rate(model, paired, batch, args.steps)
        speed["stages"][stage.name] = {
            "trainable_blocks": stage.trainable_blocks,
            "augment": stage.augment,
            "loader_img_s": round(loader, 2),
            "step_img_s": round(step, 2),
            "fit_img_s": round(fit, 2),
            "fit_over_step": round(fit / step, 3),
        }
        print(stage.name, speed["stages"][stage.name], flush=True)
    speed["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["speed"] = speed

    rows = [
        [name, s["trainable_blocks"], "on" if s["augment"] else "off", s["loader_img_s"], s["step_img_s"], s["fit_img_s"], s["fit_over_step"]]
        for name, s in speed["stages"].items()
    ]
    body = (
        f"Backend: {results['backend']}; loader workers: {args.workers}\n\n"
        "Images per second (multi-loss model; each image is paired with one of its batch).\n\n"
        + markdown_table(["stage", "trainable blocks", "augmentation", "loader", "step (model alone)", "fit", "fit / step"], rows)
        + f"\nFrozen tower, inference: {speed['inference_img_s']} images/s, so one pass over the "
        f"{speed['train_images']} training images takes about {speed['inference_pass_seconds_estimated']} s "
        f"(estimated from {timed} timed images). Peak RSS {speed['peak_rss_mb']} MB.\n"
    )
    title = f"Training throughput at {args.image_size} px, batch {batch}"
    write_results(args.out, f"speed-{args.image_size}px-{results['date']}", results, title, body)

if __name__ == "__main__":
    main()
