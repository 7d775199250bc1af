"""Beyond one photo's class: "do these two photos show one class?" and "which photos of a
collection look most like this one?", from the parts every run saves beside `best.keras`
(`best-embedding.keras`: image -> features; for multi-loss runs `best-same-class.keras`: two
images' features -> probability of one class). `verify` and `embed` rebuild the run's model
from its config.yaml with the weights of best.keras instead, to read a photo's features and
class probabilities in one pass of the tower.

"Same class?" has three answers (ANSWERS), each with a threshold chosen on pairs of valid
photos when the run's training ends (`verification.json`).

An index (`siamdog embed`) is a folder: `embeddings.npy` (one L2-normalized feature row per
image), `images.csv` (path, predicted class, its probability) and `index.json` (the run and the
collection it was made from). Search finds the nearest rows by cosine distance with
scikit-learn's NearestNeighbors.
"""

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from siamdog.data.batches import index_class_folders
from siamdog.data.images import DEFAULT_MAX_PIXELS, UnreadableImage, load_image
from siamdog.data.pairing import ANSWERS, DEFAULT_ANSWER, best_threshold, verification_pairs
from siamdog.errors import SiamdogError
from siamdog.evaluate import list_images, load_run_model, predict_files, resolve_model
from siamdog.files import read_json, write_bytes, write_json
from siamdog.inference import predict_batch
from siamdog.models.siamese import SiamdogModel
from siamdog.training.run_folder import RunPaths

PAIR_BATCH = 4096  # pairs the same-class head scores at once: small arrays of features


def _run_paths(run: str | os.PathLike) -> RunPaths:
    model_file, _ = resolve_model(run)
    return RunPaths(model_file.parent)


def _load_saved(path: Path, why_missing: str) -> keras.Model:
    if not path.is_file():
        raise SiamdogError(f"{path}: missing; {why_missing} (runs trained with this version save it beside best.keras)")
    return keras.saving.load_model(path, compile=False)


def load_embedder(run: str | os.PathLike) -> keras.Model:
    """The run's photo -> features model, saved with best.keras."""
    return _load_saved(_run_paths(run).best_embedder, "it turns a photo into the features the heads read")


def load_same_class(run: str | os.PathLike) -> keras.Model:
    """The run's same-class head (two photos' features -> probability), saved with best.keras."""
    return _load_saved(_run_paths(run).best_same_class, "only multi-loss runs have a same-class head")


def same_class_head_of(run: str | os.PathLike, model: SiamdogModel) -> keras.Model | None:
    """The run's saved same-class head, or None for a softmax-only run (`model`: load_run_model's)."""
    return None if model.same_class is None else load_same_class(run)


def features_and_probabilities(embedder: keras.Model, classifier: keras.Model) -> tuple[keras.Model, int]:
    """One model for what an embedder and a classifier on the same input give apart, from one
    pass of the tower: the features, then the class probabilities, side by side in one output
    (the form predict_files reads); and the features' width, where the probabilities begin."""
    both = keras.layers.Concatenate()([embedder.output, classifier.output])
    return keras.Model(embedder.input, both, name="features_and_probabilities"), embedder.output_shape[-1]


def _load_one(path: str | os.PathLike, size, max_pixels: int) -> np.ndarray:
    try:
        return load_image(path, size, max_pixels).astype(np.float32)[None]
    except UnreadableImage as e:
        raise SiamdogError(f"{path}: {e}") from None


@dataclass
class Verification:
    answer: str  # the name in ANSWERS of the answer that gives the verdict
    scores: dict[str, float]  # the pair's score by each answer the run has
    thresholds: dict[str, float | None]  # from which each answer says "same class" (None: not calibrated)
    top_classes: list[tuple[str, float]]  # each photo's most likely class and its probability

    @property
    def same(self) -> bool:
        return self.scores[self.answer] >= self.thresholds[self.answer]

    def summary(self, names: list[str]) -> str:
        verdict = "same class" if self.same else "different classes"
        lines = [f"{verdict}, by {ANSWERS[self.answer].description}: {self.scores[self.answer]:.4f} (threshold {self.thresholds[self.answer]:.4f})"]
        for answer, score in self.scores.items():
            if answer != self.answer:
                threshold = self.thresholds[answer]
                says = "no threshold" if threshold is None else f"threshold {threshold:.4f}: {'same' if score >= threshold else 'different'}"
                lines.append(f"{ANSWERS[answer].description}: {score:.4f} ({says})")
        lines += [f"{name}: {label} ({p:.4f})" for name, (label, p) in zip(names, self.top_classes)]
        return "\n".join(lines)


def calibrate_verification(run: str | os.PathLike, valid_dir: str | os.PathLike, workers: int = 4, progress: bool = False) -> dict:
    """Score each answer the run has on pairs of valid photos (every same-class pair and as
    many other-class pairs), choose for each the threshold that classifies most of them right,
    and write the thresholds with their accuracies and ROC AUCs to `verification.json` in the
    run folder."""
    model, classes, _ = load_run_model(run)
    readings = labelled_readings(model, valid_dir, classes, workers, progress)
    return calibrate_on_readings(run, *readings, valid_dir, same_class_head_of(run, model))


def labelled_readings(model: SiamdogModel, folder: str | os.PathLike, classes: list[str], workers: int = 4, progress: bool = False):
    """(features, class probabilities, class indices) of the readable photos of `folder`'s
    class folders, from one pass of `model`'s tower each (load_run_model's model)."""
    filenames, labels = index_class_folders(folder, classes)
    both, width = features_and_probabilities(model.embedder, model.image_classifier)
    outputs, readable = predict_files(both, [os.path.join(folder, f) for f in filenames], workers=workers, progress=progress)
    return outputs[readable, :width], outputs[readable, width:], labels[readable]


def calibrate_on_readings(
    run: str | os.PathLike, features: np.ndarray, probabilities: np.ndarray, labels: np.ndarray, valid_dir: str | os.PathLike,
    same_class: keras.Model | None,
) -> dict:
    """calibrate_verification on the features and class probabilities of the valid photos (a
    row per photo, its class index in `labels`) where the caller already has them: the trainer,
    from its cached pass. `same_class`: the run's same-class head, None for a softmax-only run."""
    pairs, same = verification_pairs(labels)
    answers = {}
    for answer, scores in pair_scores(features, probabilities, pairs, same_class).items():
        threshold, accuracy = best_threshold(scores, same)
        roc_auc = float(roc_auc_score(same, scores)) if 0 < same.mean() < 1 else None
        answers[answer] = {"threshold": threshold, "accuracy": accuracy, "roc_auc": roc_auc}
    result = {"answers": answers, "pairs": len(same), "same_class_pairs": int(same.sum()), "data": str(valid_dir)}
    write_json(_run_paths(run).verification, result)
    return result


def pair_scores(features: np.ndarray, probabilities: np.ndarray, pairs: np.ndarray, same_class: keras.Model | None = None) -> dict[str, np.ndarray]:
    """Each pair (i, j) of rows of `features` and `probabilities` scored by each answer in
    ANSWERS that the run has (the head only with `same_class`)."""
    scores = {"agreement": classifier_agreement(probabilities, pairs), "cosine": feature_cosine(features, pairs)}
    if same_class is not None:
        scores["head"] = same_class_probabilities(same_class, features, pairs)
    return scores


def same_class_probabilities(same_class: keras.Model, features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The same-class head's probability for each pair (i, j) of rows of `features`."""
    first, second = features[pairs[:, 0]], features[pairs[:, 1]]
    return np.concatenate(
        [predict_batch(same_class, [first[i : i + PAIR_BATCH], second[i : i + PAIR_BATCH]]) for i in range(0, len(pairs), PAIR_BATCH)]
    )[:, 0]


def classifier_agreement(probabilities: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """For each pair (i, j): the chance that photos i and j show one class by the classifier
    alone, the sum over classes of the products of their class probabilities."""
    return np.sum(probabilities[pairs[:, 0]] * probabilities[pairs[:, 1]], axis=1)


def feature_cosine(features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """For each pair (i, j): the cosine of the angle between feature rows i and j (what search ranks by)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return np.sum(unit[pairs[:, 0]] * unit[pairs[:, 1]], axis=1)


def calibrated_answers(run: str | os.PathLike) -> dict[str, dict]:
    """What calibrate_verification wrote for the run, by answer: threshold, accuracy, ROC AUC
    on the valid pairs; empty for a run never calibrated by this version."""
    return (read_json(_run_paths(run).verification) or {}).get("answers", {})


def verify(
    run: str | os.PathLike, first: str, second: str, answer: str = DEFAULT_ANSWER, threshold: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Verification:
    """Whether two photos show one class by `answer` (a name in ANSWERS), at `threshold`, by
    default the one chosen on the valid split at the end of training; the pair's score by every
    answer the run has, and each photo's top class."""
    if answer not in ANSWERS:
        raise SiamdogError(f"--by must be one of {', '.join(ANSWERS)}, got {answer}")
    _, low, high = ANSWERS[answer]
    if threshold is not None and not low <= threshold <= high:
        raise SiamdogError(f"--threshold must be between {low:g} and {high:g} for --by {answer}, got {threshold}")
    model, classes, _ = load_run_model(run)
    same_class = same_class_head_of(run, model)
    if answer == "head" and same_class is None:
        raise SiamdogError(f"{run}: a softmax-only run has no same-class head; answer --by agreement or --by cosine")
    thresholds = {name: figures["threshold"] for name, figures in calibrated_answers(run).items()}
    if threshold is not None:
        thresholds[answer] = threshold
    if answer not in thresholds:
        raise SiamdogError(f"{run}: no threshold chosen on valid pairs for --by {answer} (run the run's `siamdog train` "
                           "command again to calibrate a run trained before this version), or give --threshold")
    size = tuple(model.image_classifier.input_shape[1:3])
    images = np.concatenate([_load_one(path, size, max_pixels) for path in (first, second)])
    both, width = features_and_probabilities(model.embedder, model.image_classifier)
    outputs = predict_batch(both, images)
    scores = pair_scores(outputs[:, :width], outputs[:, width:], np.array([[0, 1]]), same_class)
    top = [(classes[int(p.argmax())], float(p.max())) for p in outputs[:, width:]]
    return Verification(answer, {name: float(s[0]) for name, s in scores.items()}, {name: thresholds.get(name) for name in scores}, top)


def embed(
    run: str | os.PathLike,
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    recursive: bool = False,
    batch_size: int = 32,
    workers: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> tuple[int, list[str]]:
    """Index every readable image of `folder` into `out_dir`; returns (count, skipped paths)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SiamdogError(f"--out {out_dir} is a file; give a folder for the index")
    model, classes, model_file = load_run_model(run)
    paths = [str(p) for p in list_images(folder, recursive)]
    if not paths:
        raise SiamdogError(f"{folder}: no images")
    both, width = features_and_probabilities(model.embedder, model.image_classifier)
    outputs, readable = predict_files(both, paths, batch_size, workers, max_pixels, progress)
    skipped = [p for p, ok in zip(paths, readable) if not ok]
    kept = [p for p, ok in zip(paths, readable) if ok]
    if not kept:
        raise SiamdogError(f"{folder}: no readable image")
    features, probabilities = outputs[readable, :width], outputs[readable, width:]
    features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "embeddings.npy", "wb") as f:
        np.save(f, features.astype(np.float32))
    with open(out_dir / "images.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "predicted", "probability"])
        for path, p in zip(kept, probabilities):
            writer.writerow([os.path.abspath(path), classes[int(p.argmax())], f"{p.max():.4f}"])
    index = {"model": str(model_file.resolve()), "folder": str(Path(folder).resolve()), "images": len(kept)}
    write_bytes(out_dir / "index.json", json.dumps(index, indent=1).encode())  # last: marks the index complete
    return len(kept), skipped


@dataclass
class Neighbour:
    image: str
    distance: float  # cosine distance: 0 for the same direction, 2 for the opposite
    predicted: str


def search(index_dir: str | os.PathLike, query: str, k: int = 5, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Neighbour]:
    """The `k` images of an index nearest to `query`, nearest first."""
    index_dir = Path(index_dir)
    try:
        index = json.loads((index_dir / "index.json").read_text())
        features = np.load(index_dir / "embeddings.npy")
        with open(index_dir / "images.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError) as e:
        raise SiamdogError(f"{index_dir}: not a complete index made by `siamdog embed` ({e})") from None
    if k < 1:
        raise SiamdogError(f"--k must be at least 1, got {k}")
    embedder = load_embedder(index["model"])
    query_features = predict_batch(embedder, _load_one(query, tuple(embedder.input_shape[1:3]), max_pixels))
    finder = NearestNeighbors(n_neighbors=min(k, len(rows)), metric="cosine").fit(features)
    distances, indices = finder.kneighbors(query_features)
    return [Neighbour(rows[i]["image"], float(d), rows[i]["predicted"]) for d, i in zip(distances[0], indices[0])]
