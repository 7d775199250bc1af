"""What only a Siamese model offers: "do these two photos show one class?" and "which photos of a
collection look most like this one?", from the parts every run saves beside `best.keras`
(`best-embedding.keras`: image -> features; `best-same-class.keras`: two images' features ->
probability of one class). `verify` and `embed` rebuild the run's model from its config.yaml
with the weights of best.keras instead, to read a photo's features and class probabilities in
one pass of the tower.

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
from siamdog.data.pairing import best_threshold, verification_pairs
from siamdog.errors import SiamdogError
from siamdog.evaluate import list_images, load_run_model, predict_files, resolve_model
from siamdog.files import read_json, write_bytes, write_json
from siamdog.inference import predict_batch
from siamdog.models.siamese import SiamdogModel
from siamdog.training.run_folder import RunPaths

DEFAULT_THRESHOLD = 0.5
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


def features_and_probabilities(model: SiamdogModel) -> tuple[keras.Model, int]:
    """One model for what the embedder and the classifier give apart, from one pass of the
    tower: the features, then the class probabilities, side by side in one output (the form
    predict_files reads); and the features' width, where the probabilities begin."""
    both = keras.layers.Concatenate()([model.embedder.output, model.image_classifier.output])
    return keras.Model(model.embedder.input, both, name="features_and_probabilities"), model.embedder.output_shape[-1]


def _load_one(path: str | os.PathLike, size, max_pixels: int) -> np.ndarray:
    try:
        return load_image(path, size, max_pixels).astype(np.float32)[None]
    except UnreadableImage as e:
        raise SiamdogError(f"{path}: {e}") from None


@dataclass
class Verification:
    probability: float  # that the two photos show one class, by the same-class head
    threshold: float
    top_classes: list[tuple[str, float]]  # each photo's most likely class and its probability
    # The same by the classifier alone, for photos of its classes: the sum over classes of the
    # products of the photos' probabilities. It separates held-out pairs of dog breeds better
    # than the head (ROC AUC in bench/README.md, "Same breed or not").
    classifier_agreement: float

    @property
    def same(self) -> bool:
        return self.probability >= self.threshold

    def summary(self, names: list[str]) -> str:
        verdict = "same class" if self.same else "different classes"
        lines = [f"{verdict}: probability {self.probability:.4f} (threshold {self.threshold:.2f})",
                 f"classifier agreement: {self.classifier_agreement:.4f} (the chance of one class by the classifier, if both show one of its classes)"]
        lines += [f"{name}: {label} ({p:.4f})" for name, (label, p) in zip(names, self.top_classes)]
        return "\n".join(lines)


def calibrate_verification(run: str | os.PathLike, valid_dir: str | os.PathLike, workers: int = 4, progress: bool = False) -> dict:
    """Score the run's same-class head on pairs of valid photos (every same-class pair and as
    many other-class pairs), choose the threshold that classifies most of them right, and write
    it with the ROC AUC and accuracies to `verification.json` in the run folder."""
    _, classes = resolve_model(run)
    embedder = load_embedder(run)
    filenames, labels = index_class_folders(valid_dir, classes)
    features, readable = predict_files(embedder, [os.path.join(valid_dir, f) for f in filenames], workers=workers, progress=progress)
    return calibrate_on_features(run, features[readable], labels[readable], valid_dir)


def calibrate_on_features(run: str | os.PathLike, features: np.ndarray, labels: np.ndarray, valid_dir: str | os.PathLike) -> dict:
    """calibrate_verification on the features of the valid photos (one row per photo, its class
    index in `labels`) where the caller already has them: the trainer, from its cached pass."""
    pairs, same = verification_pairs(labels)
    probabilities = same_class_probabilities(load_same_class(run), features, pairs)
    threshold, accuracy = best_threshold(probabilities, same)
    result = {
        "threshold": threshold,
        "accuracy": accuracy,
        "accuracy_at_0.5": float(np.mean((probabilities >= 0.5) == (same > 0.5))),
        "roc_auc": float(roc_auc_score(same, probabilities)) if 0 < same.mean() < 1 else None,
        "pairs": len(same),
        "same_class_pairs": int(same.sum()),
        "data": str(valid_dir),
    }
    write_json(_run_paths(run).verification, result)
    return result


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


def saved_verification(run: str | os.PathLike) -> dict | None:
    """What calibrate_verification wrote for the run, if anything."""
    return read_json(_run_paths(run).verification)


def verify(run: str | os.PathLike, first: str, second: str, threshold: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Verification:
    """The same-class head's probability for two photos, and each photo's top class. The
    threshold defaults to the one chosen on the valid split at the end of training."""
    if threshold is None:
        threshold = (saved_verification(run) or {}).get("threshold", DEFAULT_THRESHOLD)
    if not 0.0 <= threshold <= 1.0:
        raise SiamdogError(f"--threshold must be between 0 and 1, got {threshold}")
    same_class = load_same_class(run)  # first: a softmax-only run has none
    model, classes, _ = load_run_model(run)
    size = tuple(model.image_classifier.input_shape[1:3])
    images = np.concatenate([_load_one(path, size, max_pixels) for path in (first, second)])
    both, width = features_and_probabilities(model)
    outputs = predict_batch(both, images)
    features, probabilities = outputs[:, :width], outputs[:, width:]
    pair = np.array([[0, 1]])
    probability = float(same_class_probabilities(same_class, features, pair)[0])
    top = [(classes[int(p.argmax())], float(p.max())) for p in probabilities]
    return Verification(probability, threshold, top, float(classifier_agreement(probabilities, pair)[0]))


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
    both, width = features_and_probabilities(model)
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
