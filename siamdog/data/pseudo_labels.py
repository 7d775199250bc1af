"""Pseudo-labels: a trained model's confident predictions on unlabelled photos, laid out as
extra training photos for the next round of training.

Choosing them is a pure function of the predicted probabilities; the next round's data folder
is made of links (`train/<class>/` holds the labelled photos and the pseudo-labelled ones,
`valid` is the labelled data's own valid split), so nothing is copied and model selection
still sees only labelled photos.
"""

import csv
import os
import shutil
from pathlib import Path

import numpy as np

from siamdog.errors import SiamdogError
from siamdog.files import TEMP_PREFIX

PSEUDO_PREFIX = "pseudo-"  # the names of pseudo-labelled photos in a round's class folders
DEFAULT_THRESHOLD = 0.9  # `siamdog train --pseudo-labels` without --threshold


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise SiamdogError(f"--threshold must be a probability above 0 and at most 1, got {threshold}")


def select_confident(probabilities: np.ndarray, readable: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the readable images whose most likely class has at least `threshold`
    probability, in their order, and that class for each."""
    check_threshold(threshold)
    probabilities = np.asarray(probabilities)
    chosen = np.flatnonzero(np.asarray(readable, dtype=bool) & (probabilities.max(axis=1) >= threshold))
    return chosen, probabilities[chosen].argmax(axis=1)


def write_labels(path: Path, images: list[str], classes: list[str], labels: np.ndarray, probabilities: np.ndarray) -> None:
    """`image,class,probability` rows, one per pseudo-labelled image."""
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "class", "probability"])
        for image, label, probability in zip(images, labels, probabilities):
            writer.writerow([image, classes[int(label)], f"{float(probability):.4f}"])


def read_labels(path: Path, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """The images and class indices that `write_labels` wrote."""
    index = {name: i for i, name in enumerate(classes)}
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    unknown = sorted({row["class"] for row in rows} - set(index))
    if unknown:
        raise SiamdogError(f"{path}: names classes the model does not have: {', '.join(unknown[:5])}")
    return [row["image"] for row in rows], np.asarray([index[row["class"]] for row in rows], dtype=np.int64)


def lay_out_round(data_dir: Path, out: Path, classes: list[str], images: list[str], labels: np.ndarray) -> Path:
    """`out` as an organized data folder: `train/<class>/` links to every labelled training
    photo of `data_dir` and to the pseudo-labelled `images` (named `pseudo-<k>-<name>`, so they
    never clash with a labelled photo's name), and `valid` links to `data_dir/valid`. Made
    under a temporary name and renamed, so an interrupted layout is made again, whole."""
    data_dir = Path(data_dir).resolve()
    tmp = out.with_name(TEMP_PREFIX + out.name)
    shutil.rmtree(tmp, ignore_errors=True)
    for name in classes:
        (tmp / "train" / name).mkdir(parents=True)
        labelled = data_dir / "train" / name
        if labelled.is_dir():
            for entry in os.scandir(labelled):
                if entry.is_file():
                    os.symlink(os.path.realpath(entry.path), tmp / "train" / name / entry.name)
    for k, (image, label) in enumerate(zip(images, labels)):
        os.symlink(os.path.realpath(image), tmp / "train" / classes[int(label)] / f"{PSEUDO_PREFIX}{k:06d}-{Path(image).name}")
    os.symlink(data_dir / "valid", tmp / "valid", target_is_directory=True)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
