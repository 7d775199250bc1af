"""An ensemble of classifiers of the same classes: one Keras model whose output is the mean of
its members' class probabilities. It is an ordinary model, so evaluation, prediction and TTA
take it as they take a single run's classifier."""

import keras


def average_classifiers(classifiers: list[keras.Model]) -> keras.Model:
    """The mean of the probabilities of `classifiers`, which take one input shape and give
    one output shape (checked by the caller, who can name the files)."""
    inputs = keras.Input(classifiers[0].input_shape[1:], dtype=classifiers[0].inputs[0].dtype, name="image")
    for k, member in enumerate(classifiers):
        member.name = f"member_{k}"  # runs save their classifiers under one name; a model's layers need distinct ones
    return keras.Model(inputs, keras.layers.Average()([member(inputs) for member in classifiers]), name="ensemble")
