"""Does training on cached views cost accuracy? The same recipe with and without the cache.

    python bench/cache_accuracy.py        (make bench-cache)

On ../shared/data/dogs120, bench/configs/cache-check.yaml is trained twice on one split: as
is (`feature_cache_views: 2`: the frozen front runs once, stages train on the image and its
mirror) and with `feature_cache_views: 0` (every epoch decodes and augments the images and
runs the whole tower). Both go through `siamdog train` and `tools/evaluate.py`. The two
models' errors on the same valid images are compared with an exact McNemar test (a binomial
test on the images that only one of them gets right). Writes
bench/results/cache-<size>px-<date>.json and .md.
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
from bench.quality import organized_data, trained_variant  # noqa: E402
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
    rows = [
        [name, results[name]["views"], f"{results[name]['top1_err']:.4f}", f"{results[name]['top5_err']:.4f}",
         ", ".join(f"{s} {t:.0f}" for s, t in results[name]["stages"].items()), f"{results[name]['train_seconds']:.0f}"]
        for name in ("cached", "uncached")
    ]
    paired = results["paired"]
    return (
        f"dogs120: {results['train_images']} training and {results['valid_images']} valid images, "
        f"{results['image_size']} px; config `{results['config']}`. Total wall time {results['total_seconds'] / 60:.1f} min.\n\n"
        + markdown_table(["variant", "feature_cache_views", "top-1 err", "top-5 err", "stages (s)", "train s"], rows)
        + f"\nOf the valid images, {paired['only_cached_right']} are right only with the cache and "
        f"{paired['only_uncached_right']} only without it: exact McNemar p = {paired['mcnemar_p']}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "bench" / "configs" / "cache-check.yaml"))
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    config_file = Path(args.config).resolve()
    config = load_config(config_file)
    if not config.feature_cache_views:
        raise SystemExit(f"{config_file}: set feature_cache_views (the cached variant) above 0")
    work = Path(args.work)
    runs = work / "runs" / f"cache-{config.image_size}px-{header('x')['date']}"
    runs.mkdir(parents=True, exist_ok=True)
    log_file = runs / "bench.log"
    started = time.monotonic()
    data = organized_data(work, log_file)
    uncached_file = runs / "uncached.yaml"
    save_config(config_from_dict({**config_to_dict(config), "feature_cache_views": 0}), uncached_file)
    results = {**header("cache accuracy"), "image_size": config.image_size, "config": str(config_file.relative_to(REPO)),
               "train_images": sum(1 for _ in (data / "train").glob("*/*")), "valid_images": sum(1 for _ in (data / "valid").glob("*/*"))}
    stages = config.stage_names()
    for name, file, views in (("cached", config_file, config.feature_cache_views), ("uncached", uncached_file, 0)):
        results[name] = {"views": views, **trained_variant(runs / name, file, data, results["train_images"], stages, name, log_file)}
        print(name, results[name], flush=True)
    results["paired"] = paired_comparison(
        correct_by_image(runs / "cached" / "evaluation-cached"), correct_by_image(runs / "uncached" / "evaluation-uncached")
    )
    results["total_seconds"] = round(time.monotonic() - started, 1)
    write_results(args.out, f"cache-{config.image_size}px-{results['date']}", results,
                  "Cached views against per-epoch augmentation on dogs120", report(results))


if __name__ == "__main__":
    main()
