"""The size to read the photos at when scoring trained runs, chosen without the test split.

    python bench/test_size.py --runs RUN [RUN ...] --sizes 320 340 360 [--tta flip crops]

RUN: trained run folders of one training size, such as
build/bench/runs/ablation-2026-12-06/ROW-seed0. Each run's best model, rebuilt at each size
(`siamdog evaluate --image-size`), is scored on the valid photos with flips, as is the run at
its training size; the size with the lowest mean valid error over the runs is chosen. Then the
test photos are scored at the training size and at the chosen one with each `--tta`, and each
run at the chosen size is compared with itself at its training size by an exact McNemar test
on the same photos.

Why a size other than training's: the tower pools its last feature map, so its weights read any
size, and training's zoom augmentation shows it dogs larger than the test photos show them at
the same size (FixRes, Touvron et al. 2019); the `crops` TTA's enlarged centre is the same idea.
Scores are kept beside each run (Bench.score), so a later invocation scores only what is new.
Writes bench/results/test-size-<date>.json and .md.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, trained_runs, write_results  # noqa: E402
from bench.runner import REPO, Bench, compare, data_summary, errors, organized_data, summarize  # noqa: E402
from siamdog.inference import TTA_VIEWS  # noqa: E402

VALID_TTA = "flip"


def chosen_size(valid_errors: dict[int, list[float]]) -> int:
    """The size of the lowest mean valid error over the runs (ties: the smallest, the cheapest)."""
    return min(valid_errors, key=lambda size: (np.mean(valid_errors[size]), size))


def main() -> None:
    from siamdog.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="trained run folders of one training size")
    parser.add_argument("--sizes", nargs="+", type=int, required=True, help="sizes to score the valid photos at, beside the training size")
    parser.add_argument("--tta", nargs="+", default=["flip"], choices=TTA_VIEWS, help="the TTAs to score the test photos with")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    runs = trained_runs(parser, args.runs)
    trained_sizes = {load_config(r / "config.yaml").image_size for r in runs}
    if len(trained_sizes) > 1:
        parser.error(f"the runs trained at different sizes ({sorted(trained_sizes)}); give runs of one")
    trained = trained_sizes.pop()

    bench = Bench(organized_data(Path(args.work)))
    os.chdir(REPO)  # runs name their weights relative to the checkout

    def scored(run: Path, split: str, tta: str, size: int) -> dict:
        """The run at `size` in the form of the ablation's seeds (summarize, compare): its
        errors() on `split`, and the seconds its scoring took (0 if kept before they were)."""
        image_size = None if size == trained else size
        return {"seed": run.name, "test": errors(*bench.score(run, split, tta, image_size)),
                "seconds": bench.scoring_seconds(run, split, tta, image_size) or 0.0}

    sizes = sorted({trained, *args.sizes})
    valid = {size: [scored(run, "valid", VALID_TTA, size)["test"]["top1_err"] for run in runs] for size in sizes}
    size = chosen_size(valid)
    test = {}
    for tta in args.tta:
        at_training = [scored(run, "test", tta, trained) for run in runs]
        at_chosen = [scored(run, "test", tta, size) for run in runs]
        chosen = summarize(at_chosen, 0.0)
        del chosen["minutes"]  # the scoring's alone here, which scoring_seconds gives per run
        test[tta] = {
            "training_size_top1_err": round(float(np.mean([s["test"]["top1_err"] for s in at_training])), 4),
            "chosen_size": {**chosen, "scoring_seconds": [round(s["seconds"], 1) for s in at_chosen]},
            **compare(at_chosen, at_training),
        }

    results = {**header("test-size"), **data_summary(bench.data), "runs": [os.path.relpath(r, REPO) for r in runs],
               "training_size": trained, "valid_tta": VALID_TTA, "valid_top1_err": {str(s): e for s, e in valid.items()},
               "chosen_size": size, "test": test}
    valid_rows = [[f"{s} px" + (" (training)" if s == trained else "") + (" **chosen**" if s == size else ""),
                   f"{np.mean(e):.4f}", " ".join(f"{x:.4f}" for x in e)] for s, e in valid.items()]
    test_rows = []
    for tta, t in test.items():
        chosen = t["chosen_size"]
        p_values = ", ".join(f"{m['mcnemar_p']:.3g} ({m['only_a_right']}:{m['only_b_right']})" for m in t["mcnemar"])
        test_rows.append([tta, f"{t['training_size_top1_err']:.4f}", f"{chosen['test_top1_err']:.4f}", " ".join(f"{x:.4f}" for x in chosen["test_top1_err_seeds"]),
                          f"{chosen['test_top1_ci95'][0]:.3f}-{chosen['test_top1_ci95'][1]:.3f}", p_values, t["verdict"],
                          f"{np.mean(chosen['scoring_seconds']):.0f}"])
    body = (
        f"{len(runs)} runs trained at {trained} px. Valid top-1 error ({bench.data.name}, {results['valid_images']} photos, "
        f"`--tta {VALID_TTA}`) by the size the photos are read at:\n\n"
        + markdown_table(["size", "mean", "per run"], valid_rows)
        + f"\nTest top-1 error ({results['test_images']} photos) at {trained} px and at the chosen {size} px; McNemar of each run "
        f"at {size} px against itself at {trained} px (photos only the first gets right : only the second); the seconds that scoring "
        f"the test photos at {size} px took a run:\n\n"
        + markdown_table(["tta", f"{trained} px", f"{size} px", f"{size} px per run", "95 % interval", "McNemar p per run", "verdict", "seconds"], test_rows)
    )
    write_results(args.out, f"test-size-{results['date']}", results, "The size to read the photos at when scoring", body)


if __name__ == "__main__":
    main()
