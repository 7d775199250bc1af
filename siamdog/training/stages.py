"""One stage of the schedule: its optimizer, and how the model is compiled for it."""

import functools

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


class ScaledLearningRates:
    """Mixed into a Keras optimizer: the variables named in `multipliers` (by path) are
    updated at the learning rate times their multiplier, the rest at the learning rate.

    Scaling the gradients instead would not do for Adam and Nadam, whose steps do not depend
    on the gradients' scale; each group of variables goes through the optimizer's own update
    at its rate, on every backend.
    """

    def __init__(self, *args, multipliers: dict[str, float], **kwargs):
        super().__init__(*args, **kwargs)
        self.multipliers = dict(multipliers)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        groups: dict[float, tuple[list, list]] = {}
        for gradient, variable in zip(grads, trainable_variables):
            group = groups.setdefault(self.multipliers.get(variable.path, 1.0), ([], []))
            group[0].append(gradient)
            group[1].append(variable)
        for multiplier, (group_grads, group_variables) in groups.items():
            rate = learning_rate if multiplier == 1.0 else learning_rate * multiplier
            super()._backend_update_step(group_grads, group_variables, rate)


OPTIMIZERS = {"sgd": keras.optimizers.SGD, "nadam": keras.optimizers.Nadam, "adam": keras.optimizers.Adam}


@functools.cache
def _with_scaled_rates(optimizer_class: type) -> type:
    return type(optimizer_class.__name__, (ScaledLearningRates, optimizer_class), {})


def make_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    momentum: float = 0.0,
    multipliers: dict[str, float] | None = None,
) -> keras.optimizers.Optimizer:
    """The stage's optimizer; with `multipliers` (variable path -> factor, see
    siamdog.models.backbones.block_learning_rates) those variables train at scaled rates."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}")
    options = {"momentum": momentum} if name == "sgd" else {}
    if multipliers:
        return _with_scaled_rates(OPTIMIZERS[name])(learning_rate=learning_rate, multipliers=multipliers, **options)
    return OPTIMIZERS[name](learning_rate=learning_rate, **options)


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


def build_before_fit(model: keras.Model, data: keras.utils.PyDataset) -> None:
    """Build the compiled `model`'s losses and metrics on `data`'s first batch, so that `fit`
    need not. The JAX and torch trainers build them by starting an epoch of `data`, taking one
    batch and ending the epoch; with several loader threads, the batches prefetched by then
    come back at the start of the first real epoch, which trains on them twice and never
    reaches its last ones (a run's losses then depend on the thread count). TensorFlow's fit
    builds while it traces, or, under a MirroredStrategy, starts that epoch built or not
    (see distribution.loader_workers), so there this would only cost a trace."""
    if keras.backend.backend() == "tensorflow":
        return
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data[0])
    model.evaluate(x, y, sample_weight=sample_weight, batch_size=len(keras.tree.flatten(x)[0]), verbose=0)
