"""Which test-time augmentation to score with, chosen on the valid split: the linear probe
(C 0.001, fitted on the cached training pass of the ablation's base profile) scored on the valid
photos with each TTA of siamdog.inference, each compared with `flip` by an exact McNemar test
on the same photos.

    python bench/tta_views.py

Touches train and valid only, so it can set a TTA's parameters (the zoom of `crops`) without the
test split. Writes bench/results/tta-views-<date>.json and .md.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.runner import REPO, Bench, data_summary, errors, linear_probe, organized_data  # noqa: E402
from bench.stats import mcnemar  # noqa: E402
from siamdog.config import load_config  # noqa: E402
from siamdog.inference import TTA_VIEWS, ZOOM  # noqa: E402

PROBE_C = 0.001  # the ablation's regularized probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    started = time.monotonic()
    bench = Bench(organized_data(Path(args.work)))
    config_file = REPO / "bench" / "configs" / "ablation-base.yaml"
    config = load_config(config_file)
    results = {**header("tta-views"), "config": str(config_file.relative_to(REPO)), "probe_c": PROBE_C, "zoom": ZOOM,
               **data_summary(bench.data), "split": "valid", "tta": {}}
    scored = {tta: errors(*linear_probe(bench, config, 0, tta, PROBE_C, split="valid")[:2]) for tta in TTA_VIEWS}
    for tta, figures in scored.items():
        results["tta"][tta] = {"views": list(TTA_VIEWS[tta]), "valid_top1_err": round(figures["top1_err"], 4),
                               "mcnemar_vs_flip": mcnemar(figures["right"], scored["flip"]["right"]) if tta != "flip" else None}
    results["total_seconds"] = round(time.monotonic() - started, 1)
    rows = [[tta, " + ".join(r["views"]), f"{r['valid_top1_err']:.4f}", "-" if r["mcnemar_vs_flip"] is None else r["mcnemar_vs_flip"]["mcnemar_p"]]
            for tta, r in results["tta"].items()]
    body = (f"The linear probe (C {PROBE_C}) on `{results['config']}`'s cached training pass, scored on the "
            f"{results['valid_images']} valid photos; zoom {ZOOM}. Total {results['total_seconds'] / 60:.1f} min.\n\n"
            + markdown_table(["tta", "views", "valid top-1 err", "McNemar p vs flip"], rows) + "\n")
    write_results(args.out, f"tta-views-{results['date']}", results, "siamdog TTA on the valid split", body)


if __name__ == "__main__":
    main()
