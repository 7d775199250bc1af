"""Every technique switched on and off from one shared cached pass: one row per technique.

    python bench/ablation.py [--rows bench/configs/ablation.yaml]     (make bench-ablation)

The rows file names a base profile (bench/configs/<base>.yaml), the seeds, the reference row
(`--reference` names another), and the rows: each changes some settings of the base (top-level
keys under `settings`, a stage's keys under `stage_settings`), runs some of its stages, and is
scored on the test split with the TTA it names (`tta`: none, flip (the default) or crops;
bench/runner.py). A row with `probe: true` is the linear probe instead (`probe_c`:
scikit-learn's C, 1 by default); a row with `ensemble_of: ROW` is the ensemble of that row's
runs (listed after it), and with `ensemble_of: [ROW, ROW, ...]` the ensemble of those rows, each
row's runs weighing as one (rows scored with the same TTA), or with `by_seed: true` one
ensemble per seed of each row's run of that seed; a row with `pseudo_labels: {threshold: T}` goes on from its training
with pseudo-label rounds on the test photos, without their labels. A row that names `run: ROW`
scores ROW's runs (with another `tta`, say), so it takes ROW's stages, settings, stage
settings, pseudo-label rounds and seeds rather than setting its own. Every row is compared with
the reference seed by seed (exact McNemar on the same test images), and with the rows it names
under `compare_with` (which then run too), and gets the command that reproduces it. Techniques on the heads train on cached
pooled features in seconds; fine-tuning ones cost an epoch over the cached block13 inputs each.
Writes bench/results/ablation-<date>.json and .md.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from bench.common import header, markdown_table, peak_rss_mb, write_results  # noqa: E402
from bench.quality import VARIANT_HEADER, comparison_line, variant_rows  # noqa: E402
from bench.runner import REPO, Bench, compare, data_summary, errors, linear_probe, organized_data, pseudo_label_figures, split_seconds, summarize, train_run  # noqa: E402
from siamdog.config import config_from_dict, config_to_dict, load_config  # noqa: E402


ROWS = REPO / "bench" / "configs" / "ablation.yaml"


def other_rows_name(rows_file: Path) -> list[str]:
    """[the rows file's name] where it is not the ablation's own, else []: the results and the
    summary of another rows file carry its name, so they overwrite neither the ablation's nor
    each other's."""
    return [rows_file.stem] if rows_file.resolve() != ROWS.resolve() else []


def row_config(base, row: dict, seed: int):
    """The base config with a row's settings, for one seed."""
    values = {**config_to_dict(base), **row.get("settings", {}), "seed": seed}
    for stage in values["stages"]:
        stage.update(row.get("stage_settings", {}).get(stage["name"], {}))
    return config_from_dict(values, f"row {row['name']}")


SHARED_RUN_KEYS = ("stages", "settings", "stage_settings", "pseudo_labels", "seeds")


def with_shared_runs(rows: list[dict]) -> list[dict]:
    """The rows, each that names `run: ROW` completed with what decides how ROW's runs train
    (SHARED_RUN_KEYS): it scores those runs, so it trains as ROW does. ValueError, naming the
    row, where ROW is not a row of the file that trains its own runs, or where the row sets one
    of those keys itself."""
    by_name = {row["name"]: row for row in rows}
    completed = []
    for row in rows:
        if "run" in row:
            source = by_name.get(row["run"])
            if source is None or any(key in source for key in ("run", "probe", "ensemble_of")):
                raise ValueError(f"row {row['name']}: run {row['run']} is not a row of this file that trains its own runs")
            own = [key for key in SHARED_RUN_KEYS if key in row]
            if own:
                raise ValueError(f"row {row['name']}: sets {', '.join(own)}, which it takes from row {row['run']}, whose runs it scores")
            row = {**row, **{key: source[key] for key in SHARED_RUN_KEYS if key in source}}
        completed.append(row)
    return completed


def run_row(bench: Bench, base, row: dict, seeds: list[int], runs: Path, workers: int = 4) -> list[dict]:
    tta = row.get("tta", "flip")
    if row.get("probe"):  # lbfgs does not depend on the seed: one fit stands for every seed
        probabilities, labels, seconds = linear_probe(bench, row_config(base, row, seeds[0]), seeds[0], tta, row.get("probe_c", 1.0))
        return [{"seed": seed, "seconds": seconds, "test": errors(probabilities, labels), "probabilities": probabilities, "labels": labels,
                 "one_fit": True} for seed in seeds]
    results = []
    for seed in seeds:
        config = row_config(base, row, seed)
        run = runs / f"{row.get('run', row['name'])}-seed{seed}"
        trained = train_run(bench, run, config, row.get("stages"), row.get("pseudo_labels"), workers)
        probabilities, labels = bench.score(trained["run"], "test", tta)
        results.append({"seed": seed, "seconds": trained["seconds"], "test": errors(probabilities, labels),
                        "valid_top1_err": errors(*bench.score(trained["run"], "valid", tta="none"))["top1_err"],
                        "best": trained["state"]["best"], "probabilities": probabilities, "labels": labels})
        if row.get("pseudo_labels"):
            results[-1]["pseudo_labels"] = pseudo_label_figures(trained["run"])
        print(row["name"], seed, results[-1]["test"]["top1_err"], flush=True)
    return results


def ensemble_members(row: dict) -> list[str]:
    """The rows an ensemble row is made of (none for another row)."""
    members = row.get("ensemble_of", [])
    return [members] if isinstance(members, str) else list(members)


def rows_named_by(row: dict) -> list[str]:
    """The rows a row is compared with or made of."""
    return [*row.get("compare_with", []), *ensemble_members(row)]


def rows_to_run(by_name: dict[str, dict], asked, reference: str) -> set[str]:
    """The rows `asked` for, the reference, and the rows those asked for need (rows_it_needs);
    the reference's own comparisons do not pull more rows in."""
    return {*asked, reference, *(other for name in asked for other in rows_it_needs(by_name[name], by_name))}


def rows_it_needs(row: dict, by_name: dict[str, dict]) -> list[str]:
    """The rows a row names, and the runs of the ensembles among them."""
    named = rows_named_by(row)
    return [*named, *(member for n in named for member in ensemble_members(by_name[n]))]


def ensemble_row(members: list[list[dict]], by_seed: bool = False) -> list[dict]:
    """The ensemble of rows' runs (`members`: each row's runs, seed by seed): the mean of each
    row's test probabilities over its runs (as `siamdog evaluate --model RUN1 RUN2 ...` scores
    them), then over the rows, so each row weighs as one. One prediction standing for every
    seed, costing the training of every run (a probe's one fit once). `by_seed`: one ensemble
    per seed instead, of each row's run of that seed, costing one run of each row."""
    labels = members[0][0]["labels"]
    if by_seed:
        return [{"seed": runs[0]["seed"], "seconds": sum(m["seconds"] for m in runs),
                 "test": errors(np.mean([m["probabilities"] for m in runs], axis=0), labels)} for runs in zip(*members)]
    probabilities = np.mean([np.mean([m["probabilities"] for m in runs], axis=0) for runs in members], axis=0)
    seconds = sum(runs[0]["seconds"] if runs[0].get("one_fit") else sum(m["seconds"] for m in runs) for runs in members)
    return [{"seed": m["seed"], "seconds": seconds, "test": errors(probabilities, labels)} for m in members[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=str(ROWS))
    parser.add_argument("--only", nargs="+", help="run only these rows, the reference, and the rows they name (compare_with, ensemble_of)")
    parser.add_argument("--reference", help="the row every row is compared with (default: the rows file's)")
    parser.add_argument("--seeds", type=int, nargs="+", help="train these seeds instead of the rows file's")
    parser.add_argument("--workers", type=int, default=4, help="loader threads of each run that trains on images (default: 4)")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--runs", help="the folder of the trained runs, to score or extend another day's "
                        "(default: WORK/runs/ablation-DATE)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    spec = yaml.safe_load(Path(args.rows).read_text())
    base_file = REPO / "bench" / "configs" / f"{spec['base']}.yaml"
    base = load_config(base_file)
    try:
        all_rows = with_shared_runs(spec["rows"])
    except ValueError as e:
        parser.error(str(e))
    by_name = {r["name"]: r for r in all_rows}
    reference = args.reference or spec["reference"]
    unknown = {*(args.only or ()), reference, *(n for r in all_rows for n in rows_named_by(r))} - set(by_name)
    if unknown:
        parser.error(f"no row named {', '.join(sorted(unknown))} in {args.rows}")
    for row in all_rows:
        if len({by_name[m].get("tta", "flip") for m in ensemble_members(row)}) > 1:
            parser.error(f"row {row['name']}: the rows of an ensemble must be scored with the same tta")
    wanted = rows_to_run(by_name, args.only or (), reference)
    rows = [r for r in all_rows if not args.only or r["name"] in wanted]
    seeds = args.seeds or spec["seeds"]
    started = time.monotonic()
    bench = Bench(organized_data(Path(args.work)))
    head = header("ablation")
    runs = Path(args.runs) if args.runs else Path(args.work) / "runs" / f"ablation-{head['date']}"
    results = {**head, "base": str(base_file.relative_to(REPO)), "rows_file": os.path.relpath(args.rows, REPO),
               "reference": reference, "seeds": seeds, "runs": os.path.relpath(runs, REPO), **data_summary(bench.data), "rows": {}}
    stem = "-".join(["ablation", results["date"], *other_rows_name(Path(args.rows)), *(args.only or [])])
    options = (f" --reference {reference}" if args.reference else "") + (f" --seeds {' '.join(map(str, seeds))}" if args.seeds else "")
    per_row = {}
    for row in rows:
        # An ensemble's cached passes are its rows' (each counted once where they share one).
        trained = [by_name[m] for m in ensemble_members(row)] or [row]
        passes = split_seconds(*(bench.pass_seconds(row_config(base, t, seeds[0]), t.get("tta", "flip")) for t in trained))
        config = row_config(base, trained[0], seeds[0])
        if "ensemble_of" in row:
            per_row[row["name"]] = ensemble_row([per_row[m] for m in ensemble_members(row)], row.get("by_seed", False))
        else:
            per_row[row["name"]] = run_row(bench, base, row, row.get("seeds", seeds), runs, args.workers)
        results["rows"][row["name"]] = {
            **summarize(per_row[row["name"]], sum(passes.values()) / 60), "what": row["what"], "passes_seconds": passes,
            "image_size": config.image_size, "tta": trained[0].get("tta", "flip"),
            "command": f"python bench/ablation.py --rows {results['rows_file']} --only {row['name']}{options}",
        }
        # Written after every row, so an interrupted ablation keeps the rows it finished.
        add_comparisons(results["rows"], per_row, rows, reference)
        results["peak_rss_mb"] = round(peak_rss_mb(), 1)
        results["total_seconds"] = round(time.monotonic() - started, 1)
        write_results(args.out, stem, results, "siamdog ablation on held-out dogs120 photos", report(results))


def add_comparisons(figures: dict[str, dict], per_row: dict[str, list[dict]], rows: list[dict], reference: str) -> None:
    """Each finished row's paired tests (`figures[name]`) against the reference and against the
    rows it names under compare_with, where those have finished too; the reference has its own
    line. Rows named by a row that --only left out do not run."""
    for row in (r for r in rows if r["name"] in per_row):
        name, seeds = row["name"], per_row[row["name"]]
        if name != reference and reference in per_row:
            figures[name]["against_reference"] = compare(seeds, per_row[reference][: len(seeds)])
        for other in (o for o in row.get("compare_with", []) if o in per_row and o != reference):
            figures[name].setdefault("against", {})[other] = compare(seeds, per_row[other][: len(seeds)])


def pseudo_label_line(name: str, per_seed: list[dict]) -> str:
    counts = ", ".join(f"{p['chosen']} ({p['precision']:.3f} of them right)" for p in per_seed)
    return f"{name}: pseudo-labelled test photos per seed {counts}; the test labels are read only for this line, after training"


def report(results: dict) -> str:
    rows = results["rows"]
    table = variant_rows(rows, list(rows))
    for line, name in zip(table, rows):
        line.insert(1, rows[name]["what"])
    lines = [
        f"dogs120: {results['train_images']} train, {results['valid_images']} valid and {results['test_images']} test images; "
        f"base `{results['base']}`, rows `{results['rows_file']}`, seeds {results['seeds']}, reference row `{results['reference']}`. "
        f"Total wall time {results['total_seconds'] / 60:.1f} min. `minutes`: the row's cached passes plus its training, "
        f"as one run alone would take.\n",
        markdown_table([VARIANT_HEADER[0], "what", *VARIANT_HEADER[1:]], table),
        "",
        *[comparison_line(f"{name} vs {results['reference']}", row["against_reference"]) for name, row in rows.items() if "against_reference" in row],
        *[comparison_line(f"{name} vs {other}", c) for name, row in rows.items() for other, c in row.get("against", {}).items()],
        *[pseudo_label_line(name, row["pseudo_labels_seeds"]) for name, row in rows.items() if "pseudo_labels_seeds" in row],
        "",
        "Each row: " + "; ".join(f"`{name}`: `{row['command']}`" for name, row in rows.items()),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
