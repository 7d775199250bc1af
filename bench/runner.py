"""What the quality and ablation benchmarks share: the dog photos split three ways, one cached
pass of the frozen tower per split, training runs over seeds, and scoring on the test split.

The split (`siamdog organize --valid-fraction 0.1 --test-fraction 0.2`): train, valid (the best
epoch, early stopping and learning-rate reduction look at it) and test (touched only here, by
the final scoring). Every run is trained by `siamdog.training.trainer.train`, the function
`siamdog train` calls, and scored by its best.keras on the test images. Scoring reads the cached
pass of the frozen front over the test images (as is and mirrored, for TTA) and runs only the
rest of the model: best.keras's front is the untrained ImageNet front that made the cache, so
this gives the image model's predictions (`check_against_images` compares the two on a run or an ensemble).
`--tta crops` adds a second cached test pass, of the zoomed views.
"""

import csv
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from siamdog.files import replace_atomically

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
VALID_FRACTION, TEST_FRACTION = 0.1, 0.2


def scored_views(split: str, tta: str) -> tuple[str, ...]:
    """The views of `split` that scoring with `tta` reads. They are cached in the passes of
    siamdog.training.feature_cache.passes_of: the flip pass (as is and mirrored), plus one of the
    zoomed views for crops. Test without TTA reads the as-is view of the flip pass, which every
    scoring of test shares; valid without TTA reads the training's one-view valid pass."""
    from siamdog.inference import TTA_VIEWS

    return TTA_VIEWS["flip"] if split == "test" and tta == "none" else TTA_VIEWS[tta]


def training_pass_views(config) -> int | tuple[str, ...]:
    """The views of the cached training pass of `config` (at least the image as is, which the
    probe reads even where the config trains on images)."""
    views = config.feature_cache_views
    return tuple(views) if isinstance(views, list) else max(views, 1)


def organized_data(work: Path) -> Path:
    """dogs120 organized three ways under `work` (symbolic links to ../shared), as a user would."""
    dogs = SHARED / "data" / "dogs120"
    if not (dogs / "labels.csv").is_file():
        raise SystemExit(f"skipped: the quality benchmark needs the shared dog photos at {dogs} (not present)")
    data = work / "dogs120-3way"
    command = [sys.executable, "-m", "siamdog.cli", "organize", str(dogs / "train"), str(data), "--labels", str(dogs / "labels.csv"),
               "--link", "sym", "--valid-fraction", str(VALID_FRACTION), "--test-fraction", str(TEST_FRACTION)]
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return data


def data_summary(data: Path) -> dict:
    counts = {f"{split}_images": sum(1 for _ in (data / split).glob("*/*")) for split in ("train", "valid", "test")}
    return {**counts, "classes": sum(1 for p in (data / "train").iterdir() if p.is_dir())}


class Bench:
    """One organized data set and the cached passes of a config's frozen front over it."""

    def __init__(self, data: Path):
        from siamdog.data.batches import list_classes

        self.data = data
        self.classes = list_classes(data / "train")

    def batches(self, split: str, config, image_size: int | None = None):
        """`split`'s photos in file order, at `image_size` (default: the config's)."""
        from siamdog.data.batches import DirectoryBatches

        size = (image_size or config.image_size,) * 2
        return DirectoryBatches(self.data / split, size, config.batch_size, shuffle=False, classes=self.classes)

    def inputs(self, tower, config, split: str, views: int | tuple[str, ...], blocks: int | None = None):
        """Cached inputs of the part of `tower` after its last `blocks` trainable blocks (default:
        where the config's cached front ends, cached_front_blocks), and the labels, for `views` of
        `split` (a count of training views, or their names)."""
        from siamdog.data.augment import Augmentation
        from siamdog.training.feature_cache import stage_inputs
        from siamdog.training.front_engines import FrontEngine
        from siamdog.training.trainer import cached_front_blocks

        front_blocks = cached_front_blocks(config)
        batches = self.batches(split, config)
        augmentation = Augmentation(**dataclasses.asdict(config.augment))
        cut = front_blocks if blocks is None else blocks
        # As in the trainer, only the training pass runs on the configured engine: valid and
        # test go through the Keras front that evaluate and predict run.
        engine = FrontEngine(config.front_engine, calibration=batches) if split == "train" else FrontEngine()
        return stage_inputs(tower, config.backbone, front_blocks, cut, batches, views, augmentation, config.seed, engine=engine), batches.classes

    def view_inputs(self, tower, config, split: str, tta: str, blocks: int | None = None) -> tuple[list[np.ndarray], list[int]]:
        """The cached inputs of each view of `split` that `tta` averages (one array of one view
        each), and the labels."""
        from siamdog.inference import TTA_VIEWS

        views, labels = self.inputs(tower, config, split, scored_views(split, tta), blocks)
        return [views[v : v + 1] for v in range(len(TTA_VIEWS[tta]))], labels

    def passes(self, config, tta: str = "flip") -> dict:
        """The seconds of the cached passes a run of `config` and its scoring with `tta` need,
        by split (see pass_seconds)."""
        return split_seconds(self.pass_seconds(config, tta))

    def pass_seconds(self, config, tta: str = "flip") -> dict[str, dict[str, float]]:
        """Make (or find) the cached passes a run of `config` and its scoring with `tta` need;
        the seconds each took to make when it was made, by split and by its pooled features'
        cache file ({split: {file: seconds}}: one pass, one name, whichever rows read it). A
        run that trains on images reads no training pass; its valid and test passes (pooled
        features) stand for its scoring."""
        from siamdog.models.backbones import build_tower
        from siamdog.training.feature_cache import fill_seconds, passes_of, training_views

        tower = build_tower(config.backbone, config.weights, config.image_size, config.precision)
        seconds = {}
        splits = {"train": training_pass_views(config), "valid": 1, "test": scored_views("test", tta)}
        if not config.feature_cache_views:
            seconds["train"] = {}
            del splits["train"]
        for split, views in splits.items():
            seconds[split] = {}
            for pass_views in passes_of(views):
                # A pass of a training pass's views goes by their count, as the cache names it.
                if not isinstance(pass_views, int) and pass_views == training_views(len(pass_views)):
                    pass_views = len(pass_views)
                self.inputs(tower, config, split, pass_views)
                # Pooled features (heads and the probe), mapped from that pass: their seconds hold its seconds too.
                pooled, _ = self.inputs(tower, config, split, pass_views, blocks=0)
                seconds[split][Path(pooled.filename).stem] = fill_seconds(pooled)
        return seconds

    def score(self, run: Path, split: str = "test", tta: str = "flip", image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, labels) of a run's best.keras on `split` (scored_by_model),
        kept in RUN/scores/SPLIT-TTA.npz (SPLIT-TTA-SIZEpx.npz at another `image_size` than the
        run's) with the seconds the scoring took, while best.keras is the file it scored: another
        invocation that scores the run again (a run on images takes minutes) reads them."""
        kept = self._kept_score(run, split, tta, image_size)
        scored_model = (run / "best.keras").stat().st_mtime_ns
        if kept.is_file():
            with np.load(kept) as scores:
                if int(scores["best_keras_mtime_ns"]) == scored_model:
                    return scores["probabilities"], scores["labels"]
        started = time.monotonic()
        probabilities, labels = self.scored_by_model(run, split, tta, image_size)
        seconds = time.monotonic() - started
        kept.parent.mkdir(exist_ok=True)
        replace_atomically(kept, lambda path: np.savez(path, probabilities=probabilities, labels=np.asarray(labels),
                                                       best_keras_mtime_ns=scored_model, seconds=seconds))
        return probabilities, np.asarray(labels)

    def scoring_seconds(self, run: Path, split: str = "test", tta: str = "flip", image_size: int | None = None) -> float | None:
        """The seconds that the kept score of score() took to make (None: kept before they were)."""
        with np.load(self._kept_score(run, split, tta, image_size)) as scores:
            return float(scores["seconds"]) if "seconds" in scores.files else None

    @staticmethod
    def _kept_score(run: Path, split: str, tta: str, image_size: int | None) -> Path:
        return run / "scores" / (f"{split}-{tta}" + (f"-{image_size}px" if image_size else "") + ".npz")

    def scored_by_model(self, run: Path, split: str, tta: str, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, labels) of a run's best.keras on `split`, from the cached passes,
        or from the images where it trained blocks inside the passes' cached front (a run on
        images) or where they are read at another `image_size` than the run's."""
        from siamdog.config import load_config
        from siamdog.data.features import FeatureBatches
        from siamdog.evaluate import load_run_model
        from siamdog.inference import predict_batches
        from siamdog.models.backbones import split_tower
        from siamdog.models.siamese import heads_of
        from siamdog.training.trainer import cached_front_blocks

        config = load_config(run / "config.yaml")
        if image_size is not None:
            return predict_batches(load_run_model(run, image_size)[0].image_classifier, self.batches(split, config, image_size), tta)
        model, _, _ = load_run_model(run)
        tower = model.tower
        # The tower is ImageNet's up to the blocks that the stage which made best.keras trained:
        # from there on, the model runs on the cached inputs (pooled features for a frozen stage).
        best_stage = json.loads((run / "best.json").read_text())["stage"]
        cut = next(s.trainable_blocks for s in config.stages if s.name == best_stage)
        if cut > cached_front_blocks(config):  # a run on images trained blocks that no pass holds
            return predict_batches(model.image_classifier, self.batches(split, config), tta)
        _, tail = split_tower(tower, config.backbone, cut)
        cached_classifier = heads_of(model, tail).classifier
        views, labels = self.view_inputs(tower, config, split, tta, blocks=cut)
        probabilities = np.mean([
            predict_batches(cached_classifier, FeatureBatches(view, labels, len(self.classes), config.batch_size, shuffle=False))[0]
            for view in views
        ], axis=0)
        return probabilities, labels

    def ensemble_score(self, runs: list[Path], split: str = "test", tta: str = "flip") -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, labels) of several runs as one ensemble, the mean of their
        probabilities, as `siamdog evaluate --model RUN1 RUN2` scores them."""
        scored = [self.score(run, split, tta) for run in runs]
        return np.mean([p for p, _ in scored], axis=0), scored[0][1]

    def check_against_images(self, runs: Path | list[Path], tta: str = "flip") -> dict:
        """How many test images the cached scoring and `tools/evaluate.py` on the images agree
        on, for one run or the ensemble of several (the mean of their probabilities)."""
        from siamdog.config import load_config

        runs = [runs] if isinstance(runs, Path) else list(runs)
        out = runs[0] / "evaluation-images" if len(runs) == 1 else runs[0].parent / ("evaluation-images-" + "-".join(r.name for r in runs))
        command = [sys.executable, "tools/evaluate.py", "--model", *map(str, runs), "--data", str(self.data / "test"), "--out", str(out)]
        command += ["--tta", tta] if tta != "none" else []
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        probabilities, labels = self.ensemble_score(runs, "test", tta)
        filenames = self.batches("test", load_config(runs[0] / "config.yaml")).filenames
        with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
            rows = {row["image"]: row["predicted"] for row in csv.DictReader(f)}
        agree = sum(rows[name] == self.classes[int(p.argmax())] for name, p in zip(filenames, probabilities))
        return {"agree": agree, "images": len(filenames), "command": " ".join(command),
                "top1_err_cached": round(float(np.mean(probabilities.argmax(1) != np.asarray(labels))), 4),
                "top1_err_images": round(json.loads((out / "metrics.json").read_text())["top1_error"], 4)}


def split_seconds(*pass_seconds: dict[str, dict[str, float]]) -> dict[str, float]:
    """The seconds of the cached passes of one or more Bench.pass_seconds by split, a pass that
    several share counted once."""
    return {split: round(sum({k: v for made in pass_seconds for k, v in made[split].items()}.values()), 1) for split in pass_seconds[0]}


def train_run(bench: Bench, run: Path, config, stages: list[str] | None = None, pseudo_labels: dict | None = None, workers: int = 4) -> dict:
    """Train (or resume) a run of `config` in `run`, reading its images with `workers` loader
    threads: its state, the folder of the model to score and the seconds its training took. With `pseudo_labels` ({"threshold": T, "rounds": N}), the
    run goes on with pseudo-label rounds on the test photos, without their labels (as `siamdog
    train --pseudo-labels DATA/test` would): the model is the last round's, and the seconds
    count every round's training and labelling."""
    import keras

    from siamdog.training.pseudo_rounds import round_folder, train_with_pseudo_labels
    from siamdog.training.trainer import train

    keras.backend.clear_session()
    if not pseudo_labels:
        state = train(bench.data, run, config, stages=stages, workers=workers, verbose=0)
        return {"state": state, "run": run, "seconds": training_seconds(state)}
    rounds = pseudo_labels.get("rounds", 1)
    final, state = train_with_pseudo_labels(bench.data, run, config, bench.data / "test", pseudo_labels["threshold"], rounds, stages, workers, verbose=0)
    folders = [run, *(round_folder(run, r) for r in range(1, rounds + 1))]
    seconds = sum(training_seconds(json.loads((folder / "state.json").read_text())) for folder in folders)
    seconds += sum(json.loads((folder / "pseudo-labels.json").read_text())["seconds"] for folder in folders[1:])
    return {"state": state, "run": final, "seconds": round(seconds, 1)}


def training_seconds(state: dict) -> float:
    """A run's time from its state.json: every stage's, and the same-class head's calibration
    on the valid photos that ends a multi-loss run."""
    return sum(v["seconds"] for v in state["completed"].values()) + state.get("verification_seconds", 0.0)


def pseudo_label_figures(round_folder: Path) -> dict:
    """How many test photos a pseudo-label round chose, and how many of their pseudo-labels are
    right: the test photos' class folders are read only to report this, after training."""
    with open(round_folder / "pseudo-labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    right = sum(Path(row["image"]).parent.name == row["class"] for row in rows)
    return {"chosen": len(rows), "right": right, "precision": round(right / len(rows), 4)}


def probe_pipeline(c: float = 1.0, seed: int = 0):
    """The linear probe, unfitted: logistic regression (inverse regularization strength `c`)
    on standardized features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300, random_state=seed))


def fit_probe(train_views: np.ndarray, labels: np.ndarray, c: float = 1.0, seed: int = 0):
    """The probe (`probe_pipeline`) fitted on every view of the training samples:
    `train_views` has shape (views, samples, features)."""
    return probe_pipeline(c, seed).fit(train_views.reshape(-1, train_views.shape[-1]), np.tile(labels, len(train_views)))


def linear_probe(bench: Bench, config, seed: int, tta: str = "flip", c: float = 1.0, split: str = "test") -> tuple[np.ndarray, np.ndarray, float]:
    """The probe (`fit_probe`) on the frozen tower's pooled features of every cached training
    view: (probabilities and labels of `split`, seconds to fit)."""
    from siamdog.models.backbones import build_tower

    tower = build_tower(config.backbone, config.weights, config.image_size, config.precision)
    train_x, train_y = bench.inputs(tower, config, "train", training_pass_views(config), blocks=0)
    scored_views, scored_y = bench.view_inputs(tower, config, split, tta, blocks=0)
    started = time.monotonic()
    probe = fit_probe(np.asarray(train_x), np.asarray(train_y), c, seed)
    seconds = time.monotonic() - started
    return np.mean([probe.predict_proba(np.asarray(view[0])) for view in scored_views], axis=0), scored_y, seconds


def errors(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    return {"top1_err": float(np.mean(probabilities.argmax(1) != labels)),
            "top5_err": float(np.mean(~(top5 == labels[:, None]).any(1))),
            "right": (probabilities.argmax(1) == labels).tolist()}


def summarize(per_seed: list[dict], pass_minutes: float) -> dict:
    """A variant's figures over seeds: mean test errors, the per-seed figures, a 95 % interval
    of the mean top-1 error (Wilson, on the images of all seeds pooled), valid separately."""
    from bench.stats import error_interval

    top1 = [s["test"]["top1_err"] for s in per_seed]
    images = len(per_seed[0]["test"]["right"])
    wrong = sum(images - sum(s["test"]["right"]) for s in per_seed)
    summary = {
        "test_top1_err": round(float(np.mean(top1)), 4),
        "test_top5_err": round(float(np.mean([s["test"]["top5_err"] for s in per_seed])), 4),
        "test_top1_err_seeds": [round(t, 4) for t in top1],
        "test_top1_err_spread": round(float(np.std(top1)), 4),
        "test_top1_ci95": error_interval(wrong, images * len(per_seed)),
        "test_images": images,
        "minutes": round(pass_minutes + float(np.mean([s["seconds"] for s in per_seed])) / 60, 1),
        "seeds": [s["seed"] for s in per_seed],
    }
    if "pseudo_labels" in per_seed[0]:
        summary["pseudo_labels_seeds"] = [s["pseudo_labels"] for s in per_seed]
    valid = [s["valid_top1_err"] for s in per_seed if s.get("valid_top1_err") is not None]
    if valid:
        summary["valid_top1_err"] = round(float(np.mean(valid)), 4)
    return summary


def compare(a: list[dict], b: list[dict]) -> dict:
    """Paired tests of two variants on the test images, seed by seed, and their verdict."""
    from bench.stats import mcnemar, verdict

    tests = [mcnemar(x["test"]["right"], y["test"]["right"]) for x, y in zip(a, b)]
    difference = float(np.mean([x["test"]["top1_err"] - y["test"]["top1_err"] for x, y in zip(a, b)]))
    return {"error_difference_points": round(100 * difference, 2), "mcnemar": tests, "verdict": verdict(tests)}


def recorded(path: Path, measure) -> dict:
    """The figures kept in `path` when a run was first measured, or `measure()`'s, kept there.
    A variant scored before a later stage of its run moved best.keras (multi-loss, then polish)
    keeps its own figures when the benchmark runs again."""
    if path.is_file():
        return json.loads(path.read_text())
    figures = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures))
    return figures
