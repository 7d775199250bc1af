"""One stage of the schedule: its optimizer, and how the model is compiled for it."""

import keras

from siamdog.models.siamese import OUTPUTS
from siamdog.training.losses import batch_hard_triplet


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
    return keras.losses.BinaryCrossentropy()


def compile_stage(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    binary_loss_weight: float = 0.0,
    label_smoothing: float = 0.0,
    triplet_loss_weight: float = 0.0,
) -> None:
    """Compile for one stage: each output's loss, metric and weight from the OUTPUTS table
    (cross-entropy on the classifier outputs, with `label_smoothing`; binary cross-entropy on
    `bin_out`, weighted by `binary_loss_weight`; the batch-hard triplet loss on
    `embedding_out`, weighted by `triplet_loss_weight`)."""
    weights = {"classifier": 1.0, "binary_loss_weight": binary_loss_weight, "triplet_loss_weight": triplet_loss_weight}
    specs = {name: OUTPUTS[name] for name in model.output_names}
    model.compile(
        optimizer=optimizer,
        loss={name: _loss(spec.loss, label_smoothing) for name, spec in specs.items()},
        loss_weights={name: weights[spec.weight] for name, spec in specs.items()},
        metrics={name: [spec.metric] for name, spec in specs.items() if spec.metric},
    )
