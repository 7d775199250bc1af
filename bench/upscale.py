"""How the photos are enlarged to the input size: a linear probe on the frozen features for
each OpenCV interpolation.

    python bench/upscale.py --interpolations linear cubic lanczos

The dogs120 photos are 90x90 px, so every photo the tower sees at 299 px is an upscale, and
size was the biggest lever measured (bench/README.md); this asks whether a sharper upscale
helps too. On bench/input_size.py's seeded subset (30 training and 10 held-out photos per
breed), the pooled features of the frozen tower on photos enlarged with each interpolation
train a logistic regression, scored on the held-out photos enlarged the same way; each is
compared with `linear` (siamdog's default) by an exact McNemar test on the same photos.
Features are kept in --work (`linear`'s are input_size.py's at that size). Writes
bench/results/upscale-<date>.json and .md.
"""

import functools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.input_size import pooled_features, probe, shared_dogs, subset, subset_parser  # noqa: E402
from bench.stats import mcnemar  # noqa: E402

INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4, "nearest": cv2.INTER_NEAREST}


def loader(interpolation: str):
    """A photo reader for pooled_features: siamdog's loader, enlarging with `interpolation`."""
    from siamdog.data.images import load_image

    return functools.partial(load_image, enlarge=INTERPOLATIONS[interpolation])


def main() -> None:
    parser = subset_parser(__doc__.splitlines()[0])
    parser.add_argument("--interpolations", nargs="+", choices=sorted(INTERPOLATIONS), default=["linear", "cubic", "lanczos"])
    parser.add_argument("--size", type=int, default=299)
    args = parser.parse_args()
    if args.interpolations[0] != "linear":
        parser.error("the first interpolation is the one the others are compared with: make it linear (siamdog's)")
    dogs = shared_dogs()
    train, held_out = subset(dogs)
    train_y, test_y = np.array([y for _, y in train]), np.array([y for _, y in held_out])
    results = {**header("upscale"), "size": args.size, "train_images": len(train), "held_out_images": len(held_out), "interpolations": {}}
    right = {}
    for name in args.interpolations:
        started = time.monotonic()
        suffix = "" if name == "linear" else f"-{name}"
        features = [pooled_features(dogs, items, args.size, Path(args.work) / f"{split}-{args.size}{suffix}.npy", load=loader(name))
                    for split, items in (("train", train), ("held-out", held_out))]
        right[name] = probe(features[0], train_y, features[1]) == test_y
        results["interpolations"][name] = {"top1_err": round(float(1 - right[name].mean()), 4), "seconds": round(time.monotonic() - started, 1)}
        if name != "linear":
            results["interpolations"][name]["against_linear"] = mcnemar(right[name], right["linear"])
    rows = [[name, f"{v['top1_err']:.4f}", v.get("against_linear", {}).get("mcnemar_p", "-"), v["seconds"]] for name, v in results["interpolations"].items()]
    body = (f"Linear probe, {len(train)} training and {len(held_out)} held-out photos of dogs120 (90x90 px), enlarged to {args.size} px. "
            "Seconds: this run's time for that interpolation, features and fit (features kept in the work folder by an earlier run are read, not recomputed).\n\n"
            + markdown_table(["interpolation", "held-out top-1 err", "McNemar p vs linear", "seconds"], rows))
    write_results(args.out, f"upscale-{results['date']}", results, "Linear-probe error against the upscale's interpolation", body)


if __name__ == "__main__":
    main()
