"""The classifiers built on a tower: the Siamese multi-loss model and the softmax-only baseline.

Multi-loss (the original recipe): two images go through one shared tower; one classifier
(Dropout + Dense softmax) is applied to each (`ctg_out_1`, `ctg_out_2`), and a binary head on
the squared difference of the two pooled features says whether they show the same class
(`bin_out`). Softmax-only: one image, one classifier (`ctg_out`).
"""

import keras

MODES = ("multiloss", "softmax")


def _classifier(num_classes: int, dropout: float) -> keras.Sequential:
    return keras.Sequential(
        [keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")], name="classifier"
    )


def build_siamese(tower: keras.Model, num_classes: int, dropout: float = 0.5) -> keras.Model:
    """(image_1, image_2) -> (ctg_out_1, ctg_out_2, bin_out)."""
    shape = tower.input_shape[1:]
    image_1 = keras.Input(shape, name="image_1")
    image_2 = keras.Input(shape, name="image_2")
    # training=False keeps BatchNorm in inference mode even for unfrozen blocks.
    features_1 = tower(image_1, training=False)
    features_2 = tower(image_2, training=False)
    classifier = _classifier(num_classes, dropout)
    ctg_1 = keras.layers.Identity(name="ctg_out_1")(classifier(features_1))
    ctg_2 = keras.layers.Identity(name="ctg_out_2")(classifier(features_2))
    difference = keras.layers.Subtract(name="feature_difference")([features_1, features_2])
    squared = keras.layers.Multiply(name="squared_difference")([difference, difference])
    same = keras.layers.Dense(1, activation="sigmoid", name="bin_out")(squared)
    return keras.Model([image_1, image_2], [ctg_1, ctg_2, same], name="siamdog_multiloss")


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


def heads_of(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The training model without its tower: pooled features in, the same outputs out.

    Returns (heads, feature classifier); both share the training model's head layers, so
    training them on cached features trains the full model's heads.
    """
    dim = tower_of(model).output_shape[-1]
    classifier = model.get_layer("classifier")
    features_1 = keras.Input((dim,), name="features_1")
    probabilities = classifier(features_1)
    feature_classifier = keras.Model(features_1, probabilities, name="feature_classifier")
    if len(model.outputs) == 1:
        heads = keras.Model(features_1, keras.layers.Identity(name="ctg_out")(probabilities), name="softmax_heads")
        return heads, feature_classifier
    features_2 = keras.Input((dim,), name="features_2")
    ctg_1 = keras.layers.Identity(name="ctg_out_1")(probabilities)
    ctg_2 = keras.layers.Identity(name="ctg_out_2")(classifier(features_2))
    difference = keras.layers.Subtract(name="feature_difference")([features_1, features_2])
    squared = keras.layers.Multiply(name="squared_difference")([difference, difference])
    same = model.get_layer("bin_out")(squared)
    return keras.Model([features_1, features_2], [ctg_1, ctg_2, same], name="multiloss_heads"), feature_classifier


def tower_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if layer.name.endswith("_tower"))
