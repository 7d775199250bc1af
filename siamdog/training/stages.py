"""One stage of the schedule: its optimizer, and how the model is compiled for it."""

import keras

from siamdog.models.siamese import OUTPUTS
from siamdog.training.losses import batch_hard_triplet, center_loss, mined_pair_loss


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0) -> keras.optimizers.Optimizer:
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
