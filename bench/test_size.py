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
from bench.runner import REPO, Bench, data_summary, errors, organized_data  # noqa: E402
from bench.stats import error_interval, mcnemar, verdict  # noqa: E402
from siamdog.inference import TTA_VIEWS  # noqa: E402

VALID_TTA = "flip"


def chosen_size(valid_errors: dict[int, list[float]]) -> int:
    """The size of the lowest mean valid error over the runs (ties: the smallest, the cheapest)."""
    return min(valid_errors, key=lambda size: (np.mean(valid_errors[size]), size))


def compared(at_chosen: list[dict], at_training: list[dict]) -> dict:
    """Each run at the chosen size against itself at the training size (errors() of each)."""
    tests = [mcnemar(a["right"], b["right"]) for a, b in zip(at_chosen, at_training)]
    return {"mcnemar": tests, "verdict": verdict(tests)}


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

    def scored(run: Path, split: str, tta: str, size: int) -> tuple[dict, float | None]:
        """errors() of the run at `size`, and the seconds the scoring took."""
        image_size = None if size == trained else size
        probabilities, labels = bench.score(run, split, tta, image_size)
        return errors(probabilities, labels), bench.scoring_seconds(run, split, tta, image_size)

    sizes = sorted({trained, *args.sizes})
    valid = {size: [scored(run, "valid", VALID_TTA, size)[0]["top1_err"] for run in runs] for size in sizes}
    size = chosen_size(valid)
    test = {}
    for tta in args.tta:
        at_training = [scored(run, "test", tta, trained)[0] for run in runs]
        at_chosen, seconds = zip(*(scored(run, "test", tta, size) for run in runs))
        test[tta] = {
            "training_size": {"top1_err": float(np.mean([f["top1_err"] for f in at_training])),
                              "top1_err_seeds": [round(f["top1_err"], 4) for f in at_training]},
            "chosen_size": {"top1_err": float(np.mean([f["top1_err"] for f in at_chosen])),
                            "top1_err_seeds": [round(f["top1_err"], 4) for f in at_chosen],
                            "top5_err": float(np.mean([f["top5_err"] for f in at_chosen])),
                            "interval": error_interval(sum(len(f["right"]) - sum(f["right"]) for f in at_chosen),
                                                       sum(len(f["right"]) for f in at_chosen)),
                            "scoring_seconds": [None if s is None else round(s, 1) for s in seconds]},
            **compared(list(at_chosen), at_training),
        }

    results = {**header("test-size"), **data_summary(bench.data), "runs": [os.path.relpath(r, REPO) for r in runs],
               "training_size": trained, "valid_tta": VALID_TTA, "valid_top1_err": {str(s): e for s, e in valid.items()},
               "chosen_size": size, "test": test}
    valid_rows = [[f"{s} px" + (" (training)" if s == trained else "") + (" **chosen**" if s == size else ""),
                   f"{np.mean(e):.4f}", " ".join(f"{x:.4f}" for x in e)] for s, e in valid.items()]
    test_rows = []
    for tta, t in test.items():
        p_values = ", ".join(f"{m['mcnemar_p']:.3g} ({m['only_a_right']}:{m['only_b_right']})" for m in t["mcnemar"])
        scoring = [s for s in t["chosen_size"]["scoring_seconds"] if s is not None]
        test_rows.append([tta, f"{t['training_size']['top1_err']:.4f}", f"{t['chosen_size']['top1_err']:.4f}",
                          " ".join(f"{x:.4f}" for x in t["chosen_size"]["top1_err_seeds"]),
                          f"{t['chosen_size']['interval'][0]:.3f}-{t['chosen_size']['interval'][1]:.3f}", p_values, t["verdict"], f"{np.mean(scoring):.0f}" if scoring else "-"])
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
