"""What more inputs give the linear probe on the three-way split: the valid photos added to its
training once they have chosen its regularization, and a second input size's features beside
the first's.

    python bench/probe_inputs.py --sizes 299 400

On bench/runner.py's split of dogs120 and its cached passes of the frozen ImageNet Xception
(`bench/configs/ablation-base.yaml` at each size; pooled features of each photo as is and
mirrored), the probe of the ablation's linear_probe rows (bench.runner.fit_probe) is fitted:
- on the training photos at the first size, C chosen on the valid split (flip TTA) among --c:
  the reference, the ablation's linear_probe_c0001 row when valid picks 0.001;
- on the training and valid photos together, with the C valid chose for the reference (valid
  cannot choose it a second time once it is trained on);
- on the training photos at each further size alone, C chosen on valid;
- on the training photos' features at every size side by side, C chosen on valid again;
- as the mean of the probabilities of the one-size probes (as `siamdog evaluate --model` scores
  runs trained at different sizes).
Each is scored on the test split with flip TTA and compared with the reference by an exact
McNemar test on the same photos. The passes are kept with the ablation's, so a rerun only
refits. Writes bench/results/probe-inputs-<date>.json and .md.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import header, markdown_table, write_results  # noqa: E402
from bench.runner import REPO, Bench, data_summary, errors, fit_probe, organized_data  # noqa: E402
from bench.stats import mcnemar  # noqa: E402
from siamdog.config import config_from_dict, config_to_dict, load_config  # noqa: E402


def pooled_views(bench: Bench, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's pooled features (views as is and mirrored, samples, features) at `size`, and labels."""
    from siamdog.models.backbones import build_tower

    base = load_config(REPO / "bench" / "configs" / "ablation-base.yaml")
    config = config_from_dict({**config_to_dict(base), "image_size": size}, f"image_size {size}")
    tower = build_tower(config.backbone, config.weights, config.image_size, config.precision)
    # The float32 Keras front for every split (ablation-base's engine), so sizes differ in size alone.
    return {split: tuple(np.asarray(a) for a in bench.inputs(tower, config, split, 2, blocks=0)) for split in ("train", "valid", "test")}


def flip_probabilities(probe, views: np.ndarray) -> np.ndarray:
    return np.mean([probe.predict_proba(view) for view in views], axis=0)


def chosen_on_valid(train, valid, grid: list[float]):
    """The C of `grid` whose probe, fitted on `train`, errs least on `valid` (flip), that probe,
    and each C's valid error."""
    probes, valid_err = {}, {}
    for c in grid:
        probes[c] = fit_probe(*train, c)
        valid_err[str(c)] = round(float(np.mean(flip_probabilities(probes[c], valid[0]).argmax(1) != valid[1])), 4)
    best = min(grid, key=lambda c: valid_err[str(c)])
    return best, probes[best], valid_err


def side_by_side(features: list[dict], split: str) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([f[split][0] for f in features], axis=-1), features[0][split][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[299, 400])
    parser.add_argument("--c", type=float, nargs="+", default=[0.0003, 0.001, 0.003], help="scikit-learn's C values valid chooses among")
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    bench = Bench(organized_data(Path(args.work)))
    results = {**header("probe inputs"), **data_summary(bench.data), "sizes": args.sizes, "c_grid": args.c, "variants": {}}
    started = time.monotonic()
    features = [pooled_views(bench, size) for size in args.sizes]
    results["feature_seconds"] = round(time.monotonic() - started, 1)
    first = features[0]
    test_labels = first["test"][1]
    variants, one_size = {}, []  # each variant's right answers; each one-size probe's probabilities

    def score(name: str, probe, test_views: np.ndarray, **figures) -> np.ndarray:
        probabilities = flip_probabilities(probe, test_views)
        record(name, probabilities, **figures)
        return probabilities

    def record(name: str, probabilities: np.ndarray, **figures) -> None:
        measured = errors(probabilities, test_labels)
        variants[name] = measured["right"]
        results["variants"][name] = {"test_top1_err": round(measured["top1_err"], 4), "test_top5_err": round(measured["top5_err"], 4), **figures}
        print(name, results["variants"][name], flush=True)

    reference = f"{args.sizes[0]} px, train"
    c, probe, valid_err = chosen_on_valid(first["train"], first["valid"], args.c)
    one_size.append(score(reference, probe, first["test"][0], c=c, valid_top1_err_by_c=valid_err))
    both = (np.concatenate([first["train"][0], first["valid"][0]], axis=1), np.concatenate([first["train"][1], first["valid"][1]]))
    score(f"{args.sizes[0]} px, train + valid", fit_probe(*both, c), first["test"][0], c=c)
    for size, other in zip(args.sizes[1:], features[1:]):
        c_size, probe_size, valid_err_size = chosen_on_valid(other["train"], other["valid"], args.c)
        one_size.append(score(f"{size} px, train", probe_size, other["test"][0], c=c_size, valid_top1_err_by_c=valid_err_size))
    if len(args.sizes) > 1:
        train, valid, test = (side_by_side(features, split) for split in ("train", "valid", "test"))
        c_sizes, probe_sizes, valid_err_sizes = chosen_on_valid(train, valid, args.c)
        score(f"{'+'.join(map(str, args.sizes))} px side by side, train", probe_sizes, test[0], c=c_sizes,
              valid_top1_err_by_c=valid_err_sizes)
        record(f"{' and '.join(map(str, args.sizes))} px probes' mean, train", np.mean(one_size, axis=0), c="each its own")
    for name in list(variants)[1:]:
        results["variants"][name]["against_reference"] = mcnemar(variants[name], variants[reference])
    results["total_seconds"] = round(time.monotonic() - started, 1)
    rows = [[name, v["c"], f"{v['test_top1_err']:.4f}", f"{v['test_top5_err']:.4f}", v.get("against_reference", {}).get("mcnemar_p", "-")]
            for name, v in results["variants"].items()]
    body = (f"Linear probe on the frozen ImageNet Xception's pooled features, {results['train_images']} training, "
            f"{results['valid_images']} valid and {results['test_images']} test photos of dogs120 (90x90 px, upscaled), flip TTA; "
            f"C chosen on valid among {', '.join(map(str, args.c))} (train + valid keeps the reference's). "
            f"The features took {results['feature_seconds']} s in this run (passes kept by an earlier run are read, not recomputed).\n\n"
            + markdown_table(["probe", "C", "test top-1 err", "test top-5 err", f"McNemar p vs {reference}"], rows))
    write_results(args.out, f"probe-inputs-{results['date']}", results, "What more inputs give the linear probe", body)


if __name__ == "__main__":
    main()
