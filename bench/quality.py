"""Top-1 error on real dog photos: a linear probe against siamdog's fine-tuned variants.

    python bench/quality.py --profile cpu        (make bench; PROFILE=full for a GPU)

On ../shared/data/dogs120 with ../shared's ImageNet Xception weights, one split, one image
size and one epoch budget (bench/configs/<profile>.yaml) for every variant:

  linear_probe      pooled features of the frozen tower (from the same cached pass that the
                    training runs read) + scikit-learn's LogisticRegression
  softmax_only      the profile's config with mode softmax: heads, then finetune
  multiloss         the profile's config: heads, then finetune
  multiloss_polish  the same run, then polish (no augmentation)

The training variants go through the public pipeline as a user would: `siamdog organize` (the
labels.csv format), `siamdog train`, `tools/evaluate.py` on the valid split. Each records its
top-1 and top-5 error, the wall time of each stage (state.json: a stage's time includes the
cache pass it had to make), training images per second and peak RSS. The model picked is the
run's best.keras (best val_accuracy so far), as a user would get it.
Writes bench/results/<profile>-<date>.json and .md, with the throughput figures of the
newest bench-speed results at the same image size (make bench runs bench-speed first).
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import top_k_accuracy_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from bench.common import header, markdown_table, peak_rss_mb, today, write_results  # noqa: E402
from siamdog.config import config_from_dict, config_to_dict, load_config, save_config  # noqa: E402

SHARED = REPO.parent / "shared"
VARIANTS = ("linear_probe", "softmax_only", "multiloss", "multiloss_polish")


def run_measured(command: list[str], log_file: Path) -> tuple[float, float]:
    """Run a command to completion with its output in `log_file`; (wall seconds, peak RSS MB).

    The peak is the child's own VmHWM, read every half second: getrusage's ru_maxrss of a
    child would include the RSS of this process at the fork (Linux keeps the old high-water
    mark across exec).
    """
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    peak_kb = 0
    with open(log_file, "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        while process.poll() is None:
            try:
                with open(f"/proc/{process.pid}/status") as f:
                    peak_kb = max([peak_kb] + [int(line.split()[1]) for line in f if line.startswith("VmHWM:")])
            except OSError:
                pass
            time.sleep(0.5)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}; see {log_file}")
    return seconds, peak_kb / 1024


def organized_data(work: Path, log_file: Path) -> Path:
    dogs = SHARED / "data" / "dogs120"
    if not (dogs / "labels.csv").is_file():
        raise SystemExit(f"skipped: the quality benchmark needs the shared dog photos at {dogs} (not present)")
    data = work / "dogs120"
    siamdog = [sys.executable, "-m", "siamdog.cli"]
    run_measured([*siamdog, "organize", str(dogs / "train"), str(data), "--labels", str(dogs / "labels.csv"), "--link", "sym"], log_file)
    return data


def workspace(work: Path, name: str) -> tuple[Path, Path, Path]:
    """(runs folder, log file, organized dog photos) of a benchmark named `name` today."""
    runs = work / "runs" / f"{name}-{today()}"
    runs.mkdir(parents=True, exist_ok=True)
    log_file = runs / "bench.log"
    return runs, log_file, organized_data(work, log_file)


def data_summary(data: Path) -> dict:
    train, valid = data / "train", data / "valid"
    return {"train_images": sum(1 for _ in train.glob("*/*")), "valid_images": sum(1 for _ in valid.glob("*/*")),
            "classes": sum(1 for p in train.iterdir() if p.is_dir())}


def describe_data(results: dict) -> str:
    """The first line of a report: the data, the image size, the config and the wall time."""
    return (
        f"dogs120: {results['train_images']} training and {results['valid_images']} valid images, "
        f"{results['classes']} breeds, {results['image_size']} px; config `{results['config']}`. "
        f"Total wall time {results['total_seconds'] / 60:.1f} min.\n"
    )


def linear_probe(config, data: Path) -> dict:
    """Logistic regression on the frozen tower's pooled features of every cached view."""
    from siamdog.data.augment import Augmentation
    from siamdog.data.batches import DirectoryBatches, list_classes
    from siamdog.models.backbones import build_tower
    from siamdog.training.feature_cache import stage_inputs

    started = time.monotonic()
    classes = list_classes(data / "train")
    size = (config.image_size, config.image_size)
    tower = build_tower(config.backbone, config.weights, config.image_size)
    front_blocks = max(s.trainable_blocks for s in config.stages)
    augmentation = Augmentation(**dataclasses.asdict(config.augment))

    def pooled(split, views):
        batches = DirectoryBatches(data / split, size, config.batch_size, shuffle=False, classes=classes)
        return stage_inputs(tower, config.backbone, front_blocks, 0, batches, views, augmentation, config.seed), batches.classes

    views = max(config.feature_cache_views, 1)
    pass_started = time.monotonic()
    train_x, train_y = pooled("train", views)
    pass_seconds = time.monotonic() - pass_started
    valid_x, valid_y = pooled("valid", 1)
    features_seconds = time.monotonic() - started
    fit_started = time.monotonic()
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    probe.fit(np.asarray(train_x).reshape(-1, train_x.shape[-1]), np.tile(train_y, views))
    fit_seconds = time.monotonic() - fit_started
    probabilities = probe.predict_proba(np.asarray(valid_x[0]))
    everything = np.arange(len(classes))
    return {
        "top1_err": round(1 - top_k_accuracy_score(valid_y, probabilities, k=1, labels=everything), 4),
        "top5_err": round(1 - top_k_accuracy_score(valid_y, probabilities, k=5, labels=everything), 4),
        "train_seconds": round(features_seconds + fit_seconds, 1),
        "stages": {"features": round(features_seconds, 1), "fit": round(fit_seconds, 1)},
        "train_img_s": round(len(train_y) * views / (features_seconds + fit_seconds), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "views": views,
        # One pass of the frozen tower over the training set: the cached pass, per view
        # (0 if this run found the cache already made).
        "inference_pass_seconds": round(pass_seconds / views, 1),
    }


def trained_variant(run: Path, config_file: Path, data: Path, train_images: int, stages: list[str], name: str, log_file: Path) -> dict:
    """Train `stages` of a run (resuming after those already done), then evaluate its best.keras."""
    siamdog = [sys.executable, "-m", "siamdog.cli"]
    command = [*siamdog, "train", "--data", str(data), "--run", str(run), "--config", str(config_file), "--stages", ",".join(stages)]
    wall, train_rss = run_measured(command, log_file)
    out = run / f"evaluation-{name}"
    _, eval_rss = run_measured([sys.executable, "tools/evaluate.py", "--model", str(run), "--data", str(data / "valid"), "--out", str(out)], log_file)
    metrics = json.loads((out / "metrics.json").read_text())
    state = json.loads((run / "state.json").read_text())
    done = state["completed"]
    seconds = sum(s["seconds"] for s in done.values())
    epochs = sum(s["epochs_run_now"] for s in done.values())
    return {
        "top1_err": round(metrics["top1_error"], 4),
        "top5_err": round(metrics["top5_error"], 4),
        "train_seconds": round(seconds, 1),
        "stages": {s: v["seconds"] for s, v in done.items()},
        "epochs": {s: v["epochs_run_now"] for s, v in done.items()},
        "train_img_s": round(train_images * epochs / seconds, 2),
        "peak_rss_mb": round(max(train_rss, eval_rss), 1),
        "best": state["best"],
        "valid_images": metrics["count"],
        "command": " ".join(command),
        "process_seconds": round(wall, 1),
    }


def newest_speed(out_dir: Path, image_size: int) -> dict | None:
    found = sorted(out_dir.glob(f"speed-{image_size}px-*.json"))
    if not found:
        return None
    speed = json.loads(found[-1].read_text())
    heads = speed["speed"]["stages"]["heads"]
    return {"loader_img_s": heads["loader_img_s"], "step_img_s": heads["step_img_s"], "fit_img_s": heads["fit_img_s"],
            "stages": speed["speed"]["stages"], "source": found[-1].name, "source_command": speed["command"]}


def report(results: dict) -> str:
    rows = []
    for name in VARIANTS:
        v = results.get(name)
        if v is None:
            continue
        stages = ", ".join(f"{s} {t:.0f}" for s, t in v["stages"].items())
        rows.append([name, f"{v['top1_err']:.4f}", f"{v['top5_err']:.4f}", f"{v['train_seconds']:.0f}", stages, v["train_img_s"], v["peak_rss_mb"]])
    speed = results["speed"]
    lines = [
        describe_data(results),
        markdown_table(["variant", "top-1 err", "top-5 err", "train s", "stages (s)", "train img/s", "peak RSS MB"], rows),
        f"\nOne pass of the frozen tower over the training set: {speed['inference_pass_seconds']} s "
        f"(the cached pass, per view). Peak RSS {speed['peak_rss_mb']} MB.",
    ]
    if speed.get("loader_img_s") is not None:
        lines.append(
            f"Throughput of the uncached heads stage (from {speed['source']}, `{speed['source_command']}`): "
            f"loader {speed['loader_img_s']}, step {speed['step_img_s']}, fit {speed['fit_img_s']} images/s."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="bench/configs/<profile>.yaml (default: cpu)")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    config_file = REPO / "bench" / "configs" / f"{args.profile}.yaml"
    config = load_config(config_file)
    started = time.monotonic()
    runs, log_file, data = workspace(Path(args.work), args.profile)
    results = {**header("quality"), "profile": args.profile, "image_size": config.image_size,
               "config": str(config_file.relative_to(REPO)), **data_summary(data)}

    results["linear_probe"] = linear_probe(config, data)
    print("linear_probe", results["linear_probe"], flush=True)

    softmax_file = runs / "softmax.yaml"
    softmax = config_to_dict(config)
    softmax["mode"] = "softmax"
    softmax["stages"] = [s for s in softmax["stages"] if s["name"] != "polish"]
    save_config(config_from_dict(softmax), softmax_file)
    multiloss_stages = [s.name for s in config.stages if s.name != "polish"]
    results["softmax_only"] = trained_variant(runs / "softmax_only", softmax_file, data, results["train_images"], multiloss_stages, "softmax_only", log_file)
    print("softmax_only", results["softmax_only"], flush=True)
    results["multiloss"] = trained_variant(runs / "multiloss", config_file, data, results["train_images"], multiloss_stages, "multiloss", log_file)
    print("multiloss", results["multiloss"], flush=True)
    if "polish" in config.stage_names():
        results["multiloss_polish"] = trained_variant(runs / "multiloss", config_file, data, results["train_images"], ["polish"], "multiloss_polish", log_file)
        print("multiloss_polish", results["multiloss_polish"], flush=True)

    results["total_seconds"] = round(time.monotonic() - started, 1)
    speed = {"inference_pass_seconds": results["linear_probe"]["inference_pass_seconds"],
             "peak_rss_mb": max(v["peak_rss_mb"] for k, v in results.items() if k in VARIANTS)}
    measured = newest_speed(Path(args.out), config.image_size)
    speed.update(measured or {"loader_img_s": None, "step_img_s": None, "fit_img_s": None})
    results["speed"] = speed
    title = f"siamdog vs a linear probe on dogs120, profile {args.profile}"
    write_results(args.out, f"{args.profile}-{results['date']}", results, title, report(results))


if __name__ == "__main__":
    main()
