"""Does training on cached views cost accuracy? The same recipe with and without the cache.

    python bench/cache_accuracy.py        (make bench-cache)

On ../shared/data/dogs120, bench/configs/cache-check.yaml is trained on one split with
`feature_cache_views: 0` (every epoch decodes and augments the images and runs the whole
tower) and with each of `--views` cached views (the frozen front runs once; view 0 is the
image as is, view 1 its mirror, more are seeded augmentations). All go through `siamdog
train` and `tools/evaluate.py`. Each cached model's errors on the valid images are compared
with the uncached model's by an exact McNemar test (a binomial test on the images that only
one of the two gets right). Writes bench/results/cache-<size>px-<date>.json and .md.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scipy.stats import binomtest  # noqa: E402

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.quality import data_summary, describe_data, trained_variant, workspace  # noqa: E402
from siamdog.config import config_from_dict, config_to_dict, load_config, save_config  # noqa: E402


def correct_by_image(evaluation: Path) -> dict[str, bool]:
    with open(evaluation / "predictions.csv", newline="", encoding="utf-8") as f:
        return {row["image"]: row["correct"] == "1" for row in csv.DictReader(f)}


def paired_comparison(cached: dict[str, bool], uncached: dict[str, bool]) -> dict:
    """Images that only one model gets right, and the exact McNemar p-value of that split."""
    if cached.keys() != uncached.keys():
        raise SystemExit("the two evaluations scored different images")
    only_cached = sum(cached[k] and not uncached[k] for k in cached)
    only_uncached = sum(uncached[k] and not cached[k] for k in cached)
    discordant = only_cached + only_uncached
    p_value = binomtest(only_cached, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_cached_right": only_cached, "only_uncached_right": only_uncached, "mcnemar_p": round(float(p_value), 4)}


def report(results: dict) -> str:
    names = results["variants"]
    rows = [
        [name, results[name]["views"], f"{results[name]['top1_err']:.4f}", f"{results[name]['top5_err']:.4f}",
         ", ".join(f"{s} {t:.0f}" for s, t in results[name]["stages"].items()), f"{results[name]['train_seconds']:.0f}"]
        for name in names
    ]
    lines = [
        describe_data(results),
        markdown_table(["variant", "feature_cache_views", "top-1 err", "top-5 err", "stages (s)", "train s"], rows),
    ]
    for name in names[1:]:
        paired = results[name]["against_uncached"]
        lines.append(
            f"{name}: of the valid images, {paired['only_cached_right']} are right only with this cache and "
            f"{paired['only_uncached_right']} only without a cache (exact McNemar p = {paired['mcnemar_p']})."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "bench" / "configs" / "cache-check.yaml"))
    parser.add_argument("--views", type=int, nargs="+", default=[2, 1], help="cached views to compare (default: 2 1)")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    if min(args.views) < 1:
        raise SystemExit("--views: numbers of cached views, each at least 1 (the uncached run is always made)")

    config_file = Path(args.config).resolve()
    config = load_config(config_file)
    started = time.monotonic()
    runs, log_file, data = workspace(Path(args.work), f"cache-{config.image_size}px")
    results = {**header("cache accuracy"), "image_size": config.image_size, "config": str(config_file.relative_to(REPO)),
               **data_summary(data), "variants": ["uncached"] + [f"cached_{views}" for views in args.views]}
    for name, views in zip(results["variants"], [0, *args.views]):
        variant_file = runs / f"{name}.yaml"
        save_config(config_from_dict({**config_to_dict(config), "feature_cache_views": views}), variant_file)
        results[name] = {"views": views, **trained_variant(runs / name, variant_file, data, results["train_images"], config.stage_names(), name, log_file)}
        if views:
            results[name]["against_uncached"] = paired_comparison(
                correct_by_image(runs / name / f"evaluation-{name}"), correct_by_image(runs / "uncached" / "evaluation-uncached")
            )
        print(name, results[name], flush=True)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    write_results(args.out, f"cache-{config.image_size}px-{results['date']}", results,
                  "Cached views against per-epoch augmentation on dogs120", report(results))


if __name__ == "__main__":
    main()
