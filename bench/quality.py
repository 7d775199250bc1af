"""Top-1 error on dog photos that no model selection saw: a linear probe against siamdog's
softmax-only, multi-loss and multi-loss + polish variants, over several seeds.

    python bench/quality.py --profile cpu [--seeds 0 1 2] [--sizes 299 400]     (make bench; PROFILE=full for a GPU)

On ../shared/data/dogs120 split three ways (bench/runner.py: train, valid for model selection,
test touched only by the final scoring), with ../shared's ImageNet Xception weights and one
profile (bench/configs/<profile>.yaml) for every variant:

  linear_probe      logistic regression on the frozen tower's pooled features (every cached view)
                    at the first size, from the Keras float32 front whatever the profile's
                    front_engine: the int8 front speeds training up and is not to weaken the baseline
  linear_probe_c0001  the same regularized 1000x harder (C 0.001, picked on the valid split;
                    bench/README.md), the stronger baseline
  softmax_only      the profile with mode softmax, without polish
  multiloss         the profile without polish
  multiloss_polish  the same runs, then polish

Each siamdog variant trains one run of the profile per input size (`--sizes`; default the
profile's image_size alone) and, with several sizes, scores a seed's runs as one ensemble, the
mean of their probabilities, as `siamdog evaluate --model RUN_299 RUN_400` does; each size's
runs are reported too (`multiloss_400px`). Each variant reports the mean test top-1/top-5 error over the seeds, each
seed's figure, a 95 % interval, the valid error separately, and `minutes`: the cached passes
plus training, from organized data to the evaluated model, as one run (or one ensemble) alone
would take. Variants are compared by exact McNemar tests on the same test images, seed by
seed; a difference that not every seed's test confirms is reported as a tie.
Writes bench/results/<profile>-<date>.json and .md (<profile>-<date>-299-400px with two sizes,
-tta-<tta> after it with a --tta other than flip).
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, peak_rss_mb, write_results  # noqa: E402
from bench.runner import REPO, Bench, compare, data_summary, errors, linear_probe, organized_data, recorded, summarize, train_run  # noqa: E402
from siamdog.config import config_from_dict, config_to_dict, load_config  # noqa: E402
from siamdog.inference import DEFAULT_TTA, TTA_VIEWS  # noqa: E402

PROBES = {"linear_probe": 1.0, "linear_probe_c0001": 0.001}  # name -> scikit-learn's C
TRAINED = ("softmax_only", "multiloss", "multiloss_polish")
COMPARISONS = (
    ("multiloss", "softmax_only"), ("multiloss_polish", "softmax_only"),
    ("multiloss", "linear_probe_c0001"), ("softmax_only", "linear_probe_c0001"), ("multiloss_polish", "linear_probe_c0001"),
    ("softmax_only", "linear_probe"), ("multiloss_polish", "linear_probe"),
)


def size_names(name: str, sizes) -> list[str]:
    """The names of a trained variant's runs, one per size; with one size, the variant's own."""
    return [name] if len(sizes) == 1 else [f"{name}_{size}px" for size in sizes]


def variant_names(sizes) -> list[str]:
    """Every variant the table may hold: the probes, then each trained variant's sizes and their
    ensemble (with one size, the variant's one run)."""
    if len(sizes) == 1:
        return [*PROBES, *TRAINED]
    return [*PROBES, *(n for name in TRAINED for n in (*size_names(name, sizes), name))]


def comparisons(sizes) -> list[tuple[str, str]]:
    """The pairs compared: multi-loss against softmax-only and the probes, and an ensemble of
    sizes against its first size alone (what the other sizes add)."""
    by_size = [(name, size_names(name, sizes)[0]) for name in TRAINED] if len(sizes) > 1 else []
    return [*COMPARISONS, *by_size]


def variant_config(config, name: str, seed: int, size: int):
    values = {**config_to_dict(config), "seed": seed, "image_size": size}
    if name == "softmax_only":
        values["mode"] = "softmax"
    return config_from_dict(values, name)


def describe_data(results: dict) -> str:
    sizes = " and ".join(map(str, results["image_sizes"]))
    ensemble = "; a trained variant is the ensemble of its runs at each size, seed by seed" if len(results["image_sizes"]) > 1 else ""
    return (
        f"dogs120: {results['train_images']} train, {results['valid_images']} valid and {results['test_images']} test images, "
        f"{results['classes']} breeds, {sizes} px{ensemble}; config `{results['config']}`; seeds {results['seeds']}; "
        f"test scoring with TTA {results['tta']} ({' + '.join(TTA_VIEWS[results['tta']])}). Total wall time {results['total_seconds'] / 60:.1f} min.\n"
    )


def variant_rows(results: dict, names) -> list[list]:
    rows = []
    for name in names:
        v = results[name]
        low, high = v["test_top1_ci95"]
        rows.append([name, f"{v['test_top1_err']:.4f}", f"{low:.3f}-{high:.3f}", " ".join(f"{t:.4f}" for t in v["test_top1_err_seeds"]),
                     f"{v['test_top5_err']:.4f}", f"{v['valid_top1_err']:.4f}" if "valid_top1_err" in v else "-", v["minutes"]])
    return rows


def comparison_line(key: str, comparison: dict) -> str:
    ps = ", ".join(str(t["mcnemar_p"]) for t in comparison["mcnemar"])
    return (f"- {key}: test top-1 error {comparison['error_difference_points']:+.2f} points (mean over seeds; negative: "
            f"the first is better); exact McNemar p per seed {ps}: **{comparison['verdict']}**")


VARIANT_HEADER = ["variant", "test top-1 err (mean)", "95 % interval", "per seed", "test top-5 err", "valid top-1 err", "minutes"]


def passes_line(passes: dict) -> str:
    return ", ".join(f"{split} {seconds} s" for split, seconds in passes.items())


def report(results: dict) -> str:
    names = [n for n in variant_names(results["image_sizes"]) if n in results]
    lines = [describe_data(results), markdown_table(VARIANT_HEADER, variant_rows(results, names)), ""]
    lines += [comparison_line(key, c) for key, c in results["comparisons"].items()]
    sizes = "; ".join(f"at {size} px {passes_line(passes)}" for size, passes in results["passes_seconds"].items())
    probes = (f"; the probes' (Keras float32 front, {results['image_sizes'][0]} px): {passes_line(results['probe_passes_seconds'])}"
              if "probe_passes_seconds" in results else "; no probes (--no-probes)")
    lines.append(f"\nCached passes of the frozen front (shared by all runs; counted in the minutes of every variant that reads them): "
                 f"{sizes}{probes}. Peak RSS {results['peak_rss_mb']} MB.")
    if "image_check" in results:
        check = results["image_check"]
        lines.append(f"Cached scoring agrees with `{check['command']}` on {check['agree']} of {check['images']} test images.")
    return "\n".join(lines) + "\n"


def ensemble_figures(bench: Bench, members: list[dict], tta: str) -> dict:
    """One seed's runs at each size as one ensemble (the mean of their probabilities), on test
    and valid; its training seconds are its runs' together."""
    runs = [Path(m["run"]) for m in members]
    return {"seed": members[0]["seed"], "seconds": sum(m["seconds"] for m in members), "test": errors(*bench.ensemble_score(runs, "test", tta)),
            "valid_top1_err": errors(*bench.ensemble_score(runs, "valid", "none"))["top1_err"], "best": [m["best"] for m in members],
            "runs": [m["run"] for m in members]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="bench/configs/<profile>.yaml (default: cpu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="input sizes: each trained variant is one run per size, scored as one ensemble (default: the profile's image_size)")
    parser.add_argument("--tta", default=DEFAULT_TTA, choices=TTA_VIEWS,
                        help=f"the test images' views each score averages (siamdog.inference; default: {DEFAULT_TTA}, what a bare --tta means)")
    parser.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True,
                        help="fit the linear probes (default: on; off skips their pass of the training photos on the float32 front, the longest pass where the runs train on int8)")
    parser.add_argument("--check-images", action=argparse.BooleanOptionalAction, default=True,
                        help="at the end, score seed 0's multi-loss model with tools/evaluate.py on the test images and count the agreement (default: on)")
    parser.add_argument("--workers", type=int, default=4, help="loader threads of each run that trains on images (default: 4)")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    config_file = REPO / "bench" / "configs" / f"{args.profile}.yaml"
    config = load_config(config_file)
    sizes, tta = args.sizes or [config.image_size], args.tta
    started = time.monotonic()
    bench = Bench(organized_data(Path(args.work)))
    results = {**header("quality"), "profile": args.profile, "image_sizes": sizes, "seeds": args.seeds, "tta": tta,
               "config": str(config_file.relative_to(REPO)), **data_summary(bench.data)}
    results["passes_seconds"] = {str(size): bench.passes(dataclasses.replace(config, image_size=size), tta) for size in sizes}
    size_minutes = {size: sum(results["passes_seconds"][str(size)].values()) / 60 for size in sizes}
    pass_minutes = {}
    per_seed = {name: [] for name in variant_names(sizes)}
    if args.probes:
        probe_config = dataclasses.replace(config, front_engine="keras", image_size=sizes[0])
        results["probe_passes_seconds"] = bench.passes(probe_config, tta)
        # A probe (lbfgs) does not depend on the seed: one fit stands for every seed.
        for name, c in PROBES.items():
            probabilities, labels, seconds = linear_probe(bench, probe_config, args.seeds[0], tta, c)
            per_seed[name] = [{"seed": seed, "seconds": seconds, "test": errors(probabilities, labels)} for seed in args.seeds]
            pass_minutes[name] = sum(results["probe_passes_seconds"].values()) / 60
    for name in TRAINED:
        pass_minutes.update({member: size_minutes[size] for member, size in zip(size_names(name, sizes), sizes)})
        pass_minutes[name] = sum(size_minutes.values())
    runs = Path(args.work) / "runs" / f"{args.profile}-{results['date']}"
    staged = [s.name for s in config.stages if s.name != "polish"]
    title = f"siamdog vs a linear probe on held-out dogs120 photos, profile {args.profile}"
    scored_as = "" if tta == "flip" else f"-tta-{tta}"

    def publish() -> None:
        """Summarize the seeds finished so far and (re)write the results: an interrupted
        benchmark keeps what it measured."""
        for name, seeds in per_seed.items():
            if seeds:
                results[name] = {**summarize(seeds, pass_minutes[name]), "best": [s.get("best") for s in seeds]}
        results["seeds"] = [s["seed"] for s in per_seed["multiloss"]]
        results["comparisons"] = {f"{a} vs {b}": compare(per_seed[a], per_seed[b][: len(per_seed[a])])
                                  for a, b in comparisons(sizes) if per_seed[a] and per_seed[b]}
        results["peak_rss_mb"] = round(peak_rss_mb(), 1)
        results["total_seconds"] = round(time.monotonic() - started, 1)
        sized = "" if len(sizes) == 1 else "-" + "-".join(map(str, sizes)) + "px"
        write_results(args.out, f"{args.profile}-{results['date']}{sized}{scored_as}", results, title, report(results))

    for seed in args.seeds:
        for name, run_name, stages in (("softmax_only", "softmax_only", staged), ("multiloss", "multiloss", staged),
                                       ("multiloss_polish", "multiloss", config.stage_names())):
            if name == "multiloss_polish" and "polish" not in config.stage_names():
                continue
            for member, size in zip(size_names(name, sizes), sizes):
                run = runs / f"{run_name}-{size}px-seed{seed}"

                def measure() -> dict:
                    trained = train_run(bench, run, variant_config(config, name, seed, size), stages, workers=args.workers)
                    done = trained["state"]["completed"]
                    valid = bench.score(run, "valid", tta="none")
                    return {"seed": seed, "seconds": sum(done[stage]["seconds"] for stage in stages),
                            "test": errors(*bench.score(run, "test", tta)), "valid_top1_err": errors(*valid)["top1_err"],
                            "best": trained["state"]["best"], "run": str(run)}

                per_seed[member].append(recorded(run / f"quality-{name}{scored_as}.json", measure))
            if len(sizes) > 1:
                members = [per_seed[member][-1] for member in size_names(name, sizes)]
                per_seed[name].append(recorded(runs / f"quality-{name}-seed{seed}{scored_as}.json", lambda: ensemble_figures(bench, members, tta)))
            print(name, seed, per_seed[name][-1]["test"]["top1_err"], flush=True)
        publish()
    if args.check_images:
        first = per_seed["multiloss"][0]
        results["image_check"] = bench.check_against_images([Path(r) for r in first.get("runs", [first["run"]])], tta)
        publish()


if __name__ == "__main__":
    main()
