"""What the calibration of `siamdog verify`'s answers costs at the end of a run: the valid
photos read through the whole tower (`calibrate_verification`, what every run did before
2026-12-04) against the trainer's calibration of a cached run, on its cached valid pass.

    python bench/calibration.py [--profile cpu]

On bench/runner.py's split of dogs120, with the profile's model at its ImageNet start (the
answers' figures do not change what the calibration costs). The run folder holds that model as
its best and a state.json of finished stages without the calibration, as a run stopped while
calibrating leaves it, so `siamdog train` on it does only what ends every run. The valid pass
the stages would have cached is made first if missing, and timed apart.
Writes bench/results/calibration-<date>.json and .md.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.runner import REPO, Bench, data_summary, organized_data  # noqa: E402
from siamdog.config import load_config  # noqa: E402


def finished_but_calibration(run: Path, config, model, classes: list[str]) -> None:
    """`run` as a run of `config` stopped while calibrating: `model` saved as its best."""
    from siamdog.config import save_config
    from siamdog.training.run_folder import RunPaths

    paths = RunPaths(run)
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    save_config(config, paths.config)
    paths.classes.write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    model.image_classifier.save(paths.best_model)
    model.embedder.save(paths.best_embedder)
    if model.same_class is not None:
        model.same_class.save(paths.best_same_class)
    completed = {stage.name: {"epochs_run_now": 0, "seconds": 0.0, "best_val_accuracy": 0.0} for stage in config.stages}
    paths.state.write_text(json.dumps({"completed": completed}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="bench/configs/<profile>.yaml, a profile whose every stage trains on the feature cache")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    from siamdog.similarity import calibrate_verification
    from siamdog.training.trainer import every_stage_on_cache, new_model, train

    os.chdir(REPO)  # the profiles name the weights relative to the checkout
    config = load_config(REPO / "bench" / "configs" / f"{args.profile}.yaml")
    if not every_stage_on_cache(config):
        parser.error(f"{args.profile}: needs every stage on the feature cache "
                     "(feature_cache_views, no stage that trains every block): a run that calibrates on its cache")
    bench = Bench(organized_data(Path(args.work)))
    model = new_model(config, len(bench.classes))
    started = time.monotonic()
    bench.inputs(model.tower, config, "valid", 1)
    pass_seconds = time.monotonic() - started
    run = Path(args.work) / "runs" / f"calibration-{args.profile}"
    finished_but_calibration(run, config, model, bench.classes)
    started = time.monotonic()
    photos = calibrate_verification(run, bench.data / "valid")
    photos_seconds = time.monotonic() - started
    state = train(bench.data, run, config, verbose=0)
    cached = json.loads((run / "verification.json").read_text())

    results = {
        **header("calibration"),
        **data_summary(bench.data),
        "profile": args.profile,
        "image_size": config.image_size,
        "valid_pass_seconds": round(pass_seconds, 1),
        "from_photos": {"seconds": round(photos_seconds, 1), **photos},
        "on_cached_pass": {"seconds": state["verification_seconds"], **cached},
    }
    rows = [
        [source, f"{seconds:.1f}", *(f"{f['roc_auc']:.5f} ({f['threshold']:.4f})" for f in figures["answers"].values())]
        for source, seconds, figures in (("the valid photos through the tower (calibrate_verification)", photos_seconds, photos),
                                         ("the cached valid pass (the trainer)", state["verification_seconds"], cached))
    ]
    body = (
        f"{results['valid_images']} valid photos at {config.image_size} px, {cached['pairs']} pairs, the `{args.profile}` profile's model at its "
        f"ImageNet start. The valid pass itself (made by the stages of a real run): {pass_seconds:.1f} s here.\n\n"
        + markdown_table(["calibration on", "seconds", *(f"{answer} ROC AUC (threshold)" for answer in cached["answers"])], rows)
    )
    write_results(args.out, f"calibration-{results['date']}", results, "The calibration of siamdog verify's answers", body)


if __name__ == "__main__":
    main()
