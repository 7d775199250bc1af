"""Pseudo-label rounds: choosing the confident predictions, laying out the next round's data,
and `siamdog train --pseudo-labels` end to end on the demo set."""

import csv
import json
import os

import numpy as np
import pytest

from siamdog.data.pseudo_labels import lay_out_round, read_labels, select_confident, write_labels
from siamdog.errors import SiamdogError
from tests.conftest import STAGES, make_class_folders, tiny_config


def test_only_readable_images_at_the_threshold_are_chosen_with_their_top_class():
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.05, 0.95], [0.7, 0.3]])
    readable = np.array([True, True, True, False, True])
    chosen, labels = select_confident(probabilities, readable, 0.7)
    assert chosen.tolist() == [0, 2, 4] and labels.tolist() == [0, 1, 0]
    assert select_confident(probabilities, readable, 1.0)[0].tolist() == []


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5])
def test_a_threshold_that_is_not_a_probability_is_refused(threshold):
    with pytest.raises(SiamdogError, match="--threshold must be a probability"):
        select_confident(np.ones((1, 2)) / 2, np.ones(1, bool), threshold)


def test_labels_read_back_as_written_and_unknown_classes_are_refused(tmp_path):
    classes = ["beagle", "corgi", "pug"]
    write_labels(tmp_path / "labels.csv", ["/a/x.jpg", "/b/y,z.jpg"], classes, np.array([2, 0]), np.array([0.93, 0.912345]))
    images, labels = read_labels(tmp_path / "labels.csv", classes)
    assert images == ["/a/x.jpg", "/b/y,z.jpg"] and labels.tolist() == [2, 0]
    with pytest.raises(SiamdogError, match="pug"):
        read_labels(tmp_path / "labels.csv", ["beagle", "corgi"])


def test_a_round_links_the_labelled_photos_and_the_pseudo_labelled_ones_and_keeps_valid(tmp_path):
    data = tmp_path / "data"
    make_class_folders(data / "train", {"a": 2, "b": 3})
    make_class_folders(data / "valid", {"a": 1, "b": 1})
    unlabelled = make_class_folders(tmp_path / "unlabelled", {"x": 2})
    photos = sorted(str(p) for p in unlabelled.glob("*/*"))
    (tmp_path / "round").mkdir()
    (tmp_path / "round" / "stale").write_text("from an interrupted layout")
    out = lay_out_round(data, tmp_path / "round", ["a", "b"], photos, np.array([1, 1]))
    assert sorted(p.name for p in (out / "train" / "a").iterdir()) == ["a-000.png", "a-001.png"]
    names = sorted(p.name for p in (out / "train" / "b").iterdir())
    assert names == ["b-000.png", "b-001.png", "b-002.png", "pseudo-000000-x-000.png", "pseudo-000001-x-001.png"]
    assert os.path.realpath(out / "train" / "b" / "pseudo-000001-x-001.png") == os.path.realpath(photos[1])
    assert (out / "valid").is_symlink() and os.path.realpath(out / "valid") == os.path.realpath(data / "valid")
    assert not (out / "stale").exists() and not list(tmp_path.glob(".tmp-*"))


@pytest.fixture(scope="module")
def pseudo_run(demo, tmp_path_factory):
    from siamdog.training.pseudo_rounds import train_with_pseudo_labels

    run = tmp_path_factory.mktemp("pseudo") / "run"
    config = tiny_config(mode="softmax", feature_cache_views=2, stages=[{**STAGES[0], "epochs": 3}])
    final, state = train_with_pseudo_labels(demo / "data", run, config, demo / "test", threshold=0.6, workers=2, verbose=0)
    return run, final, state, config


def test_a_round_trains_on_the_photos_its_teacher_labelled_confidently(pseudo_run, demo):
    from siamdog.evaluate import load_classifier, predict_files

    run, final, state, config = pseudo_run
    assert final == run / "pseudo-round-1" and (final / "best.keras").is_file() and (run / "best.keras").is_file()
    assert set(state["completed"]) == {"heads"}
    with open(final / "pseudo-labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((final / "pseudo-labels.json").read_text())
    assert summary["images"] == len(list((demo / "test").glob("*/*"))) and summary["chosen"] == len(rows) > 0
    # The labels are the teacher's (round 0's) predictions with flip TTA, every one at the threshold.
    teacher, classes, _ = load_classifier(run)
    every = sorted(str(p) for p in (demo / "test").glob("*/*"))
    probabilities, _ = predict_files(teacher, every, progress=False, tta="flip")
    confident = [path for path, p in zip(every, probabilities) if p.max() >= 0.6]
    assert [row["image"] for row in rows] == confident
    by_path = dict(zip(every, probabilities))
    for row in rows:
        assert row["class"] == classes[int(by_path[row["image"]].argmax())]
        assert float(row["probability"]) == pytest.approx(by_path[row["image"]].max(), abs=1e-4)
    # Its training folder holds every labelled photo and the chosen ones; valid is the labelled one.
    labelled = len(list((demo / "data" / "train").glob("*/*")))
    assert len(list((final / "data" / "train").glob("*/*"))) == labelled + len(rows)
    assert len(list((final / "data" / "train").glob("*/pseudo-*"))) == len(rows)
    assert os.path.realpath(final / "data" / "valid") == os.path.realpath(demo / "data" / "valid")
    # The valid pass is the labelled data's (one pass, not one per round); the round's training pass is its own.
    assert not list((final / "data" / ".siamdog-cache").glob("valid-*"))
    assert list((final / "data" / ".siamdog-cache").glob("train-*"))


def test_a_finished_pseudo_label_command_resumes_to_nothing_and_other_settings_are_refused(pseudo_run, demo, caplog):
    from siamdog.training.pseudo_rounds import train_with_pseudo_labels

    run, final, state, config = pseudo_run
    labels_before = (final / "pseudo-labels.csv").read_bytes()
    with caplog.at_level("INFO"):
        again, again_state = train_with_pseudo_labels(demo / "data", run, config, demo / "test", threshold=0.6, workers=2, verbose=0)
    assert again == final and again_state == state and (final / "pseudo-labels.csv").read_bytes() == labels_before
    assert caplog.text.count("already complete; nothing to do") == 2
    with pytest.raises(SiamdogError, match="threshold 0.6"):
        train_with_pseudo_labels(demo / "data", run, config, demo / "test", threshold=0.8, workers=2, verbose=0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pseudo-labels", "{test}", "--threshold", "1.5"], "--threshold must be a probability above 0 and at most 1, got 1.5"),
        (["--pseudo-labels", "{test}", "--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--pseudo-labels", "{empty}"], "no image files to pseudo-label"),
        (["--threshold", "0.8"], "--threshold: only with --pseudo-labels DIR"),
        (["--rounds", "2", "--threshold", "0.8"], "--threshold and --rounds: only with --pseudo-labels DIR"),
    ],
)
def test_pseudo_label_settings_that_cannot_work_are_one_line_errors_before_any_work(demo, tmp_path, capsys, args, message):
    from siamdog.cli import main

    (tmp_path / "empty").mkdir()
    args = [a.format(test=demo / "test", empty=tmp_path / "empty") for a in args]
    run = tmp_path / "run"
    assert main(["train", "--data", str(demo / "data"), "--run", str(run), "--weights", "none", "--image-size", "71", *args]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not run.exists()
