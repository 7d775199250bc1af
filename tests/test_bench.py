"""The benchmarks' own arithmetic (the benchmarks themselves need ../shared and run by make)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.stats import error_interval, mcnemar, verdict


def test_mcnemar_counts_images_only_one_model_gets_right():
    a = np.arange(100) < 30
    b = (np.arange(100) >= 10) & (np.arange(100) < 50)
    result = mcnemar(a, b)
    assert (result["only_a_right"], result["only_b_right"]) == (10, 20)
    # Exact two-sided binomial test of 10 out of 30 discordant images at p = 0.5.
    assert result["mcnemar_p"] == pytest.approx(0.0987, abs=1e-4)
    assert mcnemar(a, a)["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="different images"):
        mcnemar(a, a[:10])


def test_error_interval_is_wilson_95():
    low, high = error_interval(200, 816)
    assert low < 200 / 816 < high
    # Wilson by hand: centre (p + z^2/2n) / (1 + z^2/n) = 0.2463, half-width 0.0295.
    assert (low, high) == pytest.approx((0.2168, 0.2758), abs=2e-4)
    assert error_interval(0, 50)[0] == 0.0


def test_a_difference_counts_only_when_every_seed_s_paired_test_agrees():
    win = {"only_a_right": 40, "only_b_right": 10, "mcnemar_p": 0.0001}
    loss = {"only_a_right": 10, "only_b_right": 40, "mcnemar_p": 0.0001}
    noise = {"only_a_right": 22, "only_b_right": 18, "mcnemar_p": 0.64}
    assert verdict([win, win, win]) == "better"
    assert verdict([loss, loss]) == "worse"
    assert verdict([win, noise, win]) == "tie"
    assert verdict([win, loss]) == "tie"
    assert verdict([]) == "tie"


def test_an_ensemble_row_scores_the_mean_of_its_runs_probabilities_for_every_seed():
    from bench.ablation import ensemble_row

    labels = np.array([0, 1, 1])
    runs = [  # each run gets one image wrong; their mean gets all three right
        {"seed": 0, "seconds": 10.0, "probabilities": np.array([[0.4, 0.6], [0.1, 0.9], [0.2, 0.8]]), "labels": labels},
        {"seed": 1, "seconds": 20.0, "probabilities": np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]), "labels": labels},
    ]
    rows = ensemble_row([runs])
    assert [r["seed"] for r in rows] == [0, 1] and all(r["seconds"] == 30.0 for r in rows)
    assert all(r["test"]["top1_err"] == 0.0 and r["test"]["right"] == [True, True, True] for r in rows)


def test_an_ensemble_of_rows_weighs_each_row_as_one_and_counts_a_probe_s_fit_once():
    from bench.ablation import ensemble_row

    labels = np.array([0, 1])
    trained = [  # three runs that all say class 0 for both images
        {"seed": seed, "seconds": 10.0, "probabilities": np.array([[0.7, 0.3], [0.7, 0.3]]), "labels": labels} for seed in range(3)
    ]
    probe = [  # one fit standing for every seed, sure of class 1 for both
        {"seed": seed, "seconds": 5.0, "probabilities": np.array([[0.1, 0.9], [0.1, 0.9]]), "labels": labels, "one_fit": True} for seed in range(3)
    ]
    rows = ensemble_row([trained, probe])
    # Per row (0.7 + 0.1) / 2 = 0.4 for class 0: the probe's one vote outweighs the three runs'.
    assert all(r["test"]["right"] == [False, True] for r in rows)
    assert [r["seed"] for r in rows] == [0, 1, 2] and all(r["seconds"] == 35.0 for r in rows)


def test_an_ensemble_by_seed_averages_each_row_s_run_of_that_seed_only():
    from bench.ablation import ensemble_row

    labels = np.array([0, 1])
    first = [  # seed 0 sure of class 0, seed 1 of class 1
        {"seed": 0, "seconds": 10.0, "probabilities": np.array([[0.9, 0.1], [0.9, 0.1]]), "labels": labels},
        {"seed": 1, "seconds": 10.0, "probabilities": np.array([[0.1, 0.9], [0.1, 0.9]]), "labels": labels},
    ]
    second = [  # leaning to the truth on both images, for both seeds
        {"seed": seed, "seconds": 3.0, "probabilities": np.array([[0.6, 0.4], [0.4, 0.6]]), "labels": labels} for seed in range(2)
    ]
    rows = ensemble_row([first, second], by_seed=True)
    # Seed 0: (0.9 + 0.6) / 2 and (0.9 + 0.4) / 2 for class 0; seed 1 the mirror image.
    assert [r["test"]["right"] for r in rows] == [[True, False], [False, True]]
    assert [r["seed"] for r in rows] == [0, 1] and all(r["seconds"] == 13.0 for r in rows)


def test_a_finished_row_is_compared_with_the_reference_and_its_named_rows_only_once_they_have_finished_too():
    from bench.ablation import add_comparisons

    def runs(right):
        return [{"seed": 0, "test": {"right": right, "top1_err": 1 - sum(right) / len(right)}}]

    rows = [{"name": "tuned", "compare_with": ["heads"]}, {"name": "heads"}, {"name": "probe"}]
    per_row = {"tuned": runs([True, True, True, False])}
    figures = {"tuned": {}}
    add_comparisons(figures, per_row, rows, reference="probe")
    assert figures == {"tuned": {}}
    per_row |= {"heads": runs([True, False, False, False]), "probe": runs([False, False, False, False])}
    figures |= {"heads": {}, "probe": {}}
    add_comparisons(figures, per_row, rows, reference="probe")
    assert figures["tuned"]["against_reference"]["error_difference_points"] == -75.0
    assert figures["tuned"]["against"]["heads"]["error_difference_points"] == -50.0
    assert "against_reference" in figures["heads"] and figures["probe"] == {}


def test_a_row_needs_the_rows_it_names_and_the_runs_of_an_ensemble_it_is_compared_with():
    from bench.ablation import rows_it_needs

    by_name = {
        "probe": {"name": "probe", "compare_with": ["heads"]},
        "run": {"name": "run", "compare_with": ["probe"]},
        "run_ensemble": {"name": "run_ensemble", "ensemble_of": "run"},
        "other": {"name": "other"},
        "other_ensemble": {"name": "other_ensemble", "ensemble_of": "other", "compare_with": ["run_ensemble", "probe"]},
        "mixed_ensemble": {"name": "mixed_ensemble", "ensemble_of": ["other", "probe"]},
        "above": {"name": "above", "compare_with": ["mixed_ensemble"]},
    }
    assert sorted(rows_it_needs(by_name["other_ensemble"], by_name)) == ["other", "probe", "run", "run_ensemble"]
    assert sorted(rows_it_needs(by_name["mixed_ensemble"], by_name)) == ["other", "probe"]
    assert sorted(rows_it_needs(by_name["above"], by_name)) == ["mixed_ensemble", "other", "probe"]
    assert rows_it_needs(by_name["run"], by_name) == ["probe"]  # what a compared row is compared with does not run


def test_the_reference_s_own_comparisons_pull_no_rows_in():
    from bench.ablation import rows_to_run

    by_name = {
        "reference": {"name": "reference", "compare_with": ["older"]},
        "older": {"name": "older"},
        "new": {"name": "new", "compare_with": ["reference", "neighbour"]},
        "neighbour": {"name": "neighbour"},
    }
    assert rows_to_run(by_name, ["new"], "reference") == {"new", "reference", "neighbour"}
    assert rows_to_run(by_name, ["older"], "reference") == {"older", "reference"}


def test_every_scoring_of_test_shares_the_flip_pass_and_crops_adds_the_zoomed_one():
    from bench.runner import scored_views
    from siamdog.training.feature_cache import passes_of

    flip = ("as is", "mirrored")
    assert passes_of(scored_views("test", "none")) == [flip] and passes_of(scored_views("test", "flip")) == [flip]
    assert passes_of(scored_views("test", "crops")) == [flip, ("zoomed", "zoomed mirrored")]
    assert scored_views("valid", "none") == ("as is",), "valid without TTA reads the training's valid pass"


def ablation_results(date: str, command: str, reference: str, rows: dict[str, float], seeds: int = 3) -> dict:
    """An ablation results file's figures, as bench/ablation.py writes them, for a few rows."""
    def figures(err):
        return {"what": "w", "test_top1_err": err, "test_top1_err_seeds": [err] * seeds, "minutes": 1.0,
                "against_reference": {"verdict": "tie", "error_difference_points": 0.0}}

    return {"date": date, "command": command, "reference": reference, "rows": {n: figures(e) for n, e in rows.items()}}


def test_the_summary_takes_each_row_from_the_latest_run_that_asked_for_it_and_names_the_unmeasured():
    from bench.ablation import ROWS
    from bench.ablation_summary import asked_rows, latest_figures, summary_rows, summary_stem

    assert summary_stem(ROWS) == "ablation-summary"
    assert summary_stem(ROWS.parent / "cpu-finetune-299px.yaml") == "ablation-summary-cpu-finetune-299px", \
        "another rows file's summary must not overwrite the ablation's"
    assert asked_rows("bench/ablation.py --only a b --reference r") == {"a", "b"}
    assert asked_rows("bench/ablation.py") == set()
    results = [
        ("ablation-1.json", ablation_results("2026-11-24", "bench/ablation.py --only a", "r", {"a": 0.30, "r": 0.31})),
        # A later file that ran `a` only as the row another was compared with: `a` keeps its own run's figures.
        ("ablation-2.json", ablation_results("2026-11-25", "bench/ablation.py --only b", "r", {"a": 0.25, "b": 0.28, "r": 0.31})),
        ("ablation-3.json", ablation_results("2026-11-26", "bench/ablation.py --only b", "r", {"b": 0.27, "r": 0.32})),
        # The same day's run of fewer seeds (one that stopped early, later extended): the fuller one counts.
        ("ablation-4.json", ablation_results("2026-11-26", "bench/ablation.py --only b --seeds 0", "r", {"b": 0.20, "r": 0.33}, seeds=1)),
    ]
    latest = latest_figures(["a", "b", "r", "c"], results)
    assert (latest["a"]["test_top1_err"], latest["a"]["file"]) == (0.30, "ablation-1.json")
    assert (latest["b"]["test_top1_err"], latest["b"]["file"]) == (0.27, "ablation-3.json")
    assert latest["r"]["file"] == "ablation-3.json", "a row no file asked for comes from the latest that ran it"
    assert "c" not in latest
    rows = [{"name": "a", "what": "w"}, {"name": "c", "what": "w", "tta": "crops"}, {"name": "b", "what": "changed"}]
    lines = summary_rows(rows, latest)
    assert lines[0][2] == "0.3000" and lines[0][4] == "tie vs `r` (+0.00)"
    assert lines[1][2] == "not measured yet" and lines[1][5] == "crops"
    assert lines[2][1].endswith("(its description changed since)")


def rows_files() -> list[tuple[str, dict]]:
    """(name, spec) of every rows file of bench/ablation.py in bench/configs (those with rows)."""
    import yaml

    from bench.runner import REPO

    specs = [(path.name, yaml.safe_load(path.read_text())) for path in sorted((REPO / "bench" / "configs").glob("*.yaml"))]
    return [(name, spec) for name, spec in specs if "rows" in spec]


def test_every_ablation_row_makes_a_valid_config_and_names_rows_that_exist():
    from bench.ablation import ensemble_members, row_config, rows_named_by, with_shared_runs
    from bench.ablation_summary import row_tta
    from bench.runner import REPO
    from siamdog.config import load_config

    files = rows_files()
    assert {"ablation.yaml", "full-finetune.yaml", "gpu-finetune.yaml"} <= {name for name, _ in files}
    for file, spec in files:
        base = load_config(REPO / "bench" / "configs" / f"{spec['base']}.yaml")
        rows = with_shared_runs(spec["rows"])
        by_name = {row["name"]: row for row in rows}
        assert len(by_name) == len(rows), f"{file}: row names are unique"
        assert spec["reference"] in by_name, file
        for row in rows:
            for name in rows_named_by(row):
                assert name in by_name, f"{file}: {row['name']} names {name}"
            for seed in spec["seeds"]:
                row_config(base, row, seed)
            assert {row_tta(by_name[m], by_name) for m in ensemble_members(row)} <= {row_tta(row, by_name)}


def test_a_row_that_scores_another_row_s_runs_trains_as_that_row():
    from bench.ablation import with_shared_runs

    heads = {"name": "heads", "stages": ["heads"], "settings": {"mode": "softmax"}, "stage_settings": {"heads": {"epochs": 3}}}
    pseudo = {"name": "pseudo", "stages": ["heads"], "pseudo_labels": {"threshold": 0.9}, "seeds": [0]}
    crops = {"name": "heads_crops", "run": "heads", "tta": "crops", "compare_with": ["heads"]}
    pseudo_crops = {"name": "pseudo_crops", "run": "pseudo", "tta": "crops"}
    rows = with_shared_runs([heads, pseudo, crops, pseudo_crops])
    assert rows[:2] == [heads, pseudo], "a row that trains its own runs is left as it is"
    assert rows[2] == {**crops, "stages": ["heads"], "settings": {"mode": "softmax"}, "stage_settings": {"heads": {"epochs": 3}}}
    assert rows[3] == {**pseudo_crops, "stages": ["heads"], "pseudo_labels": {"threshold": 0.9}, "seeds": [0]}


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"name": "more", "run": "heads", "stages": ["heads", "finetune"]}, "row more: sets stages, which it takes from row heads, whose runs it scores"),
        ({"name": "longer", "run": "heads", "stage_settings": {"heads": {"epochs": 9}}, "seeds": [1]},
         "row longer: sets stage_settings, seeds, which it takes from row heads, whose runs it scores"),
        ({"name": "lost", "run": "nowhere"}, "row lost: run nowhere is not a row of this file that trains its own runs"),
        ({"name": "chained", "run": "heads_crops"}, "row chained: run heads_crops is not a row of this file that trains its own runs"),
        ({"name": "of_probe", "run": "probe"}, "row of_probe: run probe is not a row of this file that trains its own runs"),
    ],
)
def test_a_row_that_scores_another_row_s_runs_but_would_train_them_otherwise_is_refused(extra, message):
    from bench.ablation import with_shared_runs

    rows = [{"name": "heads", "stages": ["heads"]}, {"name": "heads_crops", "run": "heads", "tta": "crops"},
            {"name": "probe", "probe": True}, extra]
    with pytest.raises(ValueError) as refused:
        with_shared_runs(rows)
    assert str(refused.value) == message


def test_pass_seconds_add_up_by_split_and_a_shared_pass_counts_once():
    from bench.runner import split_seconds

    int8 = {"train": {"train-5d8e0c1f-0a1b": 883.2}, "valid": {"valid-93c2d4aa-77e0": 108.3},
            "test": {"test-0f3e2b19-4c2d": 417.0, "test-a81c66d0-9e1f": 375.3}}
    keras_front = {**int8, "train": {"train-7b40e3c2-51aa": 100.0}}
    assert split_seconds(int8, keras_front) == {"train": 983.2, "valid": 108.3, "test": 792.3}
    assert split_seconds(int8) == {"train": 883.2, "valid": 108.3, "test": 792.3}


def test_a_run_s_time_adds_its_stages_and_the_same_class_calibration_of_a_multiloss_run():
    from bench.runner import training_seconds

    stages = {"completed": {"heads": {"seconds": 20.5}, "finetune": {"seconds": 300.0}}}
    assert training_seconds(stages) == 320.5, "softmax-only: no calibration"
    assert training_seconds({**stages, "verification_seconds": 95.5}) == 416.0


def test_the_upscale_bench_reads_linear_as_siamdog_does_and_each_interpolation_at_the_asked_size(tmp_path):
    import cv2

    from bench.upscale import INTERPOLATIONS, loader
    from siamdog.data.images import load_image

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (9, 12, 3), dtype=np.uint8))
    enlarged = {name: loader(name)(photo, (27, 36)) for name in INTERPOLATIONS}
    assert np.array_equal(enlarged["linear"], load_image(photo, (27, 36)))
    for name, image in enlarged.items():
        assert image.shape == (27, 36, 3) and image.dtype == np.uint8, name
    assert not np.array_equal(enlarged["cubic"], enlarged["linear"])
    # Nearest repeats pixels: every enlarged pixel is one of the photo's, in RGB like the rest.
    original = load_image(photo, (9, 12))
    assert {tuple(p) for p in enlarged["nearest"].reshape(-1, 3)} <= {tuple(p) for p in original.reshape(-1, 3)}


def test_the_probe_s_c_is_the_one_that_errs_least_on_valid_with_both_views_averaged(monkeypatch):
    import bench.probe_inputs as probe_inputs

    class Probe:  # right on valid only for C 0.01, and only once the mirrored view is averaged in
        def __init__(self, c):
            self.c = c

        def predict_proba(self, view):
            favoured = np.full(len(view), 1 if self.c == 0.01 else 0)
            confidence = np.where(view[:, 0] > 0, 0.6, 0.45)  # view 0 leans to class 0, view 1 to the favoured one
            return np.stack([np.where(favoured == 0, confidence, 1 - confidence), np.where(favoured == 0, 1 - confidence, confidence)], 1)

    monkeypatch.setattr(probe_inputs, "fit_probe", lambda x, y, c: Probe(c))
    views = np.stack([np.full((4, 2), -1.0), np.full((4, 2), 1.0)])  # (views, samples, features)
    c, probe, valid_err = probe_inputs.chosen_on_valid((views, np.ones(4, int)), (views, np.ones(4, int)), [0.001, 0.01, 0.1])
    assert c == 0.01 and valid_err == {"0.001": 1.0, "0.01": 0.0, "0.1": 1.0}
    assert probe.c == 0.01, "the chosen C's probe, not another fit"
    features = [{"test": (np.zeros((2, 3, 4)), np.arange(3))}, {"test": (np.ones((2, 3, 5)), np.arange(3) + 7)}]
    together, labels = probe_inputs.side_by_side(features, "test")
    assert together.shape == (2, 3, 9) and np.array_equal(together[..., 4:], np.ones((2, 3, 5))) and np.array_equal(labels, np.arange(3))


def test_the_quality_bench_names_each_size_s_runs_and_compares_their_ensemble_with_the_first_size():
    from bench.quality import comparisons, size_names, variant_names

    assert size_names("multiloss", [299]) == ["multiloss"]
    assert size_names("multiloss", [299, 400]) == ["multiloss_299px", "multiloss_400px"]
    assert variant_names([299]) == ["linear_probe", "linear_probe_c0001", "softmax_only", "multiloss", "multiloss_polish"]
    two = variant_names([299, 400])
    assert two.index("multiloss_299px") < two.index("multiloss_400px") < two.index("multiloss")
    assert ("multiloss", "multiloss_299px") in comparisons([299, 400])
    assert not any(b.endswith("px") for _, b in comparisons([299]))


def test_a_quality_ensemble_averages_its_runs_probabilities_and_adds_their_training_time():
    from bench.quality import ensemble_figures
    from bench.runner import Bench

    labels = np.array([0, 1])
    scores = {  # each run gets one test image wrong; their mean gets both right
        ("a", "test"): np.array([[0.4, 0.6], [0.2, 0.8]]), ("b", "test"): np.array([[0.9, 0.1], [0.6, 0.4]]),
        ("a", "valid"): np.array([[0.6, 0.4], [0.6, 0.4]]), ("b", "valid"): np.array([[0.6, 0.4], [0.6, 0.4]]),
    }

    class FakeBench(Bench):  # Bench's own ensemble scoring over runs scored from a table
        def __init__(self):
            pass

        def score(self, run, split, tta):
            assert tta == ("crops" if split == "test" else "none")
            return scores[(run.name, split)], labels

    members = [{"seed": 1, "seconds": 10.0, "best": {"stage": "heads"}, "run": "runs/a"},
               {"seed": 1, "seconds": 25.0, "best": {"stage": "heads"}, "run": "runs/b"}]
    figures = ensemble_figures(FakeBench(), members, "crops")
    assert figures["seed"] == 1 and figures["seconds"] == 35.0 and figures["runs"] == ["runs/a", "runs/b"]
    assert figures["test"]["right"] == [True, True] and figures["valid_top1_err"] == 0.5


def test_recorded_figures_are_measured_once_and_kept_in_a_new_folder(tmp_path):
    from bench.runner import recorded

    measured = []

    def measure():
        measured.append(1)
        return {"top1_err": 0.25}

    path = tmp_path / "runs" / "quality-multiloss-seed0.json"
    assert recorded(path, measure) == {"top1_err": 0.25}
    assert recorded(path, measure) == {"top1_err": 0.25}
    assert len(measured) == 1 and path.is_file()


def test_the_pooling_bench_takes_every_pooling_from_the_tower_s_own_feature_map():
    from bench.pooling import CENTRES, POOL_WIDTHS, last_block, pooling_part
    from siamdog.inference import predict_batch
    from siamdog.models.backbones import build_tower, tower_between

    tower = build_tower("xception", None, 71)
    images = np.random.default_rng(0).uniform(0, 255, (2, 71, 71, 3)).astype(np.float32)
    block14_inputs = predict_batch(tower_between(tower, "xception", None, 1), images)
    pooled = predict_batch(pooling_part(tower, "xception"), block14_inputs)
    ends = np.cumsum(list(POOL_WIDTHS.values()))
    avg, largest, gem, block13_avg, *centres = np.split(pooled, ends[:-1], axis=1)
    assert pooled.shape == (2, ends[-1])
    np.testing.assert_allclose(avg, predict_batch(tower, images), rtol=1e-4, atol=1e-5)  # the tower's own output
    # A power mean lies between the mean and the largest value (the feature map is a ReLU's,
    # >= 0, and GeM floors it at 1e-6); a random tower's activations are tiny, so relative bounds.
    assert np.all(gem >= avg * (1 - 1e-3)) and np.all(gem <= np.maximum(largest, 1e-6) * (1 + 1e-3))
    assert np.mean(gem > avg * 1.05) > 0.9
    np.testing.assert_allclose(block13_avg, block14_inputs.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    feature_map = predict_batch(last_block(tower, "xception"), block14_inputs)
    side = feature_map.shape[1]
    for k, centre in zip(CENTRES, centres, strict=True):
        start = (side - k) // 2
        np.testing.assert_allclose(centre, feature_map[:, start : start + k, start : start + k].mean(axis=(1, 2)), rtol=1e-4, atol=1e-6)


def test_bilinear_pooling_is_the_normalized_root_of_the_mean_outer_product_of_the_projected_map():
    from sklearn.decomposition import PCA

    from bench.pooling import BilinearPooling

    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 1, (5, 3, 3, 6)).astype(np.float32)
    pooling = BilinearPooling(PCA(3, random_state=0).fit(maps.reshape(-1, 6)))
    features = pooling(maps, chunk=2)
    assert features.shape == (5, 6)  # the upper triangle of 3 x 3
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    projected = pooling.pca.transform(maps[1].reshape(9, 6))
    second = projected.T @ projected / 9
    expected = np.sign(second) * np.sqrt(np.abs(second))
    expected = expected[np.triu_indices(3)] / np.linalg.norm(expected[np.triu_indices(3)])
    np.testing.assert_allclose(features[1], expected, rtol=1e-4, atol=1e-6)
    assert BilinearPooling.fitted(maps, 4).pca.n_components_ == 4


def test_out_of_fold_probabilities_score_each_photo_with_a_probe_that_never_saw_it():
    from bench.pooling import out_of_fold_probabilities
    from bench.runner import fit_probe

    # Each sample is its own feature and its label is random: a probe that saw a sample knows
    # it, one that did not can only guess.
    labels = np.random.default_rng(0).permutation(np.arange(60) % 3)
    features = np.eye(60)[None]  # (views, samples, features)
    in_sample = fit_probe(features, labels, c=100.0).predict_proba(features[0]).argmax(1)
    out_of_fold = out_of_fold_probabilities(features[0], labels, c=100.0, folds=5)
    assert np.mean(in_sample == labels) > 0.95
    assert np.mean(out_of_fold.argmax(1) == labels) < 0.6
    np.testing.assert_allclose(out_of_fold.sum(axis=1), 1.0)  # every sample scored once


def test_the_calibration_bench_s_run_folder_makes_train_calibrate_and_nothing_else(demo, tmp_path, caplog):
    from bench.calibration import finished_but_calibration
    from siamdog.data.batches import list_classes
    from siamdog.training.trainer import new_model, train
    from tests.conftest import tiny_config

    config = tiny_config(feature_cache_views=1)
    classes = list_classes(demo / "data" / "train")
    run = tmp_path / "run"
    finished_but_calibration(run, config, new_model(config, len(classes)), classes)
    with caplog.at_level("INFO"):
        state = train(demo / "data", run, config, verbose=0)
    assert "same class or not, on" in caplog.text and " done in " not in caplog.text, "it calibrates, and no stage runs"
    assert state["verification_seconds"] > 0 and (run / "verification.json").is_file()


def test_a_run_on_images_that_fine_tunes_the_tower_is_scored_on_its_images_and_its_passes_hold_only_pooled_features(demo, tmp_path, monkeypatch):
    import shutil

    from bench.runner import Bench
    from siamdog.training.trainer import train
    from tests.conftest import STAGES, tiny_config

    data = tmp_path / "data"
    for split, source in (("train", demo / "data" / "train"), ("valid", demo / "data" / "valid"), ("test", demo / "test")):
        shutil.copytree(source, data / split)
    config = tiny_config(mode="softmax", stages=[STAGES[0], {**STAGES[1], "epochs": 1}])
    run = tmp_path / "run"
    train(data, run, config, stages=["finetune"], verbose=0)

    bench = Bench(data)
    assert bench.pass_seconds(config, "flip")["train"] == {}, "a run on images reads no training pass"
    check = bench.check_against_images(run, "flip")
    assert check["agree"] == check["images"] == 32, "scored as tools/evaluate.py scores the test images"
    shapes = [np.load(path, mmap_mode="r").shape for path in (data / ".siamdog-cache").glob("*.npy")]
    assert shapes and all(shape[2:] == (2048,) for shape in shapes), f"only pooled features are cached: {shapes}"

    scored = bench.score(run, "test", "flip")
    monkeypatch.setattr(Bench, "scored_by_model", lambda *args: pytest.fail("scored again, though best.keras is the one scored"))
    again = bench.score(run, "test", "flip")
    assert np.array_equal(again[0], scored[0]) and np.array_equal(again[1], scored[1]), "the kept scores"
    monkeypatch.undo()
    made = (run / "best.keras").stat().st_mtime_ns
    os.utime(run / "best.keras", ns=(made + 10**9, made + 10**9))  # as a later stage's new best model would
    rescored = []
    monkeypatch.setattr(Bench, "scored_by_model", lambda self, *args: rescored.append(args) or scored)
    bench.score(run, "test", "flip")
    assert rescored == [(run, "test", "flip", None)], "a new best.keras is scored again"
    monkeypatch.undo()

    from siamdog.evaluate import load_classifiers, predict_files

    larger = bench.score(run, "test", "none", image_size=96)
    assert (run / "scores" / "test-none-96px.npz").is_file() and bench.scoring_seconds(run, "test", "none", 96) > 0
    paths = [str(data / "test" / name) for name in bench.batches("test", config).filenames]
    by_evaluate = predict_files(load_classifiers(run, image_size=96)[0], paths, progress=False)[0]
    np.testing.assert_allclose(larger[0], by_evaluate, atol=1e-5, err_msg="read at 96 px as evaluate --image-size 96 reads them")


def test_the_verification_bench_scores_each_answer_by_roc_auc_and_by_accuracy_at_its_valid_threshold():
    from bench.verification import pair_figures, row_means, row_of
    from siamdog.similarity import pair_scores

    features = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    pairs = np.array([[0, 1], [2, 3], [0, 2], [1, 3]])
    same = np.array([1.0, 1.0, 0.0, 0.0])
    scores = pair_scores(features, probabilities, pairs)
    assert set(scores) == {"agreement", "cosine"}, "no same-class head given"
    assert scores["cosine"][2] == pytest.approx(0.0) and scores["cosine"][0] > 0.99
    assert scores["agreement"] == pytest.approx([0.58, 0.5, 0.26, 0.5])
    scores["head"] = np.array([0.9, 0.3, 0.4, 0.1])
    calibration = {answer: {"threshold": 0.35, "roc_auc": 0.8} for answer in scores}
    figures = pair_figures(scores, same, calibration)
    assert figures["cosine"]["roc_auc"] == 1.0, "every pair of one breed is nearer than every pair of two"
    assert figures["head"]["roc_auc"] == 0.75, "0.3 ranks below the other-breed pair's 0.4"
    assert figures["head"]["accuracy"] == 0.5, "at 0.35: (0, 1) and (1, 3) right, (2, 3) missed, (0, 2) taken for one breed"
    assert figures["agreement"]["accuracy"] == 0.75, "at 0.35: only (1, 3), 0.5, taken for one breed"
    assert figures["head"]["threshold"] == 0.35 and figures["head"]["valid_roc_auc"] == 0.8
    other = {answer: {**f, "accuracy": 1.0} for answer, f in figures.items()}
    assert row_means([{"answers": figures}, {"answers": other}])["answers"]["head"] == {"roc_auc": 0.75, "accuracy": 0.75}
    assert row_of(Path("runs/cached_heads_pk-seed12")) == "cached_heads_pk"


def test_the_verification_bench_scores_a_run_s_test_pairs_at_the_thresholds_it_chose_on_valid_and_keeps_the_figures(demo, tmp_path, monkeypatch):
    import bench.verification
    from bench.calibration import finished_but_calibration
    from bench.verification import score_run
    from siamdog.data.batches import list_classes
    from siamdog.training.trainer import new_model, train
    from tests.conftest import NUM_CLASSES, STAGES, tiny_config

    data = tmp_path / "data"  # the bench's split: train, valid and test side by side
    data.mkdir()
    for split, folder in (("train", demo / "data" / "train"), ("valid", demo / "data" / "valid"), ("test", demo / "test")):
        (data / split).symlink_to(folder)
    config = tiny_config(feature_cache_views=1)
    classes = list_classes(data / "train")
    run = tmp_path / "row-seed3"
    finished_but_calibration(run, config, new_model(config, len(classes)), classes)
    train(data, run, config, verbose=0)
    figures = score_run(run, data, workers=1)
    calibration = json.loads((run / "verification.json").read_text())["answers"]
    assert figures["row"] == "row" and set(figures["answers"]) == {"agreement", "cosine", "head"}
    assert all(figures["answers"][a]["threshold"] == calibration[a]["threshold"] for a in calibration)
    assert figures["same_class_pairs"] == NUM_CLASSES * 8 * 7 // 2 and figures["pairs"] == 2 * figures["same_class_pairs"]
    assert all(0 <= f["roc_auc"] <= 1 and 0 <= f["accuracy"] <= 1 for f in figures["answers"].values())

    # A run that an earlier version trained has no calibration of every answer: the bench makes it.
    softmax = tmp_path / "softmax-seed0"
    train(data, softmax, tiny_config(mode="softmax", stages=[{**STAGES[0], "epochs": 1}]), verbose=0)
    (softmax / "verification.json").unlink()
    without_head = score_run(softmax, data, workers=1)
    assert set(without_head["answers"]) == {"agreement", "cosine"} and (softmax / "verification.json").is_file()

    monkeypatch.setattr(bench.verification, "scored_by_model", lambda *args: pytest.fail("scored again, though best.keras is the one scored"))
    assert score_run(run, data, workers=1) == figures, "kept while best.keras is the file they scored"


def test_the_test_size_bench_chooses_the_size_of_the_lowest_mean_valid_error_the_smaller_on_a_tie():
    from bench.test_size import chosen_size

    assert chosen_size({299: [0.21, 0.20], 340: [0.19, 0.20], 380: [0.20, 0.19]}) == 340
    assert chosen_size({299: [0.20, 0.20], 340: [0.21, 0.20]}) == 299


def test_runs_compared_seed_by_seed_are_better_only_when_every_seed_is():
    # How the ablation compares rows, and the test-size bench each run with itself at another size.
    from bench.runner import compare

    right = {"test": {"right": [True] * 30 + [False] * 10, "top1_err": 0.25}}
    better = {"test": {"right": [True] * 40, "top1_err": 0.0}}
    assert compare([better, better], [right, right])["verdict"] == "better"
    assert compare([better, right], [right, right])["verdict"] == "tie", "better on one run of two"


def test_a_bench_refuses_run_folders_without_a_trained_model_in_one_line(tmp_path, capsys):
    import argparse

    from bench.common import trained_runs

    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "best.keras").write_bytes(b"")
    parser = argparse.ArgumentParser(prog="bench")
    assert trained_runs(parser, [str(tmp_path / "done")]) == [tmp_path / "done"]
    with pytest.raises(SystemExit):
        trained_runs(parser, [str(tmp_path / "done"), str(tmp_path / "empty")])
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].endswith(f"not a trained run folder (no best.keras): {tmp_path / 'empty'}")


def _evaluated_run(folder: Path, seed: int, correct: list[bool], label_smoothing: float = 0.0, tta: str = "flip", reverse: bool = False) -> Path:
    """A run folder as `make train` and `make evaluate` leave it, for the files the comparison reads."""
    from siamdog.config import load_config, save_config

    evaluation = folder / "evaluation"
    evaluation.mkdir(parents=True)
    save_config(load_config(None, {"seed": seed, "label_smoothing": label_smoothing}), folder / "config.yaml")
    (folder / "best.json").write_text(json.dumps({"val_accuracy": 0.75, "stage": "heads", "epoch": 8}))
    (folder / "state.json").write_text(json.dumps({"completed": {"heads": {"seconds": 120.0}}, "verification_seconds": 60.0}))
    top1 = 1 - sum(correct) / len(correct)
    (evaluation / "metrics.json").write_text(json.dumps({"top1_error": top1, "top5_error": 0.0, "model": str(folder / "best.keras"),
                                                         "data": "data/test", "tta": tta}))
    lines = [f"c/{i:02d}.jpg,c,c,0.9,{int(right)},0.9" for i, right in enumerate(correct)]
    lines = lines[::-1] if reverse else lines
    (evaluation / "predictions.csv").write_text("image,true,predicted,probability,correct,probability_of_true\n" + "\n".join(lines) + "\n")
    return evaluation


def test_evaluated_runs_are_compared_photo_by_photo_seed_by_seed_with_the_settings_they_differ_in(tmp_path, monkeypatch):
    from bench import compare_evaluations

    # written in another order than the reference's: the comparison pairs photos by name
    better = [_evaluated_run(tmp_path / f"smoothed-{seed}", seed, [False] * 5 + [True] * 35, label_smoothing=0.1, reverse=True) for seed in (0, 1)]
    reference = [_evaluated_run(tmp_path / f"plain-{seed}", seed, [True] * 25 + [False] * 15) for seed in (0, 1)]
    monkeypatch.setattr(sys, "argv", ["compare_evaluations.py", "--evaluations", *map(str, better), "--reference", *map(str, reference),
                                      "--name", "smoothing", "--out", str(tmp_path / "out")])
    compare_evaluations.main()
    results = json.loads(next((tmp_path / "out").glob("compare-*-smoothing.json")).read_text())
    assert results["differences"] == {"label_smoothing": [0.1, 0.0]}
    assert [(m["only_a_right"], m["only_b_right"]) for m in results["mcnemar"]] == [(15, 5), (15, 5)]
    assert results["verdict"] == "better" and results["error_difference_points"] == -25.0
    assert results["reference"]["test_top1_err_seeds"] == [0.375, 0.375]
    assert results["evaluations"]["training_minutes"] == 3.0  # the stages and the same-class calibration
    assert results["evaluations"]["valid_top1_err_seeds"] == [0.25, 0.25]


@pytest.mark.parametrize("change, message", [
    (lambda runs: runs[:1], "2 evaluations against 1 references"),
    (lambda runs: runs[::-1], "pair runs of the same seed"),
])
def test_evaluations_that_do_not_pair_up_are_refused_in_one_line(tmp_path, change, message):
    from bench.compare_evaluations import pairing_problem, read_evaluation

    runs = [read_evaluation(_evaluated_run(tmp_path / f"a-{seed}", seed, [True, False])) for seed in (0, 1)]
    references = [read_evaluation(_evaluated_run(tmp_path / f"b-{seed}", seed, [True, True])) for seed in (0, 1)]
    assert pairing_problem(runs, references) is None
    assert message in pairing_problem(runs, change(references))


def test_evaluations_of_another_tta_are_refused(tmp_path):
    from bench.compare_evaluations import pairing_problem, read_evaluation

    run = read_evaluation(_evaluated_run(tmp_path / "a", 0, [True, False]))
    crops = read_evaluation(_evaluated_run(tmp_path / "b", 0, [True, False], tta="crops"))
    assert "another TTA" in pairing_problem([run], [crops])


def test_what_is_not_the_evaluation_of_one_findable_run_is_refused(tmp_path):
    from bench.compare_evaluations import read_evaluation

    with pytest.raises(ValueError, match="no metrics.json"):
        read_evaluation(tmp_path)
    ensemble = _evaluated_run(tmp_path / "a", 0, [True])
    metrics = json.loads((ensemble / "metrics.json").read_text())
    (ensemble / "metrics.json").write_text(json.dumps({**metrics, "model": ["a/best.keras", "b/best.keras"]}))
    with pytest.raises(ValueError, match="evaluated an ensemble"):
        read_evaluation(ensemble)
    moved = _evaluated_run(tmp_path / "b", 0, [True])
    (tmp_path / "b" / "state.json").unlink()
    with pytest.raises(ValueError, match="has no state.json here"):
        read_evaluation(moved)


def test_evaluated_runs_without_a_reference_are_reported_alone(tmp_path, monkeypatch):
    from bench import compare_evaluations

    runs = [_evaluated_run(tmp_path / f"run-{seed}", seed, [True] * 3 + [False]) for seed in (0, 1)]
    monkeypatch.setattr(sys, "argv", ["compare_evaluations.py", "--evaluations", *map(str, runs), "--name", "alone", "--out", str(tmp_path / "out")])
    compare_evaluations.main()
    results = json.loads(next((tmp_path / "out").glob("compare-*-alone.json")).read_text())
    assert results["evaluations"]["test_top1_err_seeds"] == [0.25, 0.25]
    assert not {"reference", "mcnemar", "verdict", "differences"} & set(results)
