"""One table of every row of the ablation: each row's latest figures, read from the results
that `bench/ablation.py` wrote from the same rows file (bench/results/ablation-*.json), with
the file and the command that measured them, and the rows not measured yet.

    python bench/ablation_summary.py [--rows bench/configs/ablation.yaml]   (the last step of make bench-ablation)

It trains nothing: each `--only` invocation of the ablation writes a file of its own, and this
puts them side by side. A row's figures come from the latest file that asked for it by name
(else the latest that ran it, as a reference or a comparison; of one day, the one over the most
seeds); a row whose description in the rows file changed since it was measured says so. Writes
bench/results/ablation-summary.json and .md (another rows file: ablation-summary-<its name>.*).
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from bench.ablation import ROWS, ensemble_members, other_rows_name  # noqa: E402
from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.runner import REPO  # noqa: E402

SUMMARY_STEM = "ablation-summary"


def summary_stem(rows_file: Path) -> str:
    """The summary's file name."""
    return "-".join([SUMMARY_STEM, *other_rows_name(rows_file)])


def asked_rows(command: str) -> set[str]:
    """The rows an ablation command named after --only (none: it ran every row)."""
    words = command.split()
    if "--only" not in words:
        return set()
    named = words[words.index("--only") + 1 :]
    return set(named[: next((i for i, w in enumerate(named) if w.startswith("--")), len(named))])


def latest_figures(row_names: list[str], results: list[tuple[str, dict]]) -> dict[str, dict]:
    """For each row of `row_names` that some results hold: its figures from the latest of
    `results` ((file name, ablation results) pairs) that asked for it, else from the latest
    that ran it, of one day the one over the most seeds; with the file, its date, its command
    and its reference."""
    def rank(item, name):
        file, result = item
        return (name in asked_rows(result["command"]), result["date"], len(result["rows"][name]["test_top1_err_seeds"]), file)

    latest = {}
    for name in row_names:
        holding = [item for item in results if name in item[1]["rows"]]
        if holding:
            file, result = max(holding, key=lambda item: rank(item, name))
            latest[name] = {**result["rows"][name], "file": file, "date": result["date"], "reference": result["reference"],
                            "measured_by": result["command"]}
    return latest


def row_tta(row: dict, by_name: dict[str, dict]) -> str:
    """The TTA a row is scored with, as the rows file sets it (an ensemble scores as its runs)."""
    members = ensemble_members(row)
    return row.get("tta", by_name[members[0]].get("tta", "flip") if members else "flip")


def paired_tests(figures: dict) -> str:
    """The verdicts of a row's paired tests: against the reference, then the rows it names."""
    def line(other, comparison):
        return f"{comparison['verdict']} vs `{other}` ({comparison['error_difference_points']:+.2f})"

    tests = [line(figures["reference"], figures["against_reference"])] if "against_reference" in figures else ["(reference)"]
    return "; ".join([*tests, *(line(other, c) for other, c in figures.get("against", {}).items())])


def summary_rows(rows: list[dict], latest: dict[str, dict]) -> list[list[str]]:
    """The table's lines, one per row of the rows file, in its order."""
    by_name = {row["name"]: row for row in rows}
    lines = []
    for row in rows:
        figures = latest.get(row["name"])
        if figures is None:
            lines.append([f"`{row['name']}`", row["what"], "not measured yet", "", "", row_tta(row, by_name), "", ""])
            continue
        changed = "" if figures["what"] == row["what"] else " (its description changed since)"
        lines.append([
            f"`{row['name']}`", row["what"] + changed, f"{figures['test_top1_err']:.4f}",
            " ".join(f"{e:.4f}" for e in figures["test_top1_err_seeds"]), paired_tests(figures), row_tta(row, by_name),
            str(figures["minutes"]), f"`{figures['file']}`",
        ])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=str(ROWS))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    rows = yaml.safe_load(Path(args.rows).read_text())["rows"]
    rows_file = os.path.relpath(args.rows, REPO)
    files = sorted(p for p in Path(args.out).glob("ablation-*.json") if not p.stem.startswith(SUMMARY_STEM))
    # Only this rows file's results: another file may give a row of the same name other settings.
    results = [(p.name, result) for p in files if (result := json.loads(p.read_text()))["rows_file"] == rows_file]
    latest = latest_figures([r["name"] for r in rows], results)
    summary = {**header("ablation-summary"), "rows_file": rows_file, "rows": latest,
               "not_measured": [r["name"] for r in rows if r["name"] not in latest]}
    table = markdown_table(
        ["row", "what", "test top-1 err (mean)", "per seed", "paired tests (points)", "tta", "minutes", "measured in"],
        summary_rows(rows, latest),
    )
    body = (f"Every row of `{summary['rows_file']}` with its latest figures on the 1,638 test photos (3 seeds). "
            "`paired tests`: exact McNemar seed by seed against the reference of the invocation that measured it and the rows it is compared with, "
            "better or worse only where every seed's test says so at 5 %; the file holds the command.\n\n" + table)
    write_results(args.out, summary_stem(Path(args.rows)), summary, "siamdog ablation: every row's latest figures", body)


if __name__ == "__main__":
    main()
