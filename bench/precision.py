"""What the tower's precision costs on this machine: speed, and accuracy against float32.

    python bench/precision.py --precisions mixed_bfloat16 mixed_float16

On bench/input_size.py's seeded subset of ../shared/data/dogs120 (30 training and 10 held-out
photos per breed, 299 px), a linear probe is fitted on the float32 tower's pooled features of
the training photos, then scored on the held-out photos' features computed by the tower at
each precision (the probe and the photos stay the same, so the test isolates the tower's
arithmetic), with an exact McNemar test against float32 on the same photos. Speed, images/s on a
batch of 32 photos: the tower's forward, and a training step of the whole tower with a softmax
head (every block trainable, BatchNorm frozen, SGD with momentum: the step of a fine-tuning
stage that trains every block on images). Features are kept in --work. Writes
bench/results/precision-<date>.json and .md.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import header, images_per_second, markdown_table, write_results  # noqa: E402
from bench.input_size import pooled_features, probe_model, shared_dogs, subset, subset_parser  # noqa: E402
from bench.runner import SHARED  # noqa: E402
from bench.stats import mcnemar  # noqa: E402

SIZE = 299


def training_step(tower, labels: np.ndarray, classes: int):
    """One SGD step of the whole tower and a softmax head on a batch of photos with `labels`, as a function of the batch."""
    import keras

    from siamdog.models.backbones import get_backbone, unfreeze_last_blocks
    from siamdog.models.siamese import build_model

    model = build_model("softmax", tower, classes).training
    unfreeze_last_blocks(tower, "xception", get_backbone("xception").num_blocks)
    model.compile(optimizer=keras.optimizers.SGD(0.003, momentum=0.9), loss="sparse_categorical_crossentropy")
    return lambda batch: model.train_on_batch(batch, labels)


def main() -> None:
    from siamdog.data.images import load_image
    from siamdog.models.backbones import build_tower

    parser = subset_parser(__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["mixed_bfloat16", "mixed_float16"])
    args = parser.parse_args()
    dogs = shared_dogs()
    work = Path(args.work)
    train, held_out = subset(dogs)
    train_y, test_y = np.array([y for _, y in train]), np.array([y for _, y in held_out])
    probe = probe_model(pooled_features(dogs, train, SIZE, work / f"train-{SIZE}.npy"), train_y)
    photos = np.stack([load_image(dogs / "train" / f"{i}.jpg", (SIZE, SIZE)) for i, _ in held_out[:32]]).astype(np.float32)
    photo_labels = test_y[: len(photos)]
    results = {**header("precision"), "train_images": len(train), "held_out_images": len(held_out), "precisions": {}}
    right = {}
    for precision in ["float32", *args.precisions]:
        tower = build_tower("xception", str(SHARED / "weights" / "xception_imagenet_notop.weights.h5"), SIZE, precision)
        rate = images_per_second(tower.predict_on_batch, photos, 1)
        suffix = "" if precision == "float32" else f"-{precision}"
        features = pooled_features(dogs, held_out, SIZE, work / f"held-out-{SIZE}{suffix}.npy", precision)
        right[precision] = probe.predict(features) == test_y
        training_rate = images_per_second(training_step(tower, photo_labels, len(set(train_y))), photos, 2)
        entry = {"images_s": round(rate, 2), "training_step_images_s": round(training_rate, 2), "top1_err": round(float(1 - right[precision].mean()), 4)}
        if precision != "float32":
            entry["against_float32"] = mcnemar(right[precision], right["float32"])
        results["precisions"][precision] = entry
    rows = [[p, v["images_s"], v["training_step_images_s"], f"{v['top1_err']:.4f}", v.get("against_float32", {}).get("mcnemar_p", "-")] for p, v in results["precisions"].items()]
    body = (f"Linear probe fitted on float32 features of {len(train)} photos, scored on {len(held_out)} held-out photos whose "
            f"features each precision computed. Forward and training step (the whole tower and a softmax head, "
            f"BatchNorm frozen, SGD): 32 photos at {SIZE} px.\n\n"
            + markdown_table(["tower precision", "forward images/s", "training step images/s", "held-out top-1 err", "McNemar p vs float32"], rows))
    write_results(args.out, f"precision-{results['date']}", results, "The tower's precision: speed and accuracy", body)


if __name__ == "__main__":
    main()
