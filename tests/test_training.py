"""End-to-end: organize -> train (all stages) -> evaluate / predict, on the generated demo set.

The tower is randomly initialized (weights "none") at 71 px, so these runs take seconds per
epoch on a CPU; the classes are still learnable well above chance.
"""

import csv
import json
import logging
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from siamdog.cli import build_parser, main
from siamdog.config import load_config
from siamdog.errors import SiamdogError
from siamdog.evaluate import evaluate
from siamdog.training.trainer import train
from tests.conftest import NUM_CLASSES, STAGES, read_history, tiny_config


@pytest.fixture(scope="module")
def trained_run(demo) -> Path:
    run = demo / "run"
    train(demo / "data", run, tiny_config(), workers=2, verbose=0)
    return run


def test_all_stages_run_and_leave_a_complete_run_folder(trained_run):
    state_text = (trained_run / "state.json").read_text()
    for stage in ("heads", "finetune", "polish"):
        assert f'"{stage}"' in state_text
        assert (trained_run / "checkpoints" / f"{stage}.weights.h5").is_file()
        rows = read_history(trained_run, stage)
        assert rows and {"val_accuracy", "val_loss", "loss"} <= set(rows[0])
    assert "positive_pair_fraction" in read_history(trained_run, "finetune")[0]
    assert load_config(trained_run / "config.yaml") == tiny_config()
    assert (trained_run / "classes.txt").read_text().splitlines() == ["bluetriangle", "greensquare", "reddisc", "yellowring"]
    assert (trained_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not any((trained_run / "backup").glob("*/*")), "finished stages leave no backup behind"
    verification = json.loads((trained_run / "verification.json").read_text())
    assert verification["pairs"] == 2 * verification["same_class_pairs"] > 0
    assert set(verification["answers"]) == {"agreement", "cosine", "head"}, "a multi-loss run has every answer"
    answers = verification["answers"]
    assert all(0 <= f["roc_auc"] <= 1 and 0 <= f["accuracy"] <= 1 for f in answers.values())
    # A constant answer gets half the balanced pairs right; the classifier tells the demo's
    # classes apart (test_it_learns_far_below_chance), so the answers read from it do far better.
    assert min(answers["agreement"]["accuracy"], answers["cosine"]["accuracy"]) >= 0.75
    assert json.loads(state_text)["verification_seconds"] > 0, "the calibration's time is part of the run's"
    model = keras.saving.load_model(trained_run / "best.keras")
    assert len(model.inputs) == 1 and model.output_shape == (None, NUM_CLASSES)


def test_it_learns_far_below_chance(trained_run, demo):
    result = evaluate(trained_run, demo / "test", out_dir=demo / "eval", progress=False)
    chance = 1 - 1 / NUM_CLASSES
    assert result.count == NUM_CLASSES * 8
    assert result.top1_error <= 0.35, f"top-1 error {result.top1_error} vs chance {chance}"


def test_evaluate_cli_prints_the_headline_first_and_writes_files(trained_run, demo, tmp_path, capsys):
    assert main(["evaluate", "--model", str(trained_run), "--data", str(demo / "test"), "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("top-1 error: ")
    assert lines[1] == "images: 32", "no top-5 error for 4 classes: the true class is always in the top five"
    assert any("precision" in line and "recall" in line for line in lines)
    assert any(line.strip().startswith("reddisc") for line in lines)
    assert any(line.startswith("same class or not, on") and "pairs of the valid split" in line for line in lines)
    assert any(line.startswith("  head: ROC AUC ") and " at threshold " in line for line in lines)
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and set(rows[0]) == {"image", "true", "predicted", "probability", "correct", "probability_of_true"}
    error = 1 - sum(int(r["correct"]) for r in rows) / len(rows)
    assert lines[0].startswith(f"top-1 error: {error:.4f}")
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["top1_error"] == pytest.approx(error) and metrics["count"] == 32


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [  # headless as root, and no calls home on a machine without a network
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def test_the_report_renders_its_tables_and_images_in_a_browser(trained_run, demo, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"needs Chromium at {CHROMIUM} (Debian package chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (the test extra)")
    from siamdog.report import least_likely_labels

    evaluate(trained_run, demo / "test", out_dir=tmp_path, progress=False, train_dir=demo / "data" / "train")
    with open(tmp_path / "train_predictions.csv", newline="") as f:
        training = list(csv.DictReader(f))
    with open(tmp_path / "predictions.csv", newline="") as f:
        wrong = sum(1 for row in csv.DictReader(f) if row["correct"] == "0")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((tmp_path / "report.html").as_uri())
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert images and all(done and width > 0 and height > 0 for done, width, height in images), "every thumbnail decodes"
        assert page.locator(".errors img").count() == min(wrong, 24)
        candidates = page.locator(".label-candidates figure")
        assert candidates.count() == min(len(training), 24)
        for table, rows in (("table.per-class", NUM_CLASSES + 1), ("table.confusion", NUM_CLASSES + 1)):
            assert page.locator(f"{table} tr").count() == rows
            assert page.locator(f"{table} tr").last.bounding_box()["height"] > 0, f"{table} is laid out"
        assert page.get_by_text("top-1 error:").is_visible()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        first = candidates.first
        rendered = cv2.imdecode(np.frombuffer(first.locator("img").screenshot(), np.uint8), cv2.IMREAD_COLOR)
        browser.close()
    screenshot = cv2.imread(str(tmp_path / "report.png"))
    assert screenshot.shape[1] == 1280 and screenshot.shape[0] > 900, "the full page, taller than the window"
    assert screenshot.std() > 20, "the page shows more than a blank background"
    # The first candidate as the browser drew it looks like its photo: the training image with
    # the least likely label, whose colours the thumbnail must carry.
    probabilities = np.array([[float(row["probability_of_true"])] for row in training])
    least = training[int(least_likely_labels(probabilities, np.zeros(len(training), dtype=int), 1)[0])]
    photo = cv2.imread(str(demo / "data" / "train" / least["image"]))
    assert rendered.shape[0] > 100 and np.abs(rendered.mean(axis=(0, 1)) - photo.mean(axis=(0, 1))).max() < 12


def _saved_as_run(model: keras.Model, folder: Path, classes: list[str]) -> Path:
    """`model` as a run folder that evaluate reads: best.keras and classes.txt."""
    folder.mkdir(parents=True)
    model.save(folder / "best.keras")
    (folder / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return folder


def _perturbed_copy(run: Path, folder: Path, classes: list[str], seed: int) -> Path:
    """best.keras of `run` with its class layer's kernel shifted at random, and `classes` beside it."""
    model = keras.saving.load_model(run / "best.keras", compile=False)
    kernel = next(w for w in reversed(model.weights) if len(w.shape) == 2 and w.shape[-1] == len(classes))
    kernel.assign(np.asarray(kernel) + np.random.default_rng(seed).normal(0, 1.0, kernel.shape).astype("float32"))
    return _saved_as_run(model, folder, classes)


def test_several_models_are_scored_as_the_mean_of_their_probabilities(trained_run, demo, tmp_path, capsys):
    from siamdog.evaluate import load_classifiers, predict_files
    from siamdog.models.ensemble import average_classifiers

    classes = (trained_run / "classes.txt").read_text().splitlines()
    other = _perturbed_copy(trained_run, tmp_path / "other", classes, seed=0)
    paths = [str(p) for p in sorted((demo / "test").rglob("*.jpg"))]
    ensemble, ensemble_classes, files = load_classifiers([trained_run, other])
    assert ensemble_classes == classes and files == [trained_run / "best.keras", other / "best.keras"]
    members = [predict_files(load_classifiers(m)[0], paths, progress=False, tta="flip")[0] for m in (trained_run, other)]
    assert not np.allclose(*members), "the two members differ"
    np.testing.assert_allclose(predict_files(ensemble, paths, progress=False, tta="flip")[0], np.mean(members, axis=0), atol=1e-5)
    loaded = [load_classifiers(m)[0] for m in (trained_run, other)]
    names = [m.name for m in loaded]
    average_classifiers(loaded)
    assert [m.name for m in loaded] == names, "an ensemble leaves its members' names alone"

    command = ["evaluate", "--model", str(trained_run), str(other), "--data", str(demo / "test")]
    assert main(command) == 2
    assert capsys.readouterr().err.strip() == "siamdog evaluate: error: an ensemble's evaluation has no run folder to go in: give --out"
    assert main([*command, "--out", str(tmp_path / "eval"), "--tta", "flip"]) == 0
    assert capsys.readouterr().out.startswith("top-1 error: ")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["model"] == [str(f) for f in files] and metrics["verification"] is None and metrics["tta"] == "flip"
    truth = np.array([classes.index(Path(p).parent.name) for p in paths])
    assert metrics["top1_error"] == pytest.approx(np.mean(np.mean(members, axis=0).argmax(1) != truth))

    reordered = _perturbed_copy(trained_run, tmp_path / "reordered", classes[::-1], seed=1)
    assert main(["predict", "--model", str(trained_run), str(reordered), "--images", str(demo / "test"), "--out", str(tmp_path / "s.txt"), "--recursive"]) == 2
    assert "name different classes" in capsys.readouterr().err


def test_evaluate_scores_folders_named_otherwise_through_a_class_map(trained_run, demo, tmp_path, capsys):
    renamed = tmp_path / "test"
    classes = (trained_run / "classes.txt").read_text().splitlines()
    for number, name in enumerate(classes):
        shutil.copytree(demo / "test" / name, renamed / f"type{number}")
    (tmp_path / "map.tsv").write_text("".join(f"type{n}\t{name}\n" for n, name in enumerate(classes)))
    command = ["evaluate", "--model", str(trained_run), "--data", str(renamed)]
    assert main([*command, "--out", str(tmp_path / "a")]) == 2
    assert "--class-map" in capsys.readouterr().err
    assert main([*command, "--out", str(tmp_path / "b"), "--class-map", str(tmp_path / "map.tsv")]) == 0
    assert main(["evaluate", "--model", str(trained_run), "--data", str(demo / "test"), "--out", str(tmp_path / "c")]) == 0
    mapped, direct = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("b", "c"))
    assert mapped["count"] == direct["count"] == 32 and mapped["top1_error"] == direct["top1_error"]
    (tmp_path / "bad.csv").write_text("type0,no-such-class\n")
    capsys.readouterr()
    assert main([*command, "--class-map", str(tmp_path / "bad.csv")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no-such-class is not among the model's classes" in error


def test_verify_scores_a_pair_by_each_answer_symmetrically_with_each_photo_s_class(trained_run, demo, capsys):
    from siamdog.similarity import verify

    a, b = sorted((demo / "test" / "reddisc").iterdir())[:2]
    c = sorted((demo / "test" / "bluetriangle").iterdir())[0]
    forth, back = verify(trained_run, str(a), str(c)), verify(trained_run, str(c), str(a))
    assert set(forth.scores) == {"agreement", "cosine", "head"} and forth.answer == "agreement"
    assert forth.scores == pytest.approx(back.scores, abs=1e-6)
    # The same classes; their probabilities to float32 rounding (a photo's position in the batch
    # may change the kernel's summation order on some CPUs).
    assert [label for label, _ in forth.top_classes] == [label for label, _ in back.top_classes[::-1]]
    assert [p for _, p in forth.top_classes] == pytest.approx([p for _, p in back.top_classes[::-1]], abs=1e-6)
    # Identical features differ by zero: the head's output is then its bias alone, and their cosine 1.
    bias = float(keras.saving.load_model(trained_run / "best-same-class.keras").layers[-1].bias.numpy()[0])
    itself = verify(trained_run, str(a), str(a))
    assert itself.scores["head"] == pytest.approx(1 / (1 + np.exp(-bias)), abs=1e-6) and itself.scores["cosine"] == pytest.approx(1, abs=1e-5)
    assert itself.scores["agreement"] >= itself.top_classes[0][1] ** 2, "the sum of the squares holds the top class's"
    calibrated = {answer: f["threshold"] for answer, f in json.loads((trained_run / "verification.json").read_text())["answers"].items()}
    assert forth.thresholds == pytest.approx(calibrated), "the thresholds chosen on valid pairs by default"

    assert main(["verify", str(trained_run), str(a), str(b), "--by", "head", "--threshold", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("same class, by the same-class head: ") and lines[0].endswith("(threshold 0.0000)")
    assert lines[1].startswith("the classifier's agreement: ") and lines[2].startswith("the cosine of the features: ")
    assert f"threshold {calibrated['agreement']:.4f}: " in lines[1]
    assert lines[3].startswith(f"{a}: ") and len(lines) == 5
    assert main(["verify", str(trained_run), str(a), str(b)]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert ", by the classifier's agreement: " in first_line and first_line.endswith(f"(threshold {calibrated['agreement']:.4f})")
    assert main(["verify", str(trained_run), str(a), str(demo / "missing.jpg")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["verify", str(trained_run), str(a), str(b), "--by", "cosine", "--threshold", "-0.5"]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("same class, by the cosine of the features: ") and first_line.endswith("(threshold -0.5000)")
    for by, threshold in (("cosine", "1.5"), ("cosine", "-1.5"), ("head", "-0.5"), ("agreement", "2")):
        assert main(["verify", str(trained_run), str(a), str(b), "--by", by, "--threshold", threshold]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "--threshold must be between" in error and f"for --by {by}, got" in error


def test_embed_and_search_find_a_photo_itself_first(trained_run, demo, tmp_path, capsys):
    assert main(["embed", str(trained_run), str(demo / "test"), "--recursive", "--out", str(tmp_path / "index")]) == 0
    assert "indexed 32 images" in capsys.readouterr().out
    with open(tmp_path / "index" / "images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and {r["predicted"] for r in rows} <= set((trained_run / "classes.txt").read_text().split())
    # One pass of the tower gives what the saved embedder and classifier give apart.
    from siamdog.evaluate import load_classifier, predict_files
    from siamdog.similarity import load_embedder

    paths = [r["image"] for r in rows]
    features = predict_files(load_embedder(trained_run), paths, progress=False)[0]
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(np.load(tmp_path / "index" / "embeddings.npy"), features, atol=1e-5)
    probabilities = predict_files(load_classifier(trained_run)[0], paths, progress=False)[0]
    classes = (trained_run / "classes.txt").read_text().split()
    assert [r["predicted"] for r in rows] == [classes[k] for k in probabilities.argmax(1)]
    assert [float(r["probability"]) for r in rows] == pytest.approx(probabilities.max(1), abs=1e-4)
    query = sorted((demo / "test" / "yellowring").iterdir())[3]
    assert main(["search", str(tmp_path / "index"), str(query), "--k", "4"]) == 0
    found = capsys.readouterr().out.splitlines()
    assert len(found) == 4 and found[0].startswith(f"1. {query}  distance 0.0000")
    distances = [float(line.split("distance ")[1].split()[0]) for line in found]
    assert distances == sorted(distances)
    assert main(["search", str(tmp_path), str(query)]) == 2, "not an index"


def test_evaluate_script_runs_from_a_checkout(trained_run, demo, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "tools" / "evaluate.py"
    done = subprocess.run(
        [sys.executable, str(script), "--model", str(trained_run / "best.keras"), "--data", str(demo / "test"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("top-1 error: ")


def test_predict_writes_the_submission_format(trained_run, demo, tmp_path, capsys):
    images = tmp_path / "unlabelled"
    images.mkdir()
    for path in sorted((demo / "test").rglob("*.jpg"))[:5]:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "submission.txt"
    assert main(["predict", "--model", str(trained_run), "--images", str(images), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    classes = set((trained_run / "classes.txt").read_text().split())
    assert len(lines) == 5
    for line in lines:
        label, image_id = line.split("\t")
        assert label in classes and (images / f"{image_id}.jpg").exists()
    assert main(["predict", "--model", str(trained_run), "--images", str(images), "--out", str(out), "--tta", "crops"]) == 0
    assert build_parser().parse_args(["predict", "--model", "m", "--images", "i", "--out", "o", "--tta"]).tta == "crops", "a bare --tta is crops"
    assert [line.split("\t")[1] for line in out.read_text().splitlines()] == [line.split("\t")[1] for line in lines]
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(trained_run), "--images", str(images), "--out", str(out), "--tta", "sideways"])
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


def test_predict_refuses_what_would_make_a_wrong_submission_before_any_work(trained_run, demo, tmp_path, capsys):
    images = tmp_path / "unlabelled"
    sample = sorted((demo / "test").rglob("*.jpg"))[0]
    (images / "sub").mkdir(parents=True)
    (images / "a.jpg").write_bytes(sample.read_bytes())
    (images / "a.png").write_bytes(cv2.imencode(".png", cv2.imread(str(sample)))[1].tobytes())
    base = ["predict", "--model", str(trained_run), "--images", str(images)]
    assert main([*base, "--out", str(tmp_path / "s.txt")]) == 2
    assert "a.jpg and a.png share the image id 'a'" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "s.txt"), "--top-k", "3"]) == 2
    assert "--format csv" in capsys.readouterr().err


def test_predict_names_what_it_skipped_reads_subfolders_and_writes_top_k(trained_run, demo, tmp_path, capsys):
    images = tmp_path / "unlabelled"
    for k, path in enumerate(sorted((demo / "test").rglob("*.jpg"))[:3]):
        (images / ("sub" if k else "")).mkdir(parents=True, exist_ok=True)
        (images / ("sub" if k else "") / f"dog{k}.jpg").write_bytes(path.read_bytes())
    (images / "sub" / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "top.csv"
    command = ["predict", "--model", str(trained_run), "--images", str(images), "--out", str(out), "--format", "csv", "--top-k", "2"]
    assert main(command) == 0
    assert "no image files" not in capsys.readouterr().err
    assert [r["image_id"] for r in csv.DictReader(out.open())] == ["dog0"], "without --recursive, subfolders are not read"
    assert main([*command, "--recursive"]) == 0
    assert "skipped 1 unreadable image(s): sub/broken" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [r["image_id"] for r in rows] == ["dog0", "sub/dog1", "sub/dog2"]
    classes = (trained_run / "classes.txt").read_text().split()
    for row in rows:
        assert row["label_1"] in classes and row["label_2"] in classes and row["label_1"] != row["label_2"]
        assert 1 >= float(row["probability_1"]) >= float(row["probability_2"]) >= 0


def test_a_different_config_on_the_same_run_folder_is_refused(trained_run, demo):
    with pytest.raises(SiamdogError, match="differs in: batch_size"):
        train(demo / "data", trained_run, tiny_config(batch_size=8), verbose=0)


def test_a_finished_run_says_it_is_complete(trained_run, demo, caplog):
    before = json.loads((trained_run / "state.json").read_text())
    with caplog.at_level("INFO"):
        state = train(demo / "data", trained_run, tiny_config(), verbose=0)
    assert "already complete; nothing to do" in caplog.text and "resuming" not in caplog.text
    assert state == before


def test_a_run_stopped_while_calibrating_calibrates_on_the_rerun_and_trains_nothing(trained_run, demo, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    expected = json.loads((run / "verification.json").read_text())
    (run / "verification.json").unlink()
    state = json.loads((run / "state.json").read_text())
    del state["verification_seconds"]
    (run / "state.json").write_text(json.dumps(state))
    with caplog.at_level("INFO"):
        rerun = train(demo / "data", run, tiny_config(), verbose=0)
    assert "same class or not, on" in caplog.text and " done in " not in caplog.text, "it calibrates, and no stage runs"
    assert rerun["completed"] == state["completed"] and rerun["verification_seconds"] > 0
    again = json.loads((run / "verification.json").read_text())["answers"]
    assert {answer: f["threshold"] for answer, f in again.items()} == pytest.approx({answer: f["threshold"] for answer, f in expected["answers"].items()})
    # A run that an earlier version calibrated (the head's figures alone) is calibrated again.
    (run / "verification.json").write_text(json.dumps(expected["answers"]["head"]))
    train(demo / "data", run, tiny_config(), verbose=0)
    assert set(json.loads((run / "verification.json").read_text())["answers"]) == set(expected["answers"])


def test_an_ensemble_of_runs_at_two_sizes_scores_each_at_its_own(trained_run, demo, tmp_path):
    from siamdog.evaluate import load_classifiers, predict_files
    from siamdog.models.backbones import build_tower
    from siamdog.models.siamese import build_model

    # The trained run's weights in a classifier that takes 96 px images (the tower is fully
    # convolutional and pooled, so its weights fit any size): a run trained at another size.
    small = keras.saving.load_model(trained_run / "best.keras", compile=False)
    config = tiny_config()
    large = build_model("softmax", build_tower(config.backbone, None, 96), NUM_CLASSES, config.dropout).image_classifier
    large.set_weights(small.get_weights())
    _saved_as_run(large, tmp_path / "large", (trained_run / "classes.txt").read_text().splitlines())

    paths = [str(p) for p in sorted((demo / "test").rglob("*.jpg"))]
    ensemble, _, _ = load_classifiers([trained_run, tmp_path / "large"])
    assert ensemble.input_shape[1:3] == (96, 96), "the ensemble takes its largest member's size"
    members = [predict_files(load_classifiers(m)[0], paths, progress=False)[0] for m in (trained_run, tmp_path / "large")]
    assert not np.allclose(*members, atol=1e-3), "the two sizes give the same weights other predictions"
    together = predict_files(ensemble, paths, progress=False)[0]
    # The smaller member sees the 96 px images resized to 71 px, not the photos loaded at 71 px:
    # close to the mean of the members on their own sizes, not equal.
    np.testing.assert_allclose(together, np.mean(members, axis=0), atol=0.05)
    assert np.mean(together.argmax(1) == np.mean(members, axis=0).argmax(1)) >= 0.9


def test_evaluate_and_predict_read_the_photos_at_another_size_through_the_run_s_rebuilt_model(trained_run, demo, tmp_path, capsys):
    from siamdog.evaluate import load_classifiers, predict_files

    paths = [str(p) for p in sorted((demo / "test").rglob("*.jpg"))]
    saved = predict_files(load_classifiers(trained_run)[0], paths, progress=False)[0]
    rebuilt, _, _ = load_classifiers(trained_run, image_size=71)
    np.testing.assert_allclose(predict_files(rebuilt, paths, progress=False)[0], saved, atol=1e-5, err_msg="the training size: the saved model")
    larger, _, _ = load_classifiers([trained_run, trained_run], image_size=96)
    assert larger.input_shape[1:3] == (96, 96)
    assert not np.allclose(predict_files(larger, paths, progress=False)[0], saved, atol=1e-3), "the photos read at 96 px"

    assert main(["evaluate", "--model", str(trained_run), "--data", str(demo / "test"), "--out", str(tmp_path / "eval"), "--image-size", "96"]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["image_size"] == 96
    assert main(["predict", "--model", str(trained_run), "--images", str(demo / "test" / "reddisc"), "--out", str(tmp_path / "p.txt"), "--image-size", "96"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(trained_run), "--data", str(demo / "test"), "--out", str(tmp_path / "e2"), "--image-size", "20"]) == 2
    assert "too small" in capsys.readouterr().err
    lone = tmp_path / "lone"  # a .keras file without its run folder's config.yaml
    lone.mkdir()
    for name in ("best.keras", "classes.txt"):
        shutil.copy(trained_run / name, lone / name)
    assert main(["evaluate", "--model", str(lone / "best.keras"), "--data", str(demo / "test"), "--out", str(tmp_path / "e3"), "--image-size", "96"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "config.yaml: missing" in error


def test_a_new_run_can_start_from_an_earlier_run_s_best_model(trained_run, demo, tmp_path):
    best = json.loads((trained_run / "best.json").read_text())["val_accuracy"]
    frozen = [{"name": "heads", "epochs": 1, "optimizer": "sgd", "learning_rate": 1e-9}]
    state = train(demo / "data", tmp_path / "next", tiny_config(stages=frozen, init_from=str(trained_run / "best.keras")), verbose=0)
    assert state["completed"]["heads"]["best_val_accuracy"] == pytest.approx(best, abs=1e-6), "it starts where the earlier run was best"
    with pytest.raises(SiamdogError, match="does not fit this model"):
        train(demo / "data", tmp_path / "other", tiny_config(stages=frozen, embedding_size=8, init_from=str(trained_run / "best.keras")), verbose=0)
    assert not (tmp_path / "other").exists()


def test_max_epochs_below_one_is_one_clear_error(demo, tmp_path, capsys):
    assert main(["train", "--data", str(demo / "data"), "--run", str(tmp_path / "run"), "--max-epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "siamdog train: error: --max-epochs must be at least 1, got 0"


def test_with_the_cache_a_stage_that_trains_every_block_trains_on_the_images_and_the_others_on_pooled_features(demo, tmp_path):
    from siamdog.training.trainer import cached_front_blocks, every_stage_on_cache, train

    every_block = [{**STAGES[0], "epochs": 1}, {**STAGES[1], "epochs": 1, "trainable_blocks": 14}]
    config = tiny_config(feature_cache_views=1, stages=every_block)
    assert cached_front_blocks(config) == 0, "the heads stage is the only one on the cache: its front is the whole tower"
    assert cached_front_blocks(tiny_config(feature_cache_views=1)) == 2, "two blocks fine-tuned on the cache"
    assert cached_front_blocks(tiny_config(stages=every_block)) == 0, "no cache"
    assert every_stage_on_cache(tiny_config(feature_cache_views=1)), "two blocks fine-tuned: every stage on the cache"
    assert not every_stage_on_cache(config), "the whole tower trains on the images: the same-class head is calibrated on them"
    assert not every_stage_on_cache(tiny_config()), "no cache"
    shutil.copytree(demo / "data", tmp_path / "data")
    run = tmp_path / "run"
    state = train(tmp_path / "data", run, config, verbose=0)
    assert list(state["completed"]) == ["heads", "finetune"] and (run / "verification.json").is_file()
    shapes = [np.load(path, mmap_mode="r").shape for path in (tmp_path / "data" / ".siamdog-cache").glob("*.npy")]
    assert shapes and all(shape[2:] == (2048,) for shape in shapes), f"only pooled features are cached, no pixels: {shapes}"


def test_with_the_cache_the_stage_that_trains_every_block_reads_augmented_images(demo):
    from siamdog.data.batches import DirectoryBatches
    from siamdog.data.features import FeatureBatches
    from siamdog.training.trainer import data_folders, new_model, prepare_stage

    every_block = [STAGES[0], {**STAGES[1], "trainable_blocks": 14}]
    config = tiny_config(mode="softmax", feature_cache_views=1, stages=every_block)
    train_dir, valid_dir, classes = data_folders(demo / "data")
    model = new_model(config, len(classes))
    valid = DirectoryBatches(valid_dir, (71, 71), 16, shuffle=False, classes=classes)
    heads = prepare_stage(config.stages[0], 0, config, model, train_dir, valid, classes, workers=1)
    whole = prepare_stage(config.stages[1], 1, config, model, train_dir, valid, classes, workers=1)
    assert isinstance(heads.samples, FeatureBatches) and isinstance(heads.val_batches, FeatureBatches)
    assert isinstance(whole.samples, DirectoryBatches) and whole.samples.augmentation is not None
    assert whole.val_batches is valid and whole.model is model.training


def test_mixed_float16_without_an_accelerator_is_warned_about(caplog):
    from siamdog.training.trainer import check_settings

    with caplog.at_level("WARNING"):
        check_settings(tiny_config(precision="mixed_float16"), 4)
        check_settings(tiny_config(precision="mixed_bfloat16"), 4)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("precision mixed_float16: no GPU here")


def test_unknown_stage_names_are_refused(demo, tmp_path):
    with pytest.raises(SiamdogError, match="unknown stage"):
        train(demo / "data", tmp_path / "run", tiny_config(), stages=["heads", "warmup"], verbose=0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-size", "50"], "too small"),
        (["--weights", "missing.weights.h5"], "no such weights file"),
        (["--batch-size", "1"], "at least 2"),
        (["--config", "blocks.yaml"], "cannot unfreeze 40"),
    ],
)
def test_a_refused_command_writes_nothing_that_refuses_the_corrected_one(demo, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocks.yaml").write_text("stages:\n- {name: heads, epochs: 1, optimizer: sgd, learning_rate: 0.01, trainable_blocks: 40}\n")
    run = tmp_path / "run"
    command = ["train", "--data", str(demo / "data"), "--run", str(run), "--weights", "none", "--image-size", "71"]
    assert main([*command, *args]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not run.exists(), "nothing written, so nothing can refuse the corrected command"


def tf_value(event) -> float:
    from tensorboard.util.tensor_util import make_ndarray

    return make_ndarray(event.tensor_proto).item()


def test_softmax_only_mode_trains_the_single_model_baseline(demo, tmp_path):
    run = tmp_path / "run"
    state = train(
        demo / "data", run, tiny_config(mode="softmax", stages=[{**STAGES[0], "epochs": 3}]), workers=2, verbose=0, tensorboard_dir=tmp_path / "tb"
    )
    rows = read_history(run, "heads")
    assert "accuracy" in rows[0] and "positive_pair_fraction" not in rows[0]
    model = keras.saving.load_model(run / "best.keras")
    assert len(model.inputs) == 1 and model.output_shape == (None, NUM_CLASSES)
    assert state["best"]["val_accuracy"] >= 0.5, "chance is 0.25"
    assert (run / "best-embedding.keras").is_file() and not (run / "best-same-class.keras").exists()
    assert set(json.loads((run / "verification.json").read_text())["answers"]) == {"agreement", "cosine"}, "no head to calibrate"
    photo = str(next((demo / "test" / "reddisc").iterdir()))
    assert main(["verify", str(run), photo, photo]) == 0, "the classifier's agreement answers for a softmax-only run"
    assert main(["verify", str(run), photo, photo, "--by", "head"]) == 2, "a softmax-only run has no same-class head"
    # TensorBoard gets every epoch's figures, validation (ours, not Keras's) beside training.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for split, tag in (("train", "epoch_accuracy"), ("validation", "epoch_accuracy"), ("train", "epoch_loss")):
        events = EventAccumulator(str(tmp_path / "tb" / "heads" / split))
        events.Reload()
        assert [e.step for e in events.Tensors(tag)] == [0, 1, 2], (split, tag)
    validation = EventAccumulator(str(tmp_path / "tb" / "heads" / "validation"))
    validation.Reload()
    accuracies = [float(tf_value(e)) for e in validation.Tensors("epoch_accuracy")]
    assert accuracies == pytest.approx([float(r["val_accuracy"]) for r in rows])


def test_an_auto_precision_run_on_a_cpu_with_amx_fine_tunes_in_bfloat16_saves_a_model_that_evaluates_and_resumes_elsewhere_as_it_began(
    demo, tmp_path, monkeypatch, caplog
):
    from siamdog.training import hardware

    monkeypatch.setattr(hardware, "this_hardware", lambda: hardware.Hardware(None, None, frozenset({"avx512f", "amx_bf16"})))
    stages = [{**STAGES[1], "epochs": 1}]  # the last blocks and the heads train, in one epoch
    state = train(demo / "data", tmp_path / "run", tiny_config(precision="auto", stages=stages), workers=2, verbose=0)
    assert set(state["completed"]) == {"finetune"}
    assert load_config(tmp_path / "run" / "config.yaml").precision == "mixed_bfloat16", "the run's config says what it trained in"
    assert keras.config.dtype_policy().name == "float32", "training leaves the global policy as it was"
    assert np.isfinite(float(read_history(tmp_path / "run", "finetune")[0]["loss"]))
    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    base = model.get_layer("xception_tower").get_layer("base")
    assert {layer.compute_dtype for layer in base.layers if layer.weights} == {"bfloat16"}
    result = evaluate(tmp_path / "run", demo / "test", out_dir=tmp_path / "eval", progress=False)
    assert result.count == NUM_CLASSES * 8 and 0 <= result.top1_error <= 1
    monkeypatch.setattr(hardware, "this_hardware", lambda: hardware.Hardware(None, None, frozenset({"avx2"})))
    with caplog.at_level(logging.INFO, logger="siamdog"):
        resumed = train(demo / "data", tmp_path / "run", tiny_config(precision="auto", stages=stages), workers=2, verbose=0)
    assert resumed["completed"] == state["completed"], "resumed on a CPU that would train in float32, not refused"
    assert "precision auto: mixed_bfloat16, the run's" in caplog.text



def test_a_block_lr_factor_gives_each_unfrozen_block_its_rate_in_the_stage_s_optimizer(demo):
    from siamdog.data.batches import DirectoryBatches, list_classes
    from siamdog.training.trainer import new_model, prepare_stage

    stages = [STAGES[0], {**STAGES[1], "block_lr_factor": 0.5}]
    config = tiny_config(stages=stages)
    classes = list_classes(demo / "data" / "train")
    model = new_model(config, len(classes))
    valid = DirectoryBatches(demo / "data" / "valid", (71, 71), 16, shuffle=False, classes=classes)
    prepared = prepare_stage(config.stages[1], 1, config, model, demo / "data" / "train", valid, classes, workers=1)
    rates = {prepared.model.optimizer.multipliers.get(v.path, 1.0) for v in prepared.model.trainable_variables}
    assert rates == {1.0, 0.5, 0.25}, "the heads at the stage's rate, block14 at half of it, block13 at a quarter"
    assert not hasattr(prepare_stage(config.stages[0], 0, config, model, demo / "data" / "train", valid, classes, 1).model.optimizer, "multipliers")


def test_a_quadrant_mask_reaches_the_pairs_a_multi_loss_stage_trains_on(demo):
    from siamdog.data.batches import DirectoryBatches, list_classes
    from siamdog.training.trainer import new_model, prepare_stage

    config = tiny_config(stages=[{**STAGES[0], "quadrant_mask": 1.0, "augment": False}])
    classes = list_classes(demo / "data" / "train")
    valid = DirectoryBatches(demo / "data" / "valid", (71, 71), 16, shuffle=False, classes=classes)
    prepared = prepare_stage(config.stages[0], 0, config, new_model(config, len(classes)), demo / "data" / "train", valid, classes, 1)
    (images, partner), targets = prepared.data[1]
    plain, labels = prepared.samples[1]
    np.testing.assert_array_equal(targets["ctg_out_1"], labels)
    changed = np.any(images != plain, axis=-1)
    assert changed.any(axis=(1, 2)).all(), "every image is masked at probability 1"
    assert np.all(changed.mean(axis=(1, 2)) < 0.3), "in one quadrant only"


def test_a_same_class_mosaic_stage_trains_on_mosaics_of_its_class_balanced_batches(demo):
    from siamdog.data.batches import DirectoryBatches, list_classes
    from siamdog.data.quadrants import quadrant_slices
    from siamdog.training.trainer import new_model, prepare_stage

    stage = {**STAGES[0], "same_class_mosaic": 1.0, "augment": False}
    config = tiny_config(mode="softmax", sampler="class_balanced", images_per_class=4, stages=[stage])
    classes = list_classes(demo / "data" / "train")
    valid = DirectoryBatches(demo / "data" / "valid", (71, 71), 16, shuffle=False, classes=classes)
    prepared = prepare_stage(config.stages[0], 0, config, new_model(config, len(classes)), demo / "data" / "train", valid, classes, 1)
    mosaics, targets = prepared.data[1]
    plain, labels = prepared.samples[1]
    np.testing.assert_array_equal(targets, labels)
    assert not np.array_equal(mosaics, plain)
    label = labels.argmax(1)
    for i in range(len(mosaics)):
        for quadrant in range(4):
            where = quadrant_slices(71, 71, quadrant)
            donors = [j for j in range(len(plain)) if np.array_equal(mosaics[i][where], plain[j][where])]
            assert donors and all(label[j] == label[i] for j in donors)
