"""The classifiers built on a tower: the Siamese multi-loss model and the softmax-only baseline.

Multi-loss (the original recipe): the images of a pair go through one shared tower; one
classifier (Dropout + Dense softmax) is applied to each (`ctg_out_1`, `ctg_out_2`), and a
binary head on the squared difference of the two pooled features says whether they show the
same class (`bin_out`). Both members of a pair come from one batch (see
siamdog.data.batches.PairedBatches), so the tower runs once per image: the model takes the
batch and each sample's `partner` index, and gathers the partners' features. Softmax-only: one
image, one classifier (`ctg_out`).
"""

import keras

MODES = ("multiloss", "softmax")


def _classifier(num_classes: int, dropout: float) -> keras.Sequential:
    return keras.Sequential(
        [keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")], name="classifier"
    )


@keras.saving.register_keras_serializable(package="siamdog")
class PartnerFeatures(keras.layers.Layer):
    """Row i of the output is row `partner[i]` of the features: the second member of each pair."""

    def call(self, features, partner):
        return keras.ops.take(features, partner, axis=0)

    def compute_output_shape(self, features_shape, partner_shape):
        return features_shape


def _multiloss_outputs(classifier: keras.layers.Layer, same_head: keras.layers.Layer, features, partner) -> list:
    """(ctg_out_1, ctg_out_2, bin_out) from a batch's features and each sample's partner index:
    one classifier on each member of a pair, and the "same class?" head on the squared
    difference of their features."""
    features_2 = PartnerFeatures(name="partner_features")(features, partner)
    ctg_1 = keras.layers.Identity(name="ctg_out_1")(classifier(features))
    ctg_2 = keras.layers.Identity(name="ctg_out_2")(classifier(features_2))
    difference = keras.layers.Subtract(name="feature_difference")([features, features_2])
    squared = keras.layers.Multiply(name="squared_difference")([difference, difference])
    return [ctg_1, ctg_2, same_head(squared)]


def _partner_input() -> keras.KerasTensor:
    return keras.Input((), dtype="int32", name="partner")


def build_siamese(tower: keras.Model, num_classes: int, dropout: float = 0.5) -> keras.Model:
    """(images, partner) -> (ctg_out_1, ctg_out_2, bin_out)."""
    image = keras.Input(tower.input_shape[1:], name="image_1")
    partner = _partner_input()
    # BatchNorm stays in inference mode because unfreeze_last_blocks never unfreezes it.
    outputs = _multiloss_outputs(
        _classifier(num_classes, dropout),
        keras.layers.Dense(1, activation="sigmoid", name="bin_out"),
        tower(image, training=False),
        partner,
    )
    return keras.Model([image, partner], outputs, name="siamdog_multiloss")


def build_softmax(tower: keras.Model, num_classes: int, dropout: float = 0.5) -> keras.Model:
    """image -> ctg_out."""
    image = keras.Input(tower.input_shape[1:], name="image_1")
    probabilities = _classifier(num_classes, dropout)(tower(image, training=False))
    return keras.Model(image, keras.layers.Identity(name="ctg_out")(probabilities), name="siamdog_softmax")


def build_model(mode: str, tower: keras.Model, num_classes: int, dropout: float = 0.5) -> keras.Model:
    if mode == "multiloss":
        return build_siamese(tower, num_classes, dropout)
    if mode == "softmax":
        return build_softmax(tower, num_classes, dropout)
    raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")


def classifier_of(model: keras.Model) -> keras.Model:
    """The single-image classifier inside a training model: image -> class probabilities.

    It shares the training model's layers (so it sees training progress) and is what is saved
    for evaluate and predict.
    """
    names = {layer.name for layer in model.layers}
    output = model.get_layer("ctg_out_1" if "ctg_out_1" in names else "ctg_out").output
    return keras.Model(model.inputs[0], output, name="siamdog_classifier")


def heads_of(model: keras.Model, tail: keras.Model | None = None) -> tuple[keras.Model, keras.Model]:
    """The training model without the frozen front of its tower, with the same outputs.

    Inputs are pooled features (no `tail`), or activations that `tail`, the trainable end
    of the tower, turns into pooled features. Returns (model to train, single-input
    classifier); both share the training model's layers, so training them on cached inputs
    trains the full model.
    """
    shape = tail.input_shape[1:] if tail is not None else (tower_of(model).output_shape[-1],)

    inputs = keras.Input(shape, name="cached")
    features = tail(inputs, training=False) if tail is not None else inputs
    classifier = model.get_layer("classifier")
    probabilities = classifier(features)
    cached_classifier = keras.Model(inputs, probabilities, name="cached_classifier")
    if len(model.outputs) == 1:
        heads = keras.Model(inputs, keras.layers.Identity(name="ctg_out")(probabilities), name="softmax_on_cache")
        return heads, cached_classifier
    partner = _partner_input()
    outputs = _multiloss_outputs(classifier, model.get_layer("bin_out"), features, partner)
    return keras.Model([inputs, partner], outputs, name="multiloss_on_cache"), cached_classifier


def tower_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if layer.name.endswith("_tower"))
