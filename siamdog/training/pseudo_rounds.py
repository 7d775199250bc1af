"""Pseudo-label rounds: train, label an unlabelled folder with the run's model where it is
confident, and train again on the labelled photos plus those.

    RUN/                     round 0: the run as configured, on the labelled photos
    RUN/pseudo-round-1/      round 1: a run folder of its own (same config, trained from the
                             start), whose model is the one to use after one round
        pseudo-labels.csv    the images the previous round's model labelled, its class and probability
        pseudo-labels.json   the folder, threshold and teacher, and how many images were chosen
        data/                train/ (links to the labelled and the pseudo-labelled photos), valid -> DATA/valid

Each round is an ordinary run, so an interrupted command resumes where it stopped: finished
rounds are skipped, a round's labels are made once. Valid stays the labelled valid split, so
the best epoch of every round is picked on photos with true labels.
"""

import logging
import os
import time
from pathlib import Path

from siamdog.config import TrainConfig
from siamdog.data.batches import index_class_folders
from siamdog.data.pseudo_labels import check_threshold, lay_out_round, read_labels, select_confident, write_labels
from siamdog.errors import SiamdogError
from siamdog.evaluate import list_images, load_classifier, predict_files
from siamdog.files import read_json, write_json
from siamdog.training.trainer import data_folders, train

log = logging.getLogger(__name__)

# The teacher averages each photo as is and mirrored: half the passes of crops, for pseudo-labels
# that only need to be right where the model is already confident.
LABELLING_TTA = "flip"


def round_folder(run_dir: Path, round_number: int) -> Path:
    return Path(run_dir) / f"pseudo-round-{round_number}"


def label_images(teacher: Path, images: list[Path], threshold: float, out: Path, workers: int) -> dict:
    """Label `images` with `teacher`'s model, keep the confident ones in `out/pseudo-labels.csv`
    and say what was kept in `out/pseudo-labels.json` (made once: a resumed round reads them)."""
    summary_file = out / "pseudo-labels.json"
    summary = read_json(summary_file)
    if summary is not None:
        return summary
    started = time.monotonic()
    classifier, classes, _ = load_classifier(teacher)
    probabilities, readable = predict_files(classifier, [str(p) for p in images], workers=workers, tta=LABELLING_TTA)
    chosen, labels = select_confident(probabilities, readable, threshold)
    if not len(chosen):
        raise SiamdogError(
            f"no image reached probability {threshold} under {teacher}'s model (its highest: {probabilities.max():.3f}); lower --threshold"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_labels(out / "pseudo-labels.csv", [str(images[i]) for i in chosen], classes, labels, probabilities[chosen].max(axis=1))
    summary = {"teacher": str(teacher), "threshold": threshold, "tta": LABELLING_TTA, "images": len(images),
               "chosen": int(len(chosen)), "seconds": round(time.monotonic() - started, 1)}
    write_json(summary_file, summary)  # last: it marks the labels as complete
    log.info("pseudo-labels: %d of %d images at probability >= %g (from %s)", len(chosen), len(images), threshold, teacher)
    return summary


def train_with_pseudo_labels(
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: TrainConfig,
    images_dir: str | os.PathLike,
    threshold: float,
    rounds: int = 1,
    stages: list[str] | None = None,
    workers: int = 4,
    verbose: str | int = "auto",
    tensorboard_dir: str | os.PathLike | None = None,
) -> tuple[Path, dict]:
    """Round 0 (the run as configured), then `rounds` pseudo-label rounds on the images under
    `images_dir` (any depth; folder names are ignored), each running `stages` (default: all).
    Returns the last round's run folder and its state. With `tensorboard_dir`, round r logs
    under `tensorboard_dir/pseudo-round-r/`."""
    check_threshold(threshold)
    if rounds < 1:
        raise SiamdogError(f"--rounds must be at least 1, got {rounds}")
    images = list_images(images_dir, recursive=True)
    if not images:
        raise SiamdogError(f"{images_dir}: no image files to pseudo-label")
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    classes = data_folders(data_dir)[2]
    for round_number in range(1, rounds + 1):  # a resumed command must find what it started with
        made = read_json(round_folder(run_dir, round_number) / "pseudo-labels.json")
        if made is not None and (made["threshold"] != threshold or made["images"] != len(images)):
            raise SiamdogError(
                f"{round_folder(run_dir, round_number)} was labelled from {made['images']} images at threshold {made['threshold']}; "
                "use the same --pseudo-labels and --threshold to resume, or another --run"
            )
    state = train(data_dir, run_dir, config, stages, workers=workers, verbose=verbose, tensorboard_dir=tensorboard_dir)
    labelled = len(index_class_folders(data_dir / "train", classes)[0])
    teacher = run_dir
    for round_number in range(1, rounds + 1):
        folder = round_folder(run_dir, round_number)
        summary = label_images(teacher, images, threshold, folder, workers)
        round_data = folder / "data"
        if not round_data.is_dir():  # lay_out_round renames a whole folder into place, or none
            pseudo_images, labels = read_labels(folder / "pseudo-labels.csv", classes)
            lay_out_round(data_dir, round_data, classes, pseudo_images, labels)
        log.info("pseudo-label round %d: %d labelled + %d pseudo-labelled training photos", round_number, labelled, summary["chosen"])
        logs = None if tensorboard_dir is None else Path(tensorboard_dir) / folder.name
        state = train(round_data, folder, config, stages, workers=workers, verbose=verbose, tensorboard_dir=logs)
        teacher = folder
    return teacher, state
