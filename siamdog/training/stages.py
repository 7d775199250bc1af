"""One stage of the schedule: which part of the tower trains, and how the model is compiled."""

import keras


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if name == "nadam":
        return keras.optimizers.Nadam(learning_rate=learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")


def compile_stage(model: keras.Model, optimizer: keras.optimizers.Optimizer, binary_loss_weight: float = 0.0) -> None:
    """Compile for one stage: cross-entropy on each classifier output, and for the Siamese
    model a binary cross-entropy on `bin_out` weighted by `binary_loss_weight`."""
    if len(model.outputs) == 1:
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
        return
    model.compile(
        optimizer=optimizer,
        loss=["categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy"],
        loss_weights=[1.0, 1.0, binary_loss_weight],
        metrics=[["accuracy"], [], ["accuracy"]],
    )
