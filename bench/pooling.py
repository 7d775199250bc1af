"""What the pooling of the last feature map gives the linear probe: average (what the tower
outputs today), max, generalized mean (GeM, p 3), average and max side by side, the average
beside block13's averaged output (a second, earlier layer), the average beside the average of
the map's centre (where the dogs tend to be, as crop TTA assumes), and second-order (bilinear)
pooling, the classic of fine-grained recognition (Lin et al., "Bilinear CNN Models for
Fine-grained Visual Recognition", 2015): the map's channels reduced by PCA (fitted on the
training photos' maps) to --bilinear-channels, the mean outer product of each position's
vector with itself, its upper triangle, signed square root and L2 normalization.

    python bench/pooling.py

On bench/runner.py's split of dogs120 and the passes of the frozen ImageNet Xception that
`bench/configs/ablation-base.yaml` caches (the training photos as is, one view to keep the pass
short; valid and test as is and mirrored), block14 is run once more over the cached block14
inputs and every pooling is taken from the same feature maps. Each probe (bench.runner.fit_probe)
has its C chosen on the valid split (flip TTA) among --c, is scored on the test split with flip
TTA and compared with the average pooling's probe by an exact McNemar test on the same photos. Since
one pooling chosen among four by the test split is not a result, each is also checked on the
training photos alone: --folds-fold cross-validation (each photo scored by a probe fitted on the
other folds, at the C valid chose for that pooling), McNemar against the average on all of them.
Writes bench/results/pooling-<date>.json and .md.
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
from bench.probe_inputs import chosen_on_valid, flip_probabilities  # noqa: E402
from bench.runner import REPO, Bench, data_summary, errors, organized_data, probe_pipeline  # noqa: E402
from bench.stats import mcnemar  # noqa: E402
from siamdog.config import load_config  # noqa: E402
from siamdog.inference import TTA_VIEWS  # noqa: E402

GEM_POWER = 3.0
CENTRES = (4, 6)  # sides of the centre squares averaged (of Xception's 10x10 map at 299 px)
# What pooling_part outputs, side by side in this order, and each one's width (Xception).
POOL_WIDTHS = {"avg": 2048, "max": 2048, "gem": 2048, "block13_avg": 1024, **{f"centre{k}_avg": 2048 for k in CENTRES}}
BILINEAR_SAMPLE = 1000  # training photos whose map positions the PCA of the bilinear pooling is fitted on


def last_block(tower, backbone: str):
    """block14's input -> its feature map: from where the last block starts to the input of
    the backbone's average pooling."""
    import keras

    from siamdog.models.backbones import get_backbone

    base = tower.get_layer("base")
    return keras.Model(get_backbone(backbone).tail_input(base, 1), base.layers[-1].input, name="block14")


def pooling_part(tower, backbone: str):
    """block14's input -> its feature map pooled four ways, block13's output averaged and the
    map's centre squares averaged, side by side as POOL_WIDTHS lists them."""
    import keras

    block = last_block(tower, backbone)
    block14_input = keras.Input(block.input_shape[1:], name="block14_input")
    feature_map = block(block14_input)
    gem = keras.ops.power(keras.ops.mean(keras.ops.power(keras.ops.maximum(feature_map, 1e-6), GEM_POWER), axis=(1, 2)), 1.0 / GEM_POWER)
    pools = [keras.ops.mean(feature_map, axis=(1, 2)), keras.ops.max(feature_map, axis=(1, 2)), gem, keras.ops.mean(block14_input, axis=(1, 2))]
    side = block.output_shape[1]
    for k in CENTRES:
        start = (side - k) // 2
        pools.append(keras.ops.mean(feature_map[:, start : start + k, start : start + k], axis=(1, 2)))
    return keras.Model(block14_input, keras.ops.concatenate(pools, axis=-1), name="poolings")


class BilinearPooling:
    """Second-order pooling of feature maps (samples, height, width, channels): each map's
    channels projected by `pca` (fitted on training maps' positions), the mean outer product
    of the projected positions, its upper triangle, signed square root, L2-normalized."""

    def __init__(self, pca):
        self.pca = pca
        self.upper = np.triu_indices(pca.n_components_)

    @classmethod
    def fitted(cls, maps: np.ndarray, channels: int, seed: int = 0) -> "BilinearPooling":
        from sklearn.decomposition import PCA

        chosen = np.sort(np.random.default_rng(seed).choice(len(maps), min(BILINEAR_SAMPLE, len(maps)), replace=False))
        positions = np.asarray(maps[chosen], dtype=np.float32).reshape(-1, maps.shape[-1])
        return cls(PCA(channels, random_state=seed).fit(positions))

    def __call__(self, maps: np.ndarray, chunk: int = 256) -> np.ndarray:
        out = np.empty((len(maps), len(self.upper[0])), np.float32)
        for start in range(0, len(maps), chunk):
            part = np.asarray(maps[start : start + chunk], dtype=np.float32)
            n, height, width, channels = part.shape
            projected = self.pca.transform(part.reshape(-1, channels)).reshape(n, height * width, -1)
            second = np.einsum("npi,npj->nij", projected, projected)[:, self.upper[0], self.upper[1]] / (height * width)
            rooted = np.sign(second) * np.sqrt(np.abs(second))
            out[start : start + n] = rooted / np.maximum(np.linalg.norm(rooted, axis=1, keepdims=True), 1e-12)
        return out


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, c: float, folds: int) -> np.ndarray:
    """Each sample's probabilities from a probe fitted on the other folds (`features`: samples, features)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    return cross_val_predict(probe_pipeline(c), features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=0), method="predict_proba")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", type=float, nargs="+", default=[0.0003, 0.001, 0.003], help="scikit-learn's C values valid chooses among")
    parser.add_argument("--bilinear-channels", type=int, default=128, help="channels the bilinear pooling reduces the map to")
    parser.add_argument("--bilinear-c", type=float, nargs="+", default=[0.01, 0.1, 1.0],
                        help="the C values valid chooses among for the bilinear pooling (unit-norm features of another scale)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    from siamdog.models.backbones import build_tower
    from siamdog.training.feature_cache import cached_mapping

    bench = Bench(organized_data(Path(args.work)))
    config = load_config(REPO / "bench" / "configs" / "ablation-base.yaml")
    tower = build_tower(config.backbone, config.weights, config.image_size, config.precision)
    part = pooling_part(tower, config.backbone)
    offsets = dict(zip(POOL_WIDTHS, np.cumsum([0, *POOL_WIDTHS.values()])))
    bilinear = f"bilinear (PCA {args.bilinear_channels})"
    poolings = {"avg": ["avg"], "max": ["max"], f"gem (p {GEM_POWER:g})": ["gem"], "avg + max": ["avg", "max"],
                "avg + block13 avg": ["avg", "block13_avg"], **{f"avg + centre {k}x{k} avg": ["avg", f"centre{k}_avg"] for k in CENTRES},
                bilinear: ["bilinear"]}
    results = {**header("pooling"), **data_summary(bench.data), "c_grid": args.c, "bilinear_c_grid": args.bilinear_c, "variants": {}}
    started = time.monotonic()
    features, labels, maps = {}, {}, {}  # by split; features by pooling name
    for split in ("train", "valid", "test"):
        views = TTA_VIEWS["none"] if split == "train" else TTA_VIEWS["flip"]
        block14_inputs, labels[split] = bench.inputs(tower, config, split, views, blocks=1)
        pooled = np.asarray(cached_mapping(part, block14_inputs, config.batch_size))
        features[split] = {n: pooled[..., offsets[n] : offsets[n] + POOL_WIDTHS[n]] for n in POOL_WIDTHS}
        maps[split] = cached_mapping(last_block(tower, config.backbone), block14_inputs, config.batch_size)
    second_order = BilinearPooling.fitted(maps["train"][0], args.bilinear_channels)
    for split, split_maps in maps.items():
        features[split]["bilinear"] = np.stack([second_order(view) for view in split_maps])
    results["feature_seconds"] = round(time.monotonic() - started, 1)

    def columns(split: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([features[split][n] for n in names], axis=-1), np.asarray(labels[split])

    right, cross_validated_right = {}, {}  # each pooling's right answers on test and cross-validated
    for name, parts in poolings.items():
        c, probe, valid_err = chosen_on_valid(columns("train", parts), columns("valid", parts), args.bilinear_c if name == bilinear else args.c)
        test_views, test_labels = columns("test", parts)
        measured = errors(flip_probabilities(probe, test_views), test_labels)
        train_views, train_labels = columns("train", parts)
        cross_validated = errors(out_of_fold_probabilities(train_views[0], train_labels, c, args.folds), train_labels)
        right[name], cross_validated_right[name] = measured["right"], cross_validated["right"]
        results["variants"][name] = {"features": train_views.shape[-1], "c": c, "valid_top1_err_by_c": valid_err,
                                     "test_top1_err": round(measured["top1_err"], 4), "test_top5_err": round(measured["top5_err"], 4),
                                     "cross_validated_top1_err": round(cross_validated["top1_err"], 4)}
        print(name, results["variants"][name], flush=True)
    for name in list(poolings)[1:]:
        results["variants"][name]["against_avg"] = mcnemar(right[name], right["avg"])
        results["variants"][name]["cross_validated_against_avg"] = mcnemar(cross_validated_right[name], cross_validated_right["avg"])
    results["total_seconds"] = round(time.monotonic() - started, 1)
    rows = [[name, v["features"], v["c"], f"{v['test_top1_err']:.4f}", f"{v['test_top5_err']:.4f}", v.get("against_avg", {}).get("mcnemar_p", "-"),
             f"{v['cross_validated_top1_err']:.4f}", v.get("cross_validated_against_avg", {}).get("mcnemar_p", "-")]
            for name, v in results["variants"].items()]
    body = (f"Linear probe on the frozen ImageNet Xception at {config.image_size} px, {results['train_images']} training, "
            f"{results['valid_images']} valid and {results['test_images']} test photos of dogs120 (90x90 px, upscaled), flip TTA; "
            f"C chosen on valid among {', '.join(map(str, args.c))} ({', '.join(map(str, args.bilinear_c))} for the bilinear pooling). The features took {results['feature_seconds']} s in this run "
            "(passes kept by an earlier run are read, not recomputed).\n\n"
            + markdown_table(["pooling", "features", "C", "test top-1 err", "test top-5 err", "McNemar p vs avg",
                              f"training photos, {args.folds}-fold cross-validated top-1 err", "McNemar p vs avg"], rows))
    write_results(args.out, f"pooling-{results['date']}", results, "What the pooling gives the linear probe", body)


if __name__ == "__main__":
    main()
