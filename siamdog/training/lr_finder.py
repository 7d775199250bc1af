"""The learning-rate range test (fast.ai's LR finder): train one stage for some batches (100 by
default) while its learning rate grows geometrically, and read off where the loss falls fastest.

The stage is set up exactly as training sets it up (same model, batches, cached pass, loss
weights), on a throwaway model: nothing is written to any run. The sweep stops when the
smoothed loss passes DIVERGENCE times its lowest value, or is no longer finite. The suggestion
is the rate where the smoothed loss falls fastest against log(learning rate), before its
minimum; where the loss hardly falls at all (a stage that starts from trained heads), the
steepest point is noise, and the suggestion is a tenth of the rate of the lowest loss instead.
Either is a starting point for the stage's `learning_rate`, to be checked on the valid split.
"""

import csv
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from siamdog.errors import SiamdogError

log = logging.getLogger(__name__)

DIVERGENCE = 4.0  # the sweep stops once the smoothed loss is this many times its minimum
SMOOTHING = 0.98  # of the exponential moving average of the batch losses
SKIP_START = 0.1  # the share of the first steps left out of the suggestion (noisy, still warming up)
FLAT = 0.1  # a fall of less than this share of the loss before its minimum is no slope to read


def sweep_rates(start: float, end: float, steps: int) -> np.ndarray:
    """`steps` learning rates from `start` to `end`, evenly spaced on a log scale."""
    if not 0 < start < end:
        raise SiamdogError(f"the sweep needs 0 < start < end, got start {start:g}, end {end:g}")
    if steps < 10:
        raise SiamdogError(f"the sweep needs at least 10 steps, got {steps}")
    return np.geomspace(start, end, steps)


def smoothed(losses: list[float], beta: float = SMOOTHING) -> np.ndarray:
    """The bias-corrected exponential moving average of the batch losses."""
    average, out = 0.0, []
    for step, loss in enumerate(losses, 1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**step))
    return np.array(out)


def diverged(smooth_losses: np.ndarray) -> bool:
    """Whether the sweep should stop: the last smoothed loss is not finite or has blown up."""
    last = smooth_losses[-1]
    return not np.isfinite(last) or last > DIVERGENCE * np.min(smooth_losses)


def suggest(rates: np.ndarray, smooth_losses: np.ndarray) -> tuple[float, str]:
    """(rate, how it was chosen): the steepest descent of the smoothed loss against log(rate)
    up to its minimum, or a tenth of the minimum's rate where the loss hardly falls."""
    lowest = int(np.argmin(smooth_losses))
    first = int(len(smooth_losses) * SKIP_START)
    if lowest - first < 3:
        raise SiamdogError(
            f"the loss fell for only {lowest} of {len(smooth_losses)} steps before it rose: start the sweep lower"
        )
    fall = (smooth_losses[first] - smooth_losses[lowest]) / smooth_losses[first]
    if fall < FLAT:
        return float(rates[lowest] / 10), f"the loss fell only {100 * fall:.0f} %: a tenth of the rate of the lowest loss"
    slopes = np.gradient(smooth_losses[first : lowest + 1], np.log(rates[first : lowest + 1]))
    return float(rates[first + int(np.argmin(slopes))]), "steepest descent of the loss"


@dataclasses.dataclass
class SweepResult:
    rates: np.ndarray  # the rates of the steps that ran
    losses: np.ndarray  # each step's batch loss
    smooth_losses: np.ndarray
    suggestion: float
    reason: str  # how the suggestion was chosen
    stage: str

    def summary(self) -> str:
        return (
            f"stage {self.stage}: {len(self.rates)} steps from {self.rates[0]:.2g} to {self.rates[-1]:.2g}; lowest smoothed loss "
            f"{np.min(self.smooth_losses):.4f} at {self.rates[int(np.argmin(self.smooth_losses))]:.2g}; "
            f"suggested learning_rate {self.suggestion:.2g} ({self.reason})"
        )


def find_learning_rate(
    data_dir: str | os.PathLike,
    config,
    stage_name: str | None = None,
    start: float = 1e-7,
    end: float = 1.0,
    steps: int = 100,
    out_dir: str | os.PathLike | None = None,
    workers: int = 4,
) -> SweepResult:
    """Sweep the learning rate of one stage of `config` (the first by default) on
    `data_dir`/train; with `out_dir`, write lr-find.csv and lr-find.png there."""
    from siamdog.data.batches import DirectoryBatches
    from siamdog.training.distribution import distributed
    from siamdog.training.trainer import (
        calibrate_random_tower, check_settings, data_folders, for_this_machine, new_model, prepare_stage, seed_everything,
    )

    rates = sweep_rates(start, end, steps)
    names = config.stage_names()
    name = stage_name or names[0]
    if name not in names:
        raise SiamdogError(f"unknown stage {name!r} (this config has: {', '.join(names)})")
    index = names.index(name)
    stage = config.stages[index]
    train_dir, valid_dir, classes = data_folders(Path(data_dir))
    config = for_this_machine(config)
    check_settings(config, len(classes))
    seed_everything(config.seed)
    with distributed(config.distribution, config.batch_size, config.mode):
        model = new_model(config, len(classes))
        calibrate_random_tower(model.tower, config, train_dir, classes)
        valid = DirectoryBatches(valid_dir, (config.image_size,) * 2, config.batch_size, shuffle=False, classes=classes)
        prepared = prepare_stage(stage, index, config, model, train_dir, valid, classes, workers, learning_rate=float(rates[0]))
        losses = _sweep(prepared, rates)
    smooth = smoothed(losses)
    result = SweepResult(rates[: len(losses)], np.array(losses), smooth, *suggest(rates[: len(losses)], smooth), name)
    if out_dir is not None:
        write_sweep(result, Path(out_dir))
    return result


def _sweep(prepared, rates: np.ndarray) -> list[float]:
    from tqdm import tqdm

    from siamdog.training.distribution import process_data

    optimizer = prepared.model.optimizer
    losses: list[float] = []
    data = process_data(prepared.data)  # in a run of several processes, this one's share of each batch
    batches = len(data)
    for step, rate in enumerate(tqdm(rates, desc="learning-rate sweep", unit="step")):
        if step % batches == 0:
            prepared.samples.set_epoch(step // batches)  # each epoch's order, as fit would draw it
        optimizer.learning_rate = float(rate)
        x, y = data[step % batches]
        losses.append(float(prepared.model.train_on_batch(x, y, return_dict=True)["loss"]))
        if diverged(smoothed(losses)):
            log.info("the loss diverged at learning rate %.3g; sweep stopped after %d steps", rate, step + 1)
            break
    return losses


def write_sweep(result: SweepResult, out_dir: Path) -> None:
    """lr-find.csv (every step) and lr-find.png (loss against learning rate, the suggestion marked)."""
    from siamdog.plots import plot_learning_rate_sweep

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "lr-find.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["learning_rate", "loss", "smoothed_loss"])
        writer.writerows(zip(result.rates.tolist(), result.losses.tolist(), result.smooth_losses.tolist()))
    top = min(float(np.max(result.losses)), DIVERGENCE * float(np.min(result.smooth_losses)))
    plot_learning_rate_sweep(result.rates, result.losses, result.smooth_losses, result.suggestion, result.stage, top, out_dir / "lr-find.png")
