"""Whether the frozen tower should normalize with the dog photos' own statistics (AdaBN): the
linear probe on the pooled features of the ImageNet Xception as it is, against the same tower
after every BatchNorm layer's moving statistics were re-estimated on upscaled training photos.

    python bench/batchnorm_adaptation.py --batches 60

The photos are 90x90 px enlarged to 299 px: blurrier than ImageNet's, so the activations of
every layer have other statistics than the ones the tower normalizes with. AdaBN (Li et al.,
"Revisiting Batch Normalization For Practical Domain Adaptation", 2016) replaces them with the
target domain's, here the mean over --batches shuffled batches of training photos as they are
(siamdog.models.backbones.calibrate_batchnorm), no weight trained. On bench/runner.py's split
of dogs120 (`bench/configs/ablation-base.yaml`: the float32 Keras front), each tower's probe
(bench.runner.fit_probe; training photos as is) has its C chosen on the valid split (flip TTA)
among --c, is scored on the test split with flip TTA, and the two are compared by an exact
McNemar test on the same photos. The adapted tower's passes are cached as any other (their
name holds its statistics), the ImageNet tower's are the pooling bench's. Writes
bench/results/batchnorm-adaptation-<date>.json and .md.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.probe_inputs import chosen_on_valid, flip_probabilities  # noqa: E402
from bench.runner import REPO, Bench, data_summary, errors, organized_data  # noqa: E402
from bench.stats import mcnemar  # noqa: E402
from siamdog.config import load_config  # noqa: E402
from siamdog.inference import TTA_VIEWS  # noqa: E402


def adapted_tower(bench: Bench, config, batches: int):
    """The config's tower with every BatchNorm's statistics re-estimated on `batches` shuffled
    batches of training photos."""
    from tqdm import tqdm

    from siamdog.data.batches import DirectoryBatches
    from siamdog.models.backbones import build_tower, calibrate_batchnorm

    tower = build_tower(config.backbone, config.weights, config.image_size, config.precision)
    photos = DirectoryBatches(bench.data / "train", (config.image_size,) * 2, config.batch_size, seed=config.seed, classes=bench.classes)
    if batches > len(photos):
        raise SystemExit(f"--batches {batches}: the training split has {len(photos)} batches")
    calibrate_batchnorm(tower, tqdm((photos[i][0] for i in range(batches)), total=batches, desc="statistics", unit="batch"))
    return tower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60, help="shuffled training batches the statistics are estimated on")
    parser.add_argument("--c", type=float, nargs="+", default=[0.0003, 0.001, 0.003, 0.01], help="scikit-learn's C values valid chooses among")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    from siamdog.models.backbones import build_tower

    bench = Bench(organized_data(Path(args.work)))
    config = load_config(REPO / "bench" / "configs" / "ablation-base.yaml")
    results = {**header("batchnorm adaptation"), **data_summary(bench.data), "batches": args.batches,
               "batch_size": config.batch_size, "c_grid": args.c, "variants": {}}
    started = time.monotonic()
    towers = {"ImageNet statistics": lambda: build_tower(config.backbone, config.weights, config.image_size, config.precision),
              "adapted statistics": lambda: adapted_tower(bench, config, args.batches)}
    right = {}
    for name, make in towers.items():
        tower_started = time.monotonic()
        tower = make()
        pooled = {split: tuple(np.asarray(a) for a in bench.inputs(tower, config, split, TTA_VIEWS["none" if split == "train" else "flip"], blocks=0))
                  for split in ("train", "valid", "test")}
        c, probe, valid_err = chosen_on_valid(pooled["train"], pooled["valid"], args.c)
        measured = errors(flip_probabilities(probe, pooled["test"][0]), pooled["test"][1])
        right[name] = measured["right"]
        results["variants"][name] = {"c": c, "valid_top1_err_by_c": valid_err, "test_top1_err": round(measured["top1_err"], 4),
                                     "test_top5_err": round(measured["top5_err"], 4), "seconds": round(time.monotonic() - tower_started, 1)}
        print(name, results["variants"][name], flush=True)
    results["variants"]["adapted statistics"]["against_imagenet"] = mcnemar(right["adapted statistics"], right["ImageNet statistics"])
    results["total_seconds"] = round(time.monotonic() - started, 1)
    rows = [[name, v["c"], v["valid_top1_err_by_c"][str(v["c"])], f"{v['test_top1_err']:.4f}", f"{v['test_top5_err']:.4f}",
             v.get("against_imagenet", {}).get("mcnemar_p", "-")] for name, v in results["variants"].items()]
    body = (f"Linear probe on the frozen Xception's pooled features at {config.image_size} px, {results['train_images']} training "
            f"(as is), {results['valid_images']} valid and {results['test_images']} test photos of dogs120 (90x90 px, upscaled), flip TTA; "
            f"C chosen on valid among {', '.join(map(str, args.c))}. Adapted: every BatchNorm's moving statistics the mean over "
            f"{args.batches} shuffled batches of {config.batch_size} training photos. {results['total_seconds']} s in all "
            "(passes kept by an earlier run are read, not recomputed).\n\n"
            + markdown_table(["BatchNorm statistics", "C", "valid top-1 err", "test top-1 err", "test top-5 err", "McNemar p vs ImageNet's"], rows))
    write_results(args.out, f"batchnorm-adaptation-{results['date']}", results, "ImageNet's BatchNorm statistics or the dog photos' own", body)


if __name__ == "__main__":
    main()
