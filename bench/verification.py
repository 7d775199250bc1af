"""How well trained runs tell whether two held-out photos show one breed, by each answer of
`siamdog verify --by`: the classifier's agreement, the cosine of the features and, for
multi-loss runs, the same-class head.

    python bench/verification.py --runs RUN [RUN ...] [--work build/bench]

RUN: a trained run folder, such as build/bench/runs/ablation-2026-12-06/ROW-seed0; runs named
ROW-seedN are averaged by ROW. On bench/runner.py's split of dogs120, each run's saved model
reads the test photos once (features and class probabilities, in the run's precision), and
every pair of them of one breed and as many random pairs of two breeds (`verification_pairs`,
as the calibration draws them on the valid photos) are scored by each answer
(`siamdog.similarity.pair_scores`): ROC AUC, and accuracy at the threshold the run chose on the
valid photos. A run trained before every answer was calibrated is calibrated first, on the
valid photos, as its training would now end.
Each run's figures are kept in RUN/scores/verification-test.json while its best.keras is the
file they scored, so a later invocation with more runs scores only the new ones.
Writes bench/results/verification-<date>.json and .md.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, trained_runs, write_results  # noqa: E402
from bench.runner import REPO, data_summary, organized_data  # noqa: E402
from siamdog.data.pairing import ANSWERS  # noqa: E402


def pair_figures(scores: dict[str, np.ndarray], same: np.ndarray, calibration: dict[str, dict]) -> dict[str, dict]:
    """Each answer's figures on the pairs (`same`: 1 for one breed): ROC AUC, and accuracy at
    the threshold its run chose on the valid photos (`calibration`, as verification.json keeps
    it), with that threshold and the valid ROC AUC."""
    return {
        answer: {
            "roc_auc": float(roc_auc_score(same, score)),
            "accuracy": float(np.mean((score >= calibration[answer]["threshold"]) == (same > 0.5))),
            "threshold": calibration[answer]["threshold"],
            "valid_roc_auc": calibration[answer]["roc_auc"],
        }
        for answer, score in scores.items()
    }


def row_means(runs: list[dict]) -> dict:
    """A row's figures: the mean over its runs of each answer's ROC AUC and accuracy."""
    return {
        "runs": len(runs),
        "answers": {
            answer: {key: float(np.mean([f["answers"][answer][key] for f in runs])) for key in ("roc_auc", "accuracy")}
            for answer in runs[0]["answers"]
        },
    }


def answer_cells(figures: dict) -> list[str]:
    """ROC AUC and accuracy of each answer in ANSWERS ("-" where the run has not that answer)."""
    cells = []
    for answer in ANSWERS:
        f = figures["answers"].get(answer)
        cells += [f"{f['roc_auc']:.4f}", f"{f['accuracy']:.4f}"] if f else ["-", "-"]
    return cells


def row_of(run: Path) -> str:
    """The bench row a run folder belongs to (ROW-seedN -> ROW)."""
    return re.sub(r"-seed\d+$", "", run.name)


def score_run(run: Path, data: Path, workers: int) -> dict:
    """The run's figures on the test pairs: kept ones while its best.keras is the file they
    scored, else scored and kept."""
    from siamdog.files import write_json

    kept = run / "scores" / "verification-test.json"
    scored_model = (run / "best.keras").stat().st_mtime_ns
    if kept.is_file():
        figures = json.loads(kept.read_text())
        if figures.pop("best_keras_mtime_ns") == scored_model:
            return figures
    figures = scored_by_model(run, data, workers)
    kept.parent.mkdir(exist_ok=True)
    write_json(str(kept), {**figures, "best_keras_mtime_ns": scored_model})
    return figures


def scored_by_model(run: Path, data: Path, workers: int) -> dict:
    from siamdog.data.pairing import verification_pairs
    from siamdog.evaluate import load_run_model
    from siamdog.similarity import calibrate_on_readings, calibrated_answers, labelled_readings, pair_scores, same_class_head_of

    model, classes, _ = load_run_model(run)
    same_class = same_class_head_of(run, model)
    features, probabilities, labels = labelled_readings(model, data / "test", classes, workers)
    pairs, same = verification_pairs(labels)
    scores = pair_scores(features, probabilities, pairs, same_class)
    if not set(scores) <= set(calibrated_answers(run)):
        calibrate_on_readings(run, *labelled_readings(model, data / "valid", classes, workers), data / "valid", same_class)
    return {
        "run": os.path.relpath(run, REPO),
        "row": row_of(run),
        "pairs": len(same),
        "same_class_pairs": int(same.sum()),
        "answers": pair_figures(scores, same, calibrated_answers(run)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run folders (ROW-seedN are averaged by ROW)")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--workers", type=int, default=2, help="loader threads")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    runs = trained_runs(parser, args.runs)

    data = organized_data(Path(args.work))
    per_run = [score_run(run, data, args.workers) for run in runs]
    by_row = {}
    for figures in per_run:
        by_row.setdefault(figures["row"], []).append(figures)
    means = {row: row_means(runs_of_row) for row, runs_of_row in by_row.items()}
    results = {**header("verification"), **data_summary(data), "runs": per_run, "rows": means}
    table = [[f"`{f['row']}` ({Path(f['run']).name})", *answer_cells(f)] for f in per_run]
    table += [[f"**`{row}`, mean of {m['runs']}**", *answer_cells(m)] for row, m in means.items()]
    thresholds = [[f"`{Path(f['run']).name}`", *(f"{f['answers'][a]['threshold']:.3f} ({f['answers'][a]['valid_roc_auc']:.4f})"
                                                  if a in f["answers"] else "-" for a in ANSWERS)] for f in per_run]
    body = (
        f"{results['test_images']} test photos, {per_run[0]['pairs']} pairs ({per_run[0]['same_class_pairs']} of one breed, "
        "as many of two, so half right is chance). Each answer of `siamdog verify --by`: its ROC AUC, and its accuracy at "
        "the threshold its run chose on the valid photos.\n\n"
        + markdown_table(["run", *(f"{a} {figure}" for a in ANSWERS for figure in ("ROC AUC", "accuracy"))], table)
        + "\nThe thresholds chosen on the valid photos, and each answer's ROC AUC there:\n\n"
        + markdown_table(["run", *ANSWERS], thresholds)
    )
    write_results(args.out, f"verification-{results['date']}", results, "Same breed or not, on held-out photos", body)


if __name__ == "__main__":
    main()
