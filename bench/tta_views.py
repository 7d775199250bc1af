"""Which test-time augmentation to score with, chosen without the test split: the linear probe
(C 0.001) on the frozen tower's pooled features (the ablation's base profile's cached passes)
scored with each TTA of siamdog.inference, each compared with `flip` by an exact McNemar test
on the same photos, in two ways:

- valid: the probe fitted on the training photos (as is and mirrored), scored on the valid photos;
- cross-validation: the training photos split in `--folds` stratified folds, each scored by a
  probe fitted on the others, so every training photo is scored once (7 times the valid
  split's photos, for the price of the zoomed views' pass over the training photos).

    python bench/tta_views.py [--folds 5]

Touches train and valid only, so it can set a TTA's parameters (the zoom of `crops`) and the
default TTA. Writes bench/results/tta-views-<date>.json and .md.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.runner import REPO, Bench, data_summary, errors, fit_probe, organized_data  # noqa: E402
from bench.stats import mcnemar  # noqa: E402
from siamdog.config import load_config  # noqa: E402
from siamdog.inference import TTA_VIEWS, ZOOM  # noqa: E402

PROBE_C = 0.001  # the ablation's regularized probe
FIT_VIEWS = len(TTA_VIEWS["flip"])  # the probe fits on the training pass of as is and mirrored


def tta_probabilities(probe, views: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The probe's probabilities for each TTA, from the pooled features of every view that
    `crops` averages (in TTA_VIEWS["crops"]'s order, which begins with the others' views)."""
    per_view = [probe.predict_proba(view) for view in views]
    return {tta: np.mean(per_view[: len(names)], axis=0) for tta, names in TTA_VIEWS.items()}


def scored(probabilities: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    figures = {tta: errors(p, labels) for tta, p in probabilities.items()}
    return {tta: {"views": list(TTA_VIEWS[tta]), "top1_err": round(f["top1_err"], 4),
                  "mcnemar_vs_flip": mcnemar(f["right"], figures["flip"]["right"]) if tta != "flip" else None}
            for tta, f in figures.items()}


def main() -> None:
    from sklearn.model_selection import StratifiedKFold

    from siamdog.models.backbones import build_tower

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-validation on the training split")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    started = time.monotonic()
    bench = Bench(organized_data(Path(args.work)))
    config_file = REPO / "bench" / "configs" / "ablation-base.yaml"
    config = load_config(config_file)
    tower = build_tower(config.backbone, config.weights, config.image_size, config.precision)
    train_views, train_labels = bench.view_inputs(tower, config, "train", "crops", blocks=0)
    train_views, train_labels = [np.asarray(view[0]) for view in train_views], np.asarray(train_labels)
    valid_views, valid_labels = bench.view_inputs(tower, config, "valid", "crops", blocks=0)

    probe = fit_probe(np.stack(train_views[:FIT_VIEWS]), train_labels, PROBE_C)
    valid = scored(tta_probabilities(probe, [np.asarray(view[0]) for view in valid_views]), np.asarray(valid_labels))

    held_out = {tta: np.zeros((len(train_labels), len(bench.classes))) for tta in TTA_VIEWS}
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0).split(train_labels, train_labels)
    for fold, (fit_rows, scored_rows) in enumerate(folds):
        probe = fit_probe(np.stack([view[fit_rows] for view in train_views[:FIT_VIEWS]]), train_labels[fit_rows], PROBE_C)
        for tta, p in tta_probabilities(probe, [view[scored_rows] for view in train_views]).items():
            held_out[tta][scored_rows] = p
        print(f"fold {fold + 1} of {args.folds} done, {(time.monotonic() - started) / 60:.1f} min", flush=True)
    cross_validated = scored(held_out, train_labels)

    results = {**header("tta-views"), "config": str(config_file.relative_to(REPO)), "probe_c": PROBE_C, "zoom": ZOOM,
               "folds": args.folds, **data_summary(bench.data), "valid": valid, "cross_validated_train": cross_validated,
               "total_seconds": round(time.monotonic() - started, 1)}
    def cell(figures: dict) -> str:
        test = figures["mcnemar_vs_flip"]
        against = "" if test is None else f" ({test['only_a_right']} right only with it, {test['only_b_right']} only with flip; p {test['mcnemar_p']})"
        return f"{figures['top1_err']:.4f}{against}"

    rows = [[tta, " + ".join(TTA_VIEWS[tta]), cell(valid[tta]), cell(cross_validated[tta])] for tta in TTA_VIEWS]
    body = (f"The linear probe (C {PROBE_C}) on the pooled features of `{results['config']}`'s cached passes, fitted on "
            f"the training photos as is and mirrored; zoom {ZOOM}. Valid: fitted on all {results['train_images']} training "
            f"photos, scored on the {results['valid_images']} valid photos. Cross-validated: each of {args.folds} stratified "
            f"folds of the training photos scored by a probe fitted on the others. p: exact McNemar against flip on the same "
            f"photos. Total {results['total_seconds'] / 60:.1f} min.\n\n"
            + markdown_table(["tta", "views", "valid top-1 err", "cross-validated train top-1 err"], rows) + "\n")
    write_results(args.out, f"tta-views-{results['date']}", results, "siamdog TTA without the test split", body)


if __name__ == "__main__":
    main()
