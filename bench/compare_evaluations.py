"""Evaluated runs against reference runs on the same photos, seed by seed, by exact McNemar tests.

    python bench/compare_evaluations.py --evaluations DIR [DIR ...] [--reference DIR [DIR ...]] --name NAME

DIR: what `tools/evaluate.py` (`make evaluate`) wrote for one run, RUN/evaluation by default
(metrics.json, predictions.csv). The two lists pair up in order, one pair per seed. Both runs of
a pair must have the same seed, and every evaluation must score the same photos with the same
TTA. This is how to compare runs that a user trained with `make train`, as the ablation compares
its rows.

For each side the report gives:
- test top-1 and top-5 errors, mean and per run;
- the valid top-1 error of each run's best model (best.json: the figure that chose it);
- its training minutes (state.json).
Then the settings in which the two sides' configs differ, the McNemar test of each pair, and
the verdict (bench.stats.verdict). Without `--reference`, the report gives the evaluated runs'
figures alone.
Writes bench/results/compare-<date>-<NAME>.json and .md.
"""

import argparse
import csv
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.runner import REPO, compare, summarize, training_seconds  # noqa: E402
from siamdog.config import config_to_dict, load_config  # noqa: E402


def read_evaluation(folder: Path) -> dict:
    """One evaluation as a seed of the ablation's (summarize, compare): its errors, the photos it
    got right by name, the run's seed, config, valid error and training seconds. ValueError,
    naming the folder, for what is not the evaluation of one run that can be found."""
    if not (folder / "metrics.json").is_file():
        raise ValueError(f"not an evaluation folder (no metrics.json): {folder}")
    metrics = json.loads((folder / "metrics.json").read_text())
    if not isinstance(metrics["model"], str):
        raise ValueError(f"{folder} evaluated an ensemble: compare the evaluations of single runs, one per seed")
    run = Path(metrics["model"]).parent  # as evaluate was given it: relative to where it ran
    missing = [name for name in ("config.yaml", "best.json", "state.json") if not (run / name).is_file()]
    if missing:
        raise ValueError(f"{folder} evaluated {metrics['model']}, whose run folder has no {', '.join(missing)} here: "
                         "run this from where make evaluate ran")
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: row["image"])
    config = config_to_dict(load_config(run / "config.yaml"))
    return {
        "seed": config["seed"],
        "config": config,
        "images": [row["image"] for row in rows],
        "data": metrics["data"],
        "tta": metrics["tta"],
        "test": {"top1_err": metrics["top1_error"], "top5_err": metrics["top5_error"], "right": [row["correct"] == "1" for row in rows]},
        "valid_top1_err": 1 - json.loads((run / "best.json").read_text())["val_accuracy"],
        "seconds": training_seconds(json.loads((run / "state.json").read_text())),
        "run": os.path.relpath(run, REPO),
    }


def pairing_problem(evaluations: list[dict], references: list[dict]) -> str | None:
    """Why the two lists cannot be compared pair by pair, or None."""
    if references and len(evaluations) != len(references):
        return f"{len(evaluations)} evaluations against {len(references)} references: give one reference per evaluation"
    for a, b in zip(evaluations, references):
        if a["seed"] != b["seed"]:
            return f"{a['run']} (seed {a['seed']}) is paired with {b['run']} (seed {b['seed']}): pair runs of the same seed"
    first = evaluations[0]
    for other in [*evaluations, *references]:
        if other["images"] != first["images"] or other["tta"] != first["tta"]:
            return f"{other['run']}'s evaluation scored other photos or another TTA than {first['run']}'s"
    return None


def config_differences(config: dict, reference: dict) -> dict[str, list]:
    """{setting: [config's value, reference's value]} where two runs' configs differ, the seed
    aside; a stage's settings go by `stages.<name>.<setting>`."""
    def flat(values: dict) -> dict:
        stages = {f"stages.{s['name']}.{k}": v for s in values.get("stages", []) for k, v in s.items() if k != "name"}
        return {**{k: v for k, v in values.items() if k not in ("stages", "seed")}, **stages}

    a, b = flat(config), flat(reference)
    return {key: [a.get(key), b.get(key)] for key in sorted({*a, *b}) if a.get(key) != b.get(key)}


def side(evaluations: list[dict]) -> dict:
    """One side's figures over its runs, as the ablation summarizes a row's seeds."""
    summary = summarize(evaluations, 0.0)
    summary["training_minutes"] = summary.pop("minutes")
    summary["valid_top1_err_seeds"] = [round(e["valid_top1_err"], 4) for e in evaluations]
    summary["runs"] = [e["run"] for e in evaluations]
    return summary


def table_row(label: str, figures: dict) -> list:
    """A side's line in the report's table (side's figures)."""
    return [label, f"{figures['test_top1_err']:.4f}", " ".join(f"{x:.4f}" for x in figures["test_top1_err_seeds"]),
            f"{figures['test_top5_err']:.4f}", f"{figures['test_top1_ci95'][0]:.3f}-{figures['test_top1_ci95'][1]:.3f}",
            " ".join(f"{x:.4f}" for x in figures["valid_top1_err_seeds"]), f"{figures['training_minutes']:.1f}", ", ".join(figures["runs"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", nargs="+", required=True, help="evaluation folders (RUN/evaluation), one per seed")
    parser.add_argument("--reference", nargs="+", default=[], help="the reference runs' evaluation folders, in the same seed order")
    parser.add_argument("--name", required=True, help="what is compared, for the results' file name")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    try:
        evaluations = [read_evaluation(Path(d)) for d in args.evaluations]
        references = [read_evaluation(Path(d)) for d in args.reference]
    except ValueError as e:
        parser.error(str(e))
    problem = pairing_problem(evaluations, references)
    if problem:
        parser.error(problem)

    results = {**header("compare"), "data": evaluations[0]["data"], "tta": evaluations[0]["tta"], "test_images": len(evaluations[0]["images"]),
               "evaluations": side(evaluations)}
    if references:
        results.update(differences=config_differences(evaluations[0]["config"], references[0]["config"]), reference=side(references),
                       **compare(evaluations, references))
    rows = [table_row(label, results[label]) for label in ("evaluations", "reference") if label in results]
    table = markdown_table(["", "test top-1 err", "per seed", "top-5", "95 % interval", "valid top-1 err per seed", "training minutes", "runs"], rows)
    body = f"Test photos: {results['data']}, {results['test_images']}, `--tta {results['tta']}`."
    if references:
        p_values = ", ".join(f"{m['mcnemar_p']:.3g} ({m['only_a_right']}:{m['only_b_right']})" for m in results["mcnemar"])
        differences = "".join(f"- `{key}`: {a!r} (reference {b!r})\n" for key, (a, b) in results["differences"].items()) or "- none (the seed aside)\n"
        body += (f" The settings the runs differ in:\n\n{differences}\n{table}\nDifference {results['error_difference_points']:+.2f} points; "
                 f"McNemar p per seed (photos only the evaluations get right : only the reference): {p_values}; verdict: **{results['verdict']}**.\n")
    else:
        body += f"\n\n{table}"
    title = f"{args.name}: evaluated runs" + (" against a reference" if references else "")
    write_results(args.out, f"compare-{results['date']}-{args.name}", results, title, body)


if __name__ == "__main__":
    main()
