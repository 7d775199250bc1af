"""Scoring a saved classifier on labelled class folders, and predicting labels for a folder."""

import csv
import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score
from tqdm import tqdm

from siamdog.config import load_config
from siamdog.data.batches import index_class_folders, list_classes
from siamdog.data.labels import match_folders
from siamdog.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, UnreadableImage, load_image
from siamdog.errors import SiamdogError
from siamdog.files import read_json, write_json
from siamdog.inference import predict_images
from siamdog.models.backbones import build_tower
from siamdog.models.ensemble import average_classifiers
from siamdog.models.siamese import SiamdogModel, build_model
from siamdog.plots import plot_confusion_matrix
from siamdog.report import ReportInputs, ScoredImages, write_report
from siamdog.training.run_folder import RunPaths

log = logging.getLogger(__name__)


def resolve_model(path: str | os.PathLike) -> tuple[Path, list[str]]:
    """The `.keras` file of a run directory or model path, and its class names (from the
    `classes.txt` beside it)."""
    path = Path(path)
    model_file = path / "best.keras" if path.is_dir() else path
    if not model_file.is_file():
        raise SiamdogError(f"{model_file}: no such model file (give a run folder or a .keras file)")
    classes_file = model_file.parent / "classes.txt"
    if not classes_file.is_file():
        raise SiamdogError(f"{classes_file}: missing; it names the classes of {model_file.name}")
    return model_file, classes_file.read_text(encoding="utf-8").splitlines()


def load_classifier(path: str | os.PathLike, image_size: int | None = None) -> tuple[keras.Model, list[str], Path]:
    """The saved classifier, its class names, and the `.keras` file it came from; with
    `image_size`, the classifier rebuilt to read photos at that size (load_run_model)."""
    if image_size is not None:
        model, classes, model_file = load_run_model(path, image_size)
        return model.image_classifier, classes, model_file
    model_file, classes = resolve_model(path)
    try:
        model = keras.saving.load_model(model_file, compile=False)
    except (ValueError, OSError) as e:
        raise SiamdogError(f"{model_file}: not a siamdog model ({e})") from e
    if model.output_shape[-1] != len(classes):
        raise SiamdogError(f"{model_file} has {model.output_shape[-1]} outputs but classes.txt names {len(classes)} classes")
    return model, classes, model_file


def load_run_model(run: str | os.PathLike, image_size: int | None = None) -> tuple[SiamdogModel, list[str], Path]:
    """A run's model rebuilt from its config.yaml and given the weights of its best.keras, its
    class names and that file: every part as an object, for what needs more than one of them.
    `image_size`: the size it reads photos at, by default the one it trained at. The tower is
    convolutional and pools its last feature map, so its weights fit any size; a model trained
    with zoom augmentation can see better a little above its training size (bench/README.md)."""
    model_file, classes = resolve_model(run)
    config_file = RunPaths(model_file.parent).config
    if not config_file.is_file():
        raise SiamdogError(f"{config_file}: missing; the model is rebuilt from its run's config.yaml (give the run folder)")
    config = load_config(config_file)
    tower = build_tower(config.backbone, None, image_size or config.image_size, config.precision)
    model = build_model(config.mode, tower, len(classes), config.dropout, config.embedding_size, auxiliary_head=config.auxiliary_head)
    try:
        model.image_classifier.load_weights(model_file)
    except (ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise SiamdogError(f"{model_file}: does not fit the model of its config.yaml ({reason})") from None
    return model, classes, model_file


def load_classifiers(models: str | os.PathLike | list, image_size: int | None = None) -> tuple[keras.Model, list[str], list[Path]]:
    """One classifier, or the ensemble of several (the mean of their probabilities); its class
    names and the `.keras` files it came from. An ensemble's members must name the same classes
    in the same order; they may take different input sizes (see average_classifiers), unless
    `image_size` sets one for all (load_classifier)."""
    paths = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    loaded = [load_classifier(path, image_size) for path in paths]
    _, classes, first_file = loaded[0]
    for model, member_classes, model_file in loaded[1:]:
        if member_classes != classes:
            raise SiamdogError(f"{model_file} and {first_file} name different classes (or orders); an ensemble's models must share classes.txt")
    classifiers = [model for model, _, _ in loaded]
    classifier = classifiers[0] if len(classifiers) == 1 else average_classifiers(classifiers)
    return classifier, classes, [model_file for _, _, model_file in loaded]


def predict_files(
    classifier: keras.Model,
    paths: list[str],
    batch_size: int = 32,
    workers: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    tta: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities for each readable file (averaged over the views of `tta`, see
    siamdog.inference), and a mask of which files were readable; one warning names the first
    unreadable file and the count."""
    size = tuple(classifier.input_shape[1:3])
    probabilities = np.zeros((len(paths), classifier.output_shape[-1]), dtype=np.float32)
    readable = np.zeros(len(paths), dtype=bool)
    reasons: dict[str, str] = {}

    def load(path):
        try:
            return load_image(path, size, max_pixels)
        except UnreadableImage as e:
            reasons[path] = str(e)
            return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
        total=len(paths), desc="predict", unit="img", disable=not progress
    ) as bar:
        for start in range(0, len(paths), batch_size):
            images = list(pool.map(load, paths[start : start + batch_size]))
            ok = [k for k, image in enumerate(images) if image is not None]
            if ok:
                batch = np.stack([images[k] for k in ok]).astype(np.float32)
                probabilities[start + np.asarray(ok)] = predict_images(classifier, batch, tta)
                readable[start + np.asarray(ok)] = True
            bar.update(len(images))
    if reasons:
        first = next(p for p in paths if p in reasons)
        log.warning("skipped %d unreadable image(s) of %d; first: %s (%s)", len(reasons), len(paths), first, reasons[first])
    return probabilities, readable


@dataclass
class Evaluation:
    top1_error: float
    top5_error: float
    count: int
    report: str
    num_classes: int
    skipped: int = 0
    unknown_classes: list[str] = field(default_factory=list)
    verification: dict | None = None  # the run's answers to "same class?" on valid pairs (verification.json)

    def summary(self) -> str:
        lines = [f"top-1 error: {self.top1_error:.4f} (chance: {1 - 1 / self.num_classes:.4f}, {self.num_classes} classes)"]
        if self.num_classes > 5:  # with five classes or fewer the true one is always in the top five
            lines.append(f"top-5 error: {self.top5_error:.4f}")
        lines.append(f"images: {self.count}" + (f" ({self.skipped} unreadable skipped)" if self.skipped else ""))
        if self.unknown_classes:
            lines.append(f"ignored folders of classes the model does not know: {', '.join(self.unknown_classes)}")
        if self.verification and "answers" in self.verification:
            lines.append(f"same class or not, on {self.verification['pairs']} pairs of the valid split (at training), by siamdog verify --by:")
            for answer, f in self.verification["answers"].items():
                auc = f"ROC AUC {f['roc_auc']:.4f}, " if f["roc_auc"] is not None else ""
                lines.append(f"  {answer}: {auc}accuracy {f['accuracy']:.4f} at threshold {f['threshold']:.4f}")
        return "\n".join(lines)


def score_folder(
    classifier: keras.Model,
    classes: list[str],
    data_dir: Path,
    class_map: dict[str, str],
    batch_size: int,
    workers: int,
    max_pixels: int,
    progress: bool,
    tta: str,
) -> tuple[ScoredImages, int, list[str]]:
    """The readable images of `data_dir/<class>/` with their labels and probabilities, the
    count of unreadable ones, and the folders of classes the model does not know."""
    try:
        folders, folder_labels, unknown = match_folders(list_classes(data_dir), classes, class_map)
    except ValueError as e:
        raise SiamdogError(f"class map: {e}") from None
    filenames, by_folder = index_class_folders(data_dir, folders)
    labels = np.asarray(folder_labels, dtype=np.int64)[by_folder]
    if unknown:
        log.warning("%s: ignoring %d folder(s) of classes the model does not know: %s", data_dir, len(unknown), ", ".join(unknown))
    if not filenames:
        raise SiamdogError(f"{data_dir}: no images in folders named after the model's classes (map other names with --class-map)")
    probabilities, readable = predict_files(
        classifier, [str(data_dir / f) for f in filenames], batch_size, workers, max_pixels, progress, tta
    )
    if not readable.any():
        raise SiamdogError(f"{data_dir}: no readable image")
    scored = ScoredImages(
        root=str(data_dir),
        filenames=[f for f, ok in zip(filenames, readable) if ok],
        labels=labels[readable],
        probabilities=probabilities[readable],
    )
    return scored, int((~readable).sum()), unknown


def write_predictions(path: Path, images: ScoredImages, classes: list[str]) -> None:
    """One line per image: its given class, the predicted one and its probability, and the
    probability of the given class."""
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "true", "predicted", "probability", "correct", "probability_of_true"])
        for name, true, probs in zip(images.filenames, images.labels, images.probabilities):
            best = int(probs.argmax())
            writer.writerow([name, classes[true], classes[best], f"{probs[best]:.4f}", int(best == true), f"{probs[true]:.4f}"])


def evaluate(
    model: str | os.PathLike | list,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    workers: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    tta: str = "none",
    class_map: dict[str, str] | None = None,
    train_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> Evaluation:
    """Score the classifier (or the ensemble of several: a list of models) on
    `data_dir/<class>/` images; write predictions.csv, confusion_matrix.png, metrics.json and
    report.html into `out_dir` (default: `evaluation/` beside a single model; an ensemble
    needs one).

    `class_map` names the model class of folders named otherwise (see parse_class_map).
    `train_dir` (the run's training folder) is scored too, for the report's label-error
    candidates; its predictions go to train_predictions.csv. `image_size`: the size the
    photos are read at, by default each model's training size (load_run_model).
    """
    classifier, classes, model_files = load_classifiers(model, image_size)
    if out_dir is None and len(model_files) > 1:
        raise SiamdogError("an ensemble's evaluation has no run folder to go in: give --out")
    options = dict(class_map=class_map or {}, batch_size=batch_size, workers=workers, max_pixels=max_pixels, progress=progress, tta=tta)
    test, skipped, unknown = score_folder(classifier, classes, Path(data_dir), **options)
    training = score_folder(classifier, classes, Path(train_dir), **options)[0] if train_dir is not None else None
    predicted = test.probabilities.argmax(axis=1)
    everything = np.arange(len(classes))
    # With five classes or fewer the true class is always among the top five.
    top5 = top_k_accuracy_score(test.labels, test.probabilities, k=5, labels=everything) if len(classes) > 5 else 1.0
    report = classification_report(
        test.labels, predicted, labels=everything, target_names=classes, digits=3, zero_division=0
    )
    result = Evaluation(
        top1_error=float(np.mean(predicted != test.labels)),
        top5_error=float(1.0 - top5),
        count=len(test.labels),
        report=report,
        num_classes=len(classes),
        skipped=skipped,
        unknown_classes=unknown,
        verification=read_json(RunPaths(model_files[0].parent).verification) if len(model_files) == 1 else None,
    )
    out_dir = Path(out_dir) if out_dir is not None else model_files[0].parent / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.csv", test, classes)
    if training is not None:
        write_predictions(out_dir / "train_predictions.csv", training, classes)
    matrix = confusion_matrix(test.labels, predicted, labels=everything)
    plot_confusion_matrix(matrix, classes, out_dir / "confusion_matrix.png")
    metrics = {k: v for k, v in dataclasses.asdict(result).items() if k != "report"}
    models = [str(f) for f in model_files]
    write_json(str(out_dir / "metrics.json"), {**metrics, "model": models[0] if len(models) == 1 else models, "data": str(data_dir), "tta": tta,
                                              "image_size": int(classifier.input_shape[1])})
    precision, recall, _, _ = precision_recall_fscore_support(test.labels, predicted, labels=everything, zero_division=0)
    write_report(out_dir / "report.html", ReportInputs(
        title=f"siamdog evaluation of {' + '.join(f'{f.parent.name}/{f.name}' for f in model_files)} on {Path(data_dir).name}",
        headline=[*result.summary().splitlines(), f"model: {' + '.join(models)}" + (" (the mean of their probabilities)" if len(models) > 1 else ""),
                  f"data: {data_dir} at {classifier.input_shape[1]} px" + (f" (TTA: {tta})" if tta != "none" else "")],
        classes=classes, matrix=matrix, precision=precision, recall=recall, test=test, training=training,
    ))
    return result


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and its subfolders with `recursive`), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SiamdogError(f"{folder}: no such folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def image_ids(paths: list[Path], folder: Path) -> list[str]:
    """Each image's id: its path inside `folder` without the extension. Two files with one id
    (a.jpg, a.png) would make two lines that a scorer cannot tell apart, so they are refused."""
    ids = [p.relative_to(folder).with_suffix("").as_posix() for p in paths]
    seen: dict[str, Path] = {}
    for image_id, path in zip(ids, paths):
        if image_id in seen:
            raise SiamdogError(f"{seen[image_id].name} and {path.name} share the image id {image_id!r}; rename one of them")
        seen[image_id] = path
    return ids


def check_output_file(out_file: Path) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if out_file.is_dir():
        raise SiamdogError(f"{out_file}: is a folder; give a file name for the predictions")
    if out_file.parent.exists() and not os.access(out_file.parent, os.W_OK):
        raise SiamdogError(f"{out_file.parent}: cannot write there")


PREDICTION_FORMATS = ("submission", "csv")


def predict(
    model: str | os.PathLike | list,
    images_dir: str | os.PathLike,
    out_file: str | os.PathLike,
    batch_size: int = 32,
    workers: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    tta: str = "none",
    recursive: bool = False,
    top_k: int = 1,
    fmt: str = "submission",
    image_size: int | None = None,
) -> tuple[int, list[str]]:
    """Label the images in `images_dir` with a classifier or an ensemble (a list of models);
    returns (predictions written, ids of unreadable images).

    `submission`: `label<TAB>image_id` lines, the Baidu competition's format (the top class).
    `csv`: `image_id,label_1,probability_1,...,label_k,probability_k` with a header.
    `image_size`: as evaluate's.
    """
    out_file, images_dir = Path(out_file), Path(images_dir)
    if fmt not in PREDICTION_FORMATS:
        raise SiamdogError(f"unknown format {fmt!r} (choose from {', '.join(PREDICTION_FORMATS)})")
    if fmt == "submission" and top_k != 1:
        raise SiamdogError("the submission format has one label per image; use --format csv for --top-k")
    check_output_file(out_file)
    paths = list_images(images_dir, recursive)
    if not paths:
        hint = "" if recursive else " (images in subfolders are read with --recursive)"
        raise SiamdogError(f"{images_dir}: no image files{hint}")
    ids = image_ids(paths, images_dir)
    classifier, classes, _ = load_classifiers(model, image_size)
    if not 1 <= top_k <= len(classes):
        raise SiamdogError(f"--top-k must be between 1 and the number of classes ({len(classes)}), got {top_k}")
    probabilities, readable = predict_files(classifier, [str(p) for p in paths], batch_size, workers, max_pixels, progress, tta)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        if fmt == "csv":
            writer = csv.writer(f)
            writer.writerow(["image_id", *[f"{name}_{k}" for k in range(1, top_k + 1) for name in ("label", "probability")]])
        for image_id, probs, ok in zip(ids, probabilities, readable):
            if not ok:
                continue
            best = np.argsort(-probs)[:top_k]
            if fmt == "csv":
                writer.writerow([image_id, *[v for i in best for v in (classes[i], f"{probs[i]:.4f}")]])
            else:
                f.write(f"{classes[int(best[0])]}\t{image_id}\n")
    return int(readable.sum()), [image_id for image_id, ok in zip(ids, readable) if not ok]
