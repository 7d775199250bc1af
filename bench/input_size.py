"""Where input size stops helping: a linear probe on the frozen ImageNet Xception at several sizes.

    python bench/input_size.py --sizes 299 400

On a seeded, stratified subset of ../shared/data/dogs120 (30 training and 10 held-out photos
per breed; the photos are 90x90 px, so every size is an upscale), the pooled features of the
frozen tower at each size train a logistic regression, scored on the held-out photos; each
size is compared with the first by an exact McNemar test on the same photos, and so is the
probe on the features of all sizes side by side. Features are kept in --work, so a rerun
only refits. Writes bench/results/input-size-<date>.json and .md.
"""

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.runner import REPO, SHARED  # noqa: E402
from bench.stats import mcnemar  # noqa: E402

TRAIN_PER_BREED, HELD_OUT_PER_BREED = 30, 10


def subset(dogs: Path) -> tuple[list, list]:
    """(id, breed index) of the training and held-out photos, seeded and stratified."""
    with open(dogs / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    breeds = sorted({r["breed"] for r in rows})
    rng = np.random.default_rng(0)
    train, held_out = [], []
    for index, breed in enumerate(breeds):
        ids = sorted(r["id"] for r in rows if r["breed"] == breed)
        order = rng.permutation(len(ids))
        train += [(ids[k], index) for k in order[:TRAIN_PER_BREED]]
        held_out += [(ids[k], index) for k in order[TRAIN_PER_BREED : TRAIN_PER_BREED + HELD_OUT_PER_BREED]]
    return train, held_out


def pooled_features(dogs: Path, items: list, size: int, cache: Path, precision: str = "float32", load=None) -> np.ndarray:
    """The frozen tower's pooled features of `items`, kept in `cache`; `load(path, (h, w))`
    reads a photo at the input size (default: siamdog's loader)."""
    from siamdog.data.images import load_image
    from siamdog.models.backbones import build_tower

    if cache.is_file():
        return np.load(cache)
    load = load or load_image
    tower = build_tower("xception", str(SHARED / "weights" / "xception_imagenet_notop.weights.h5"), size, precision)
    features = np.concatenate([
        np.asarray(tower.predict_on_batch(np.stack([load(dogs / "train" / f"{i}.jpg", (size, size)) for i, _ in items[s : s + 32]]).astype(np.float32)), dtype=np.float32)
        for s in range(0, len(items), 32)
    ])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, features)
    return features


def probe_model(train_x, train_y):
    """A logistic regression on standardized features, fitted."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(train_x, train_y)


def probe(train_x, train_y, test_x) -> np.ndarray:
    return probe_model(train_x, train_y).predict(test_x)


def subset_parser(description: str) -> argparse.ArgumentParser:
    """The options of a benchmark on the subset: where features are kept, where results go."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", default=str(REPO / "build" / "bench" / "input-size"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    return parser


def shared_dogs() -> Path:
    dogs = SHARED / "data" / "dogs120"
    if not (dogs / "labels.csv").is_file():
        raise SystemExit(f"skipped: needs the shared dog photos at {dogs} (not present)")
    return dogs


def main() -> None:
    parser = subset_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[299, 400])
    args = parser.parse_args()
    dogs = shared_dogs()
    train, held_out = subset(dogs)
    train_y, test_y = np.array([y for _, y in train]), np.array([y for _, y in held_out])
    results = {**header("input size"), "train_images": len(train), "held_out_images": len(held_out), "sizes": {}}
    features, predictions = {}, {}
    for size in args.sizes:
        started = time.monotonic()
        features[size] = (pooled_features(dogs, train, size, Path(args.work) / f"train-{size}.npy"),
                          pooled_features(dogs, held_out, size, Path(args.work) / f"held-out-{size}.npy"))
        predictions[size] = probe(features[size][0], train_y, features[size][1])
        results["sizes"][str(size)] = {"top1_err": round(float(np.mean(predictions[size] != test_y)), 4),
                                       "seconds": round(time.monotonic() - started, 1)}
    first = args.sizes[0]
    for size in args.sizes[1:]:
        results["sizes"][str(size)]["against_first"] = mcnemar(predictions[size] == test_y, predictions[first] == test_y)
    if len(args.sizes) > 1:
        together = probe(np.hstack([features[s][0] for s in args.sizes]), train_y, np.hstack([features[s][1] for s in args.sizes]))
        results["all_sizes_concatenated"] = {"top1_err": round(float(np.mean(together != test_y)), 4),
                                             "against_first": mcnemar(together == test_y, predictions[first] == test_y)}
    rows = [[size, f"{v['top1_err']:.4f}", v.get("against_first", {}).get("mcnemar_p", "-"), v["seconds"]] for size, v in results["sizes"].items()]
    if "all_sizes_concatenated" in results:
        c = results["all_sizes_concatenated"]
        rows.append(["+".join(map(str, args.sizes)) + " (features side by side)", f"{c['top1_err']:.4f}", c["against_first"]["mcnemar_p"], "-"])
    body = (f"Linear probe, {len(train)} training and {len(held_out)} held-out photos of dogs120 (90x90 px, upscaled). "
            f"Seconds: this run's time at that size, features and fit (features kept in the work folder by an earlier run are read, not recomputed).\n\n"
            + markdown_table(["input px", "held-out top-1 err", f"McNemar p vs {first} px", "seconds"], rows))
    write_results(args.out, f"input-size-{results['date']}", results, "Linear-probe error against input size", body)


if __name__ == "__main__":
    main()
