"""An ensemble of classifiers of the same classes: one Keras model whose output is the mean of
its members' class probabilities. It is an ordinary model, so evaluation, prediction and TTA
take it as they take a single run's classifier.

Members may take different input sizes (runs trained at 299 and at 400 px: the two sizes'
frozen features err less together than either alone, bench/README.md). The ensemble takes
images at its largest member's size, and each smaller member sees them resized to its own."""

import keras


def average_classifiers(classifiers: list[keras.Model]) -> keras.Model:
    """The mean of the probabilities of `classifiers`, which give one output shape (checked
    by the caller, who can name the files)."""
    largest = max(classifiers, key=lambda c: c.input_shape[1] * c.input_shape[2])
    inputs = keras.Input(largest.input_shape[1:], dtype=largest.inputs[0].dtype, name="image")
    # Runs save their classifiers under one name and a model's layers need distinct ones, so
    # each member is wrapped under a name of its own (the classifiers themselves keep theirs).
    members = [keras.Model(c.input, c.output, name=f"member_{k}") for k, c in enumerate(classifiers)]
    return keras.Model(inputs, keras.layers.Average()([member(_sized(inputs, member)) for member in members]), name="ensemble")


def _sized(images, member: keras.Model):
    """`images` at `member`'s input size: as they are, or resized down with antialiasing (a
    plain bilinear resize would skip pixels, which the loader's resize from the photo does not)."""
    height, width = member.input_shape[1:3]
    if tuple(images.shape[1:3]) == (height, width):
        return images
    return keras.layers.Resizing(height, width, interpolation="bilinear", antialias=True)(images)
