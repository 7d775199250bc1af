"""How well trained runs tell whether two held-out photos show one breed: a multi-loss run's
same-class head (what `siamdog verify` answers) against two answers every run gives without it.

    python bench/verification.py --runs RUN [RUN ...] [--work build/bench]

RUN: a trained run folder, such as build/bench/runs/ablation-2026-12-06/ROW-seed0; runs named
ROW-seedN are averaged by ROW. On bench/runner.py's split of dogs120, each run's saved model
reads the test photos once (features and class probabilities, in the run's precision), and
every pair of them of one breed and as many random pairs of two breeds (`verification_pairs`,
as the calibration draws them on the valid photos) are scored by
- the same-class head (multi-loss runs): ROC AUC, and accuracy at the threshold the run chose on
  the valid photos;
- the cosine similarity of the two photos' features (what `siamdog search` ranks by): ROC AUC;
- the classifier's agreement, sum over breeds of p(breed | photo 1) p(breed | photo 2), the
  chance that both are the same breed by the classifier alone: ROC AUC.
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

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.runner import REPO, data_summary, organized_data  # noqa: E402

ANSWERS = ("same-class head", "feature cosine", "classifier agreement")


def baseline_scores(features: np.ndarray, probabilities: np.ndarray, pairs: np.ndarray) -> dict[str, np.ndarray]:
    """Each pair's score by the answers that need no same-class head: the cosine similarity of
    the photos' features and the classifier's agreement (sum of the products of their class
    probabilities)."""
    from siamdog.similarity import classifier_agreement

    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return {
        "feature cosine": np.sum(unit[pairs[:, 0]] * unit[pairs[:, 1]], axis=1),
        "classifier agreement": classifier_agreement(probabilities, pairs),
    }


def pair_figures(scores: dict[str, np.ndarray], same: np.ndarray, head_threshold: float | None = None) -> dict:
    """ROC AUC of each answer on the pairs (`same`: 1 for one breed), and, with a same-class
    head, its accuracy at `head_threshold`, its run's threshold from the valid photos."""
    figures = {"roc_auc": {name: float(roc_auc_score(same, score)) for name, score in scores.items()}}
    if head_threshold is not None:
        head_right = (scores["same-class head"] >= head_threshold) == (same > 0.5)
        figures.update(head_accuracy=float(np.mean(head_right)), head_threshold=head_threshold)
    return figures


def row_means(runs: list[dict]) -> dict:
    """A row's figures: the mean over its runs of each answer's ROC AUC and of the head's accuracy."""
    means = {"runs": len(runs), "roc_auc": {a: float(np.mean([f["roc_auc"][a] for f in runs])) for a in runs[0]["roc_auc"]}}
    if "head_accuracy" in runs[0]:
        means["head_accuracy"] = float(np.mean([f["head_accuracy"] for f in runs]))
    return means


def answer_cells(figures: dict) -> list[str]:
    return [f"{figures['roc_auc'][a]:.4f}" if a in figures["roc_auc"] else "-" for a in ANSWERS]


def row_of(run: Path) -> str:
    """The bench row a run folder belongs to (ROW-seedN -> ROW)."""
    return re.sub(r"-seed\d+$", "", run.name)


def score_run(run: Path, test_dir: Path, workers: int) -> dict:
    """The run's figures on the test pairs: kept ones while its best.keras is the file they
    scored, else scored and kept."""
    from siamdog.files import write_json

    kept = run / "scores" / "verification-test.json"
    scored_model = (run / "best.keras").stat().st_mtime_ns
    if kept.is_file():
        figures = json.loads(kept.read_text())
        if figures.pop("best_keras_mtime_ns") == scored_model:
            return figures
    figures = scored_by_model(run, test_dir, workers)
    kept.parent.mkdir(exist_ok=True)
    write_json(str(kept), {**figures, "best_keras_mtime_ns": scored_model})
    return figures


def scored_by_model(run: Path, test_dir: Path, workers: int) -> dict:
    from siamdog.data.batches import index_class_folders
    from siamdog.data.pairing import verification_pairs
    from siamdog.evaluate import load_run_model, predict_files
    from siamdog.similarity import features_and_probabilities, load_same_class, same_class_probabilities, saved_verification

    model, classes, _ = load_run_model(run)
    filenames, labels = index_class_folders(test_dir, classes)
    both, width = features_and_probabilities(model)
    outputs, readable = predict_files(both, [str(test_dir / f) for f in filenames], workers=workers)
    features, probabilities, labels = outputs[readable, :width], outputs[readable, width:], labels[readable]
    pairs, same = verification_pairs(labels)
    scores = baseline_scores(features, probabilities, pairs)
    figures = {"run": os.path.relpath(run, REPO), "row": row_of(run), "pairs": len(same), "same_class_pairs": int(same.sum())}
    if model.same_class is None:
        return {**figures, **pair_figures(scores, same)}
    calibration = saved_verification(run)
    if calibration is None:
        raise SystemExit(f"{run}: no verification.json (a multi-loss run writes it when its training ends)")
    scores["same-class head"] = same_class_probabilities(load_same_class(run), features, pairs)
    return {**figures, "valid_roc_auc": calibration["roc_auc"], **pair_figures(scores, same, calibration["threshold"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run folders (ROW-seedN are averaged by ROW)")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--workers", type=int, default=2, help="loader threads")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not (r / "best.keras").is_file()]
    if missing:
        parser.error(f"not a trained run folder (no best.keras): {', '.join(missing)}")

    data = organized_data(Path(args.work))
    per_run = [score_run(run, data / "test", args.workers) for run in runs]
    by_row = {}
    for figures in per_run:
        by_row.setdefault(figures["row"], []).append(figures)
    means = {row: row_means(runs_of_row) for row, runs_of_row in by_row.items()}
    results = {**header("verification"), **data_summary(data), "runs": per_run, "rows": means}
    table = [[f"`{f['row']}` ({Path(f['run']).name})", *answer_cells(f),
              f"{f['head_accuracy']:.4f} at {f['head_threshold']:.3f}" if "head_accuracy" in f else "-",
              f"{f['valid_roc_auc']:.4f}" if "valid_roc_auc" in f else "-"] for f in per_run]
    table += [[f"**`{row}`, mean of {m['runs']}**", *answer_cells(m), f"{m['head_accuracy']:.4f}" if "head_accuracy" in m else "-", ""]
              for row, m in means.items()]
    body = (
        f"{results['test_images']} test photos, {per_run[0]['pairs']} pairs ({per_run[0]['same_class_pairs']} of one breed, "
        "as many of two). ROC AUC of each answer; the same-class head's (multi-loss runs) accuracy at the threshold its run "
        "chose on the valid photos, and its ROC AUC there.\n\n"
        + markdown_table(["run", *(f"{a} ROC AUC" for a in ANSWERS), "head accuracy (threshold)", "head ROC AUC on valid"], table)
    )
    write_results(args.out, f"verification-{results['date']}", results, "Same breed or not, on held-out photos", body)


if __name__ == "__main__":
    main()
