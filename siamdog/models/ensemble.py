"""An ensemble of classifiers of the same classes: one Keras model whose output is the mean of
its members' class probabilities. It is an ordinary model, so evaluation, prediction and TTA
take it as they take a single run's classifier."""

import keras


def average_classifiers(classifiers: list[keras.Model]) -> keras.Model:
    """The mean of the probabilities of `classifiers`, which take one input shape and give
    one output shape (checked by the caller, who can name the files)."""
    inputs = keras.Input(classifiers[0].input_shape[1:], dtype=classifiers[0].inputs[0].dtype, name="image")
    # Runs save their classifiers under one name and a model's layers need distinct ones, so
    # each member is wrapped under a name of its own (the classifiers themselves keep theirs).
    members = [keras.Model(c.input, c.output, name=f"member_{k}") for k, c in enumerate(classifiers)]
    return keras.Model(inputs, keras.layers.Average()([member(inputs) for member in members]), name="ensemble")
