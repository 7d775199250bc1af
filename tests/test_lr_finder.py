"""The learning-rate range test: the sweep's arithmetic without TensorFlow, then `siamdog lr-find`
end to end on the demo set."""

import csv

import cv2
import numpy as np
import pytest

from siamdog.cli import main
from siamdog.config import save_config
from siamdog.errors import SiamdogError
from siamdog.training.lr_finder import diverged, smoothed, suggest, sweep_rates
from tests.conftest import tiny_config


def test_rates_grow_geometrically_and_bad_ranges_are_refused():
    rates = sweep_rates(1e-6, 1e3, 10)
    np.testing.assert_allclose(rates, 10.0 ** np.arange(-6, 4))
    with pytest.raises(SiamdogError, match="0 < start < end"):
        sweep_rates(1e-2, 1e-3, 100)
    with pytest.raises(SiamdogError, match="at least 10 steps"):
        sweep_rates(1e-6, 1.0, 3)


def test_smoothing_is_an_unbiased_moving_average():
    np.testing.assert_allclose(smoothed([2.0] * 5), [2.0] * 5)  # not pulled towards 0 at the start
    noisy = smoothed([1.0, 3.0] * 50)
    assert noisy[-1] == pytest.approx(2.0, abs=0.05) and np.ptp(noisy[-10:]) < 0.1


def test_the_suggestion_is_the_steepest_fall_before_the_minimum():
    rates = np.geomspace(1e-6, 1.0, 200)
    # The loss falls from 3 to 1 around 1e-3 (steepest there), then blows up above 0.1.
    fall = 3 - 2 / (1 + np.exp(-(np.log10(rates) + 3) / 0.3))
    losses = fall + 50 * np.clip(np.log10(rates) + 1, 0, None) ** 2
    rate, reason = suggest(rates, losses)
    assert rate == pytest.approx(1e-3, rel=0.1) and reason == "steepest descent of the loss"
    assert not diverged(losses[:150]) and diverged(losses) and diverged(np.array([1.0, np.nan]))


def test_a_nearly_flat_loss_suggests_a_tenth_of_the_rate_of_its_minimum():
    rates = np.geomspace(1e-6, 1.0, 100)
    # Trained heads: the loss barely moves (5 %, lowest at 1e-2) until it blows up.
    losses = 0.40 - 0.02 * np.exp(-((np.log10(rates) + 2) ** 2)) + 5 * np.clip(np.log10(rates) + 1, 0, None) ** 2
    rate, reason = suggest(rates, losses)
    assert rate == pytest.approx(1e-3, rel=0.2) and "a tenth of the rate of the lowest loss" in reason


def test_a_loss_that_never_falls_is_refused_with_advice():
    rates = np.geomspace(1e-3, 1.0, 50)
    with pytest.raises(SiamdogError, match="start the sweep lower"):
        suggest(rates, np.linspace(1.0, 5.0, 50))


def test_lr_find_sweeps_a_stage_and_writes_the_plot_and_the_steps(demo, tmp_path, capsys):
    save_config(tiny_config(), tmp_path / "tiny.yaml")
    before = sorted(p.relative_to(demo) for p in demo.rglob("*"))
    out = tmp_path / "sweep"
    argv = ["lr-find", "--data", str(demo / "data"), "--out", str(out), "--config", str(tmp_path / "tiny.yaml"),
            "--stage", "finetune", "--start", "1e-5", "--end", "10", "--steps", "30", "--workers", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "stage finetune" in printed and "suggested learning_rate" in printed
    with open(out / "lr-find.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert 10 <= len(rows) <= 30
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], np.geomspace(1e-5, 10, 30)[: len(rows)], rtol=1e-6)
    assert np.isfinite([float(r["loss"]) for r in rows[:-1]]).all(), "only the step that diverged may be infinite"
    suggested = float(printed.split("suggested learning_rate ")[1].split()[0])
    assert 1e-5 <= suggested <= 10
    picture = cv2.imread(str(out / "lr-find.png"))
    assert picture is not None and picture.std() > 0
    assert sorted(p.relative_to(demo) for p in demo.rglob("*")) == before, "the sweep wrote into the data or a run"


@pytest.mark.parametrize(
    "extra, message",
    [(["--start", "1", "--end", "0.1"], "0 < start < end"), (["--stage", "warmup"], "unknown stage 'warmup'")],
)
def test_lr_find_refuses_bad_requests_in_one_line(demo, tmp_path, capsys, extra, message):
    save_config(tiny_config(), tmp_path / "tiny.yaml")
    argv = ["lr-find", "--data", str(demo / "data"), "--out", str(tmp_path / "sweep"), "--config", str(tmp_path / "tiny.yaml"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_in_one_of_several_processes_feeds_its_share_of_each_batch(monkeypatch):
    from types import SimpleNamespace

    import keras

    from siamdog.training import distribution, lr_finder

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            rows = np.arange(4) + 4 * index
            return rows[:, None].astype("float32"), rows

    fed = []

    def train_on_batch(x, y, return_dict):
        fed.append(y.tolist())
        return {"loss": 1.0}

    prepared = SimpleNamespace(model=SimpleNamespace(optimizer=SimpleNamespace(learning_rate=0.0), train_on_batch=train_on_batch),
                               data=Batches(), samples=SimpleNamespace(set_epoch=lambda epoch: None))
    monkeypatch.setattr(distribution, "process_place", lambda: (1, 2))  # the second of two processes
    lr_finder._sweep(prepared, np.geomspace(1e-3, 1e-1, 3))
    assert fed == [[2, 3], [6, 7], [2, 3]], "its half of each batch, as fit feeds it"
