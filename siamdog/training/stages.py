"""One stage of the schedule: its optimizer, and how the model is compiled for it."""

import keras

from siamdog.models.siamese import OUTPUTS
from siamdog.training.losses import batch_hard_triplet, center_loss, mined_pair_loss


def learning_rate_schedule(
    kind: str, peak: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 0, cycle_epochs: int = 1
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate of a stage, per training step: `peak` as is for "plateau" (which
    ReduceLROnPlateau lowers), or Keras's cosine schedules: "cosine" rises linearly from 0 over
    `warmup_epochs` and decays to 0 by the end of the last of `epochs`; "cosine_restarts" (SGDR)
    starts again from `peak` after `cycle_epochs`, then after cycles twice as long each time.
    The optimizer counts the steps and a checkpoint keeps the count, so a resumed stage goes on
    where it was on the curve."""
    if kind == "plateau":
        return peak
    schedules = keras.optimizers.schedules
    if kind == "cosine":
        decay = (epochs - warmup_epochs) * steps_per_epoch
        return schedules.CosineDecay(0.0, decay, warmup_target=peak, warmup_steps=warmup_epochs * steps_per_epoch)
    if kind == "cosine_restarts":
        return schedules.CosineDecayRestarts(peak, cycle_epochs * steps_per_epoch, t_mul=2.0)
    raise ValueError(f"unknown learning-rate schedule {kind!r}")


def make_optimizer(
    name: str, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule, momentum: float = 0.0
) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if name == "nadam":
        return keras.optimizers.Nadam(learning_rate=learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")


def _loss(kind: str, label_smoothing: float):
    if kind == "categorical":
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    if kind == "triplet":
        return batch_hard_triplet
    if kind == "center":
        return center_loss
    if kind == "mined_pairs":
        return mined_pair_loss
    return keras.losses.BinaryCrossentropy()


def compile_stage(model: keras.Model, optimizer: keras.optimizers.Optimizer, label_smoothing: float = 0.0, **loss_weights: float) -> None:
    """Compile for one stage: each output's loss, metric and weight from the OUTPUTS table.

    The classifier outputs get cross-entropy (with `label_smoothing`) at weight 1; every other
    output's weight is the stage setting its OutputSpec names, given here by that name
    (`binary_loss_weight` for `bin_out`, `triplet_loss_weight`, `center_loss_weight`,
    `mined_pair_loss_weight`), 0 when not given.
    """
    specs = {name: OUTPUTS[name] for name in model.output_names}
    weights = {name: 1.0 if spec.weight == "classifier" else float(loss_weights.get(spec.weight, 0.0)) for name, spec in specs.items()}
    model.compile(
        optimizer=optimizer,
        loss={name: _loss(spec.loss, label_smoothing) for name, spec in specs.items()},
        loss_weights=weights,
        metrics={name: [spec.metric] for name, spec in specs.items() if spec.metric},
    )
