"""The classifiers built on a tower: the Siamese multi-loss model and the softmax-only baseline.

Multi-loss (the original recipe): the images of a pair go through one shared tower; one
classifier (Dropout + Dense softmax) is applied to each (`ctg_out_1`, `ctg_out_2`), and a
binary head on the squared difference of the two pooled features says whether they show the
same class (`bin_out`). Three more outputs serve optional losses over the whole batch
(siamdog.training.losses), each weighed by a stage setting that is 0 by default: the features
(`embedding_out`, for the batch-hard triplet loss), their squared distances to learned class
centers (`center_out`, for the center loss of the Baidu blog's recipe), and the same-class head
applied to every pair of the batch (`pairs_out`, for its loss on every positive pair and each
sample's hardest negative). Both members of a pair come from one batch (see
siamdog.data.batches.PairedBatches), so the tower runs once per image: the model takes the
batch and each sample's `partner` index, and gathers the partners' features. Softmax-only: one
image, one classifier (`ctg_out`).

With `embedding_size` > 0 the heads read a learned embedding of the pooled features instead of
the features themselves: a gated linear unit (GLU) that compresses them, the "feature
compression" of the Baidu blog's head. It trains in every stage, the frozen ones included, so
the "same class?" loss shapes what the classifier reads even while the tower is frozen
(without it, that loss reaches only `bin_out` until blocks are unfrozen).

`build_model` returns a `SiamdogModel` that holds the parts (tower, classifier, same-class
head) and the models made of them; `OUTPUTS` says, for every output name, its loss, its metric
and which stage setting weighs it (the targets of the same names come from
siamdog.data.pairing.pair_targets). Compiling, the batch sources' targets and the heads-only
models are all derived from these, never from layer names or output positions.
"""

from dataclasses import dataclass

import keras

MODES = ("multiloss", "softmax")


@dataclass(frozen=True)
class OutputSpec:
    """How one named output is trained: its loss, the metric logged for it, and its weight
    (`classifier`: 1; otherwise the stage's setting of that name)."""

    loss: str  # "categorical" or "binary" cross-entropy, or "triplet" (batch-hard, on the embedding)
    metric: str | None
    weight: str


OUTPUTS = {
    "ctg_out": OutputSpec("categorical", "accuracy", "classifier"),
    "ctg_out_1": OutputSpec("categorical", "accuracy", "classifier"),
    "ctg_out_2": OutputSpec("categorical", None, "classifier"),
    "bin_out": OutputSpec("binary", "accuracy", "binary_loss_weight"),
    "embedding_out": OutputSpec("triplet", None, "triplet_loss_weight"),
    "center_out": OutputSpec("center", None, "center_loss_weight"),
    "pairs_out": OutputSpec("mined_pairs", None, "mined_pair_loss_weight"),
}
# The optional outputs of the batch-wide losses: a model has only those its stages weigh, since
# each costs work on every training step (center_out: batch x classes x features; pairs_out:
# batch x batch x features).
BATCH_OUTPUTS = ("embedding_out", "center_out", "pairs_out")


@dataclass
class SiamdogModel:
    """The parts of a model and the models built from them (all sharing the same layers).

    `training` is what `fit` trains (multi-loss: (images, partner) -> ctg_out_1, ctg_out_2,
    bin_out; softmax: image -> ctg_out); `image_classifier` (image -> class probabilities) is
    what is saved for evaluate and predict.
    """

    mode: str
    tower: keras.Model
    embedding: keras.layers.Layer | None
    classifier: keras.Sequential
    same_head: keras.layers.Dense | None
    centers: "ClassCenters | None"
    training: keras.Model
    image_classifier: keras.Model
    embedder: keras.Model  # image -> the features the heads read (for similar-photo search)
    same_class: keras.Model | None  # (features, features) -> probability of one class (multiloss)
    batch_outputs: tuple[str, ...]  # which of BATCH_OUTPUTS the training models have


def _classifier(num_classes: int, dropout: float) -> keras.Sequential:
    return keras.Sequential(
        [keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")], name="classifier"
    )


@keras.saving.register_keras_serializable(package="siamdog")
class GatedLinearUnit(keras.layers.Layer):
    """(x W + b) * sigmoid(x V + c): a linear map whose every unit has a learned gate."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.linear = keras.layers.Dense(units, name="linear")
        self.gate = keras.layers.Dense(units, activation="sigmoid", name="gate")

    def build(self, input_shape):
        self.linear.build(input_shape)
        self.gate.build(input_shape)

    def call(self, inputs):
        return self.linear(inputs) * self.gate(inputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="siamdog")
class PartnerFeatures(keras.layers.Layer):
    """Row i of the output is row `partner[i]` of the features: the second member of each pair."""

    def call(self, features, partner):
        return keras.ops.take(features, partner, axis=0)

    def compute_output_shape(self, features_shape, partner_shape):
        return features_shape


@keras.saving.register_keras_serializable(package="siamdog")
class ClassCenters(keras.layers.Layer):
    """Learned class centers; the output row i holds the squared distances of sample i's
    features to every center (the center loss reads the distance to its own class's)."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def build(self, input_shape):
        self.centers = self.add_weight(shape=(self.num_classes, input_shape[-1]), initializer="zeros", name="centers")

    def call(self, features):
        difference = features[:, None, :] - self.centers[None, :, :]
        return keras.ops.sum(difference * difference, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="siamdog")
class AllPairs(keras.layers.Layer):
    """The squared feature differences of every pair of the batch: (batch, batch, features)."""

    def call(self, features):
        difference = features[:, None, :] - features[None, :, :]
        return difference * difference

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[0], input_shape[-1])


def _multiloss_outputs(classifier, same_head, centers, features, partner, batch_outputs) -> list:
    """The multi-loss outputs from a batch's features and each sample's partner index: one
    classifier on each member of a pair, the "same class?" head on the squared difference of
    their features, and those of `batch_outputs` that the batch-wide losses need: the
    features, their distances to the class centers, the same-class head on every pair."""
    features_2 = PartnerFeatures(name="partner_features")(features, partner)
    ctg_1 = keras.layers.Identity(name="ctg_out_1")(classifier(features))
    ctg_2 = keras.layers.Identity(name="ctg_out_2")(classifier(features_2))
    difference = keras.layers.Subtract(name="feature_difference")([features, features_2])
    squared = keras.layers.Multiply(name="squared_difference")([difference, difference])
    optional = {
        "embedding_out": lambda: keras.layers.Identity(name="embedding_out")(features),
        "center_out": lambda: keras.layers.Identity(name="center_out")(centers(features)),
        "pairs_out": lambda: keras.layers.Reshape((-1,), name="pairs_out")(same_head(AllPairs(name="all_pairs")(features))),
    }
    return [ctg_1, ctg_2, same_head(squared), *(optional[name]() for name in BATCH_OUTPUTS if name in batch_outputs)]


def _partner_input() -> keras.KerasTensor:
    return keras.Input((), dtype="int32", name="partner")


def _heads(mode: str, classifier, same_head, centers, batch_outputs, inputs, features, name: str) -> keras.Model:
    """The training model from `inputs` whose pooled `features` feed the heads."""
    if mode == "softmax":
        return keras.Model(inputs, keras.layers.Identity(name="ctg_out")(classifier(features)), name=name)
    partner = _partner_input()
    outputs = _multiloss_outputs(classifier, same_head, centers, features, partner, batch_outputs)
    return keras.Model([inputs, partner], outputs, name=name)


def build_model(
    mode: str,
    tower: keras.Model,
    num_classes: int,
    dropout: float = 0.5,
    embedding_size: int = 0,
    batch_outputs: tuple[str, ...] = BATCH_OUTPUTS,
) -> SiamdogModel:
    """The model's parts and the models made of them; a multi-loss training model has the
    outputs of `batch_outputs` (see BATCH_OUTPUTS) besides ctg_out_1, ctg_out_2 and bin_out."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    unknown = set(batch_outputs) - set(BATCH_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown batch output(s) {', '.join(sorted(unknown))} (choose from {', '.join(BATCH_OUTPUTS)})")
    embedding = GatedLinearUnit(embedding_size, name="embedding") if embedding_size else None
    classifier = _classifier(num_classes, dropout)
    same_head = keras.layers.Dense(1, activation="sigmoid", name="bin_out") if mode == "multiloss" else None
    centers = ClassCenters(num_classes, name="class_centers") if mode == "multiloss" and "center_out" in batch_outputs else None
    image = keras.Input(tower.input_shape[1:], name="image_1")
    # BatchNorm stays in inference mode because unfreeze_last_blocks never unfreezes it.
    features = _embedded(embedding, tower(image, training=False))
    training = _heads(mode, classifier, same_head, centers, batch_outputs, image, features, f"siamdog_{mode}")
    image_classifier = keras.Model(image, classifier(features), name="siamdog_classifier")
    embedder = keras.Model(image, features, name="siamdog_embedder")
    same_class = _same_class_model(same_head, features.shape[-1]) if same_head is not None else None
    return SiamdogModel(
        mode, tower, embedding, classifier, same_head, centers, training, image_classifier, embedder, same_class, tuple(batch_outputs)
    )


def _same_class_model(same_head: keras.layers.Layer, size: int) -> keras.Model:
    """bin_out on its own: the features of two images -> the probability that they show one class."""
    first, second = keras.Input((size,), name="features_1"), keras.Input((size,), name="features_2")
    difference = keras.layers.Subtract()([first, second])
    return keras.Model([first, second], same_head(keras.layers.Multiply()([difference, difference])), name="siamdog_same_class")


def _embedded(embedding: keras.layers.Layer | None, pooled):
    return embedding(pooled) if embedding is not None else pooled


def heads_of(model: SiamdogModel, tail: keras.Model | None = None) -> tuple[keras.Model, keras.Model]:
    """The training model without the frozen front of its tower, with the same outputs.

    Inputs are pooled features (no `tail`), or activations that `tail`, the trainable end
    of the tower, turns into pooled features. Returns (model to train, single-input
    classifier); both share the model's layers, so training them on cached inputs trains the
    full model.
    """
    shape = tail.input_shape[1:] if tail is not None else (model.tower.output_shape[-1],)
    inputs = keras.Input(shape, name="cached")
    features = _embedded(model.embedding, tail(inputs, training=False) if tail is not None else inputs)
    cached_classifier = keras.Model(inputs, model.classifier(features), name="cached_classifier")
    heads = _heads(
        model.mode, model.classifier, model.same_head, model.centers, model.batch_outputs, inputs, features, f"{model.mode}_on_cache"
    )
    return heads, cached_classifier
