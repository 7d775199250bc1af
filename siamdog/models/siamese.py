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

With `auxiliary_head` as well (multi-loss, with an embedding), a second classifier reads the
pooled features directly (`aux_out`, the Baidu blog's auxiliary head, trained at the
classifier's weight), and the saved classifier fuses the two heads: the mean of their class
probabilities, each weighed by its accuracy on the valid split, which validation measures
every epoch and stores in the model (`HeadFusion`).

`build_model` returns a `SiamdogModel` that holds the tower, the parts on its features
(`HeadParts`: embedding, classifier, auxiliary head and fusion, same-class head, centers) and
the models made of them; `OUTPUTS` says, for every output name, its loss, its metric
and which stage setting weighs it (the targets of the same names come from
siamdog.data.pairing.pair_targets). Compiling, the batch sources' targets and the heads-only
models are all derived from these, never from layer names or output positions.
"""

from dataclasses import dataclass
from typing import NamedTuple

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
    "aux_out": OutputSpec("categorical", "accuracy", "classifier"),
}
# The optional outputs of the batch-wide losses: a model has only those its stages weigh, since
# each costs work on every training step (center_out: batch x classes x features; pairs_out:
# batch x batch x features).
BATCH_OUTPUTS = ("embedding_out", "center_out", "pairs_out")


@dataclass
class SiamdogModel:
    """The parts of a model and the models built from them (all sharing the same layers).

    `parts` holds the layers on the pooled features (embedding, classifier, auxiliary head and
    fusion, same-class head, class centers); `training` is what `fit` trains (multi-loss:
    (images, partner) -> ctg_out_1, ctg_out_2, bin_out, ...; softmax: image -> ctg_out);
    `image_classifier` (image -> class probabilities) is what is saved for evaluate and predict.
    """

    parts: "HeadParts"
    tower: keras.Model
    training: keras.Model
    image_classifier: keras.Model
    # image -> both heads' probabilities side by side (auxiliary_head), for validation to weigh
    head_probabilities: keras.Model | None
    embedder: keras.Model  # image -> the features the heads read (for similar-photo search)
    same_class: keras.Model | None  # (features, features) -> probability of one class (multiloss)


def _classifier(num_classes: int, dropout: float, name: str = "classifier") -> keras.Sequential:
    return keras.Sequential([keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")], name=name)


def accuracy_share(classifier_accuracy: float, auxiliary_accuracy: float) -> float:
    """The classifier's weight in the fusion of two heads weighed by their accuracies (the
    auxiliary head gets 1 minus it); an even split when neither gets anything right."""
    total = classifier_accuracy + auxiliary_accuracy
    return 0.5 if total == 0 else classifier_accuracy / total


@keras.saving.register_keras_serializable(package="siamdog")
class HeadFusion(keras.layers.Layer):
    """share * (the classifier's probabilities) + (1 - share) * (the auxiliary head's); `share`
    is a stored constant that validation sets (see accuracy_share), not a trained weight."""

    def build(self, input_shape):
        self.share = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.5), trainable=False, name="share")

    def call(self, inputs):
        classifier, auxiliary = inputs
        return self.share * classifier + (1.0 - self.share) * auxiliary

    def compute_output_shape(self, input_shape):
        return input_shape[0]


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


def _multiloss_outputs(parts: "HeadParts", features, pooled, partner) -> list:
    """The multi-loss outputs from a batch's features (and the `pooled` features they embed)
    and each sample's partner index: one classifier on each member of a pair, the "same
    class?" head on the squared difference of their features, the auxiliary head on the pooled
    features if there is one, and those of the batch outputs that the batch-wide losses need:
    the features, their distances to the class centers, the same-class head on every pair."""
    features_2 = PartnerFeatures(name="partner_features")(features, partner)
    ctg_1 = keras.layers.Identity(name="ctg_out_1")(parts.classifier(features))
    ctg_2 = keras.layers.Identity(name="ctg_out_2")(parts.classifier(features_2))
    difference = keras.layers.Subtract(name="feature_difference")([features, features_2])
    squared = keras.layers.Multiply(name="squared_difference")([difference, difference])
    auxiliary = [keras.layers.Identity(name="aux_out")(parts.auxiliary(pooled))] if parts.auxiliary is not None else []
    optional = {
        "embedding_out": lambda: keras.layers.Identity(name="embedding_out")(features),
        "center_out": lambda: keras.layers.Identity(name="center_out")(parts.centers(features)),
        "pairs_out": lambda: keras.layers.Reshape((-1,), name="pairs_out")(parts.same_head(AllPairs(name="all_pairs")(features))),
    }
    batch_wide = [optional[name]() for name in BATCH_OUTPUTS if name in parts.batch_outputs]
    return [ctg_1, ctg_2, parts.same_head(squared), *auxiliary, *batch_wide]


def _partner_input() -> keras.KerasTensor:
    return keras.Input((), dtype="int32", name="partner")


@dataclass(frozen=True)
class HeadParts:
    """The layers that read the tower's pooled features, shared by every model built on them."""

    mode: str
    embedding: keras.layers.Layer | None
    classifier: keras.Sequential
    auxiliary: keras.Sequential | None
    fusion: HeadFusion | None
    same_head: keras.layers.Dense | None
    centers: ClassCenters | None
    batch_outputs: tuple[str, ...]

    def training(self, inputs, pooled, name: str) -> keras.Model:
        """The training model from `inputs` whose `pooled` features feed the heads."""
        features = _embedded(self.embedding, pooled)
        if self.mode == "softmax":
            return keras.Model(inputs, keras.layers.Identity(name="ctg_out")(self.classifier(features)), name=name)
        partner = _partner_input()
        return keras.Model([inputs, partner], _multiloss_outputs(self, features, pooled, partner), name=name)

    def classified(self, pooled):
        """The class probabilities of the shipped classifier: the classifier's, or both heads fused."""
        probabilities = self.classifier(_embedded(self.embedding, pooled))
        return probabilities if self.fusion is None else self.fusion([probabilities, self.auxiliary(pooled)])

    def both_heads(self, pooled):
        """The classifier's and the auxiliary head's probabilities side by side (auxiliary_head)."""
        return keras.layers.Concatenate()([self.classifier(_embedded(self.embedding, pooled)), self.auxiliary(pooled)])


def build_model(
    mode: str,
    tower: keras.Model,
    num_classes: int,
    dropout: float = 0.5,
    embedding_size: int = 0,
    batch_outputs: tuple[str, ...] = BATCH_OUTPUTS,
    auxiliary_head: bool = False,
) -> SiamdogModel:
    """The model's parts and the models made of them; a multi-loss training model has the
    outputs of `batch_outputs` (see BATCH_OUTPUTS) besides ctg_out_1, ctg_out_2 and bin_out,
    and aux_out with `auxiliary_head`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    unknown = set(batch_outputs) - set(BATCH_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown batch output(s) {', '.join(sorted(unknown))} (choose from {', '.join(BATCH_OUTPUTS)})")
    if auxiliary_head and (mode != "multiloss" or not embedding_size):
        raise ValueError("an auxiliary head needs the multiloss mode and an embedding (embedding_size > 0)")
    multiloss = mode == "multiloss"
    parts = HeadParts(
        mode=mode,
        embedding=GatedLinearUnit(embedding_size, name="embedding") if embedding_size else None,
        classifier=_classifier(num_classes, dropout),
        auxiliary=_classifier(num_classes, dropout, name="auxiliary_classifier") if auxiliary_head else None,
        fusion=HeadFusion(name="head_fusion") if auxiliary_head else None,
        same_head=keras.layers.Dense(1, activation="sigmoid", name="bin_out") if multiloss else None,
        centers=ClassCenters(num_classes, name="class_centers") if multiloss and "center_out" in batch_outputs else None,
        batch_outputs=tuple(batch_outputs),
    )
    image = keras.Input(tower.input_shape[1:], name="image_1")
    # BatchNorm stays in inference mode because unfreeze_last_blocks never unfreezes it.
    pooled = tower(image, training=False)
    features = _embedded(parts.embedding, pooled)
    return SiamdogModel(
        parts=parts,
        tower=tower,
        training=parts.training(image, pooled, f"siamdog_{mode}"),
        image_classifier=keras.Model(image, parts.classified(pooled), name="siamdog_classifier"),
        head_probabilities=keras.Model(image, parts.both_heads(pooled), name="siamdog_heads") if auxiliary_head else None,
        embedder=keras.Model(image, features, name="siamdog_embedder"),
        same_class=_same_class_model(parts.same_head, features.shape[-1]) if multiloss else None,
    )


def _same_class_model(same_head: keras.layers.Layer, size: int) -> keras.Model:
    """bin_out on its own: the features of two images -> the probability that they show one class."""
    first, second = keras.Input((size,), name="features_1"), keras.Input((size,), name="features_2")
    difference = keras.layers.Subtract()([first, second])
    return keras.Model([first, second], same_head(keras.layers.Multiply()([difference, difference])), name="siamdog_same_class")


def _embedded(embedding: keras.layers.Layer | None, pooled):
    return embedding(pooled) if embedding is not None else pooled


class OnCache(NamedTuple):
    """The models of `heads_of`: what trains on cached inputs, the single-input classifier,
    both heads' probabilities (auxiliary_head only), and the features the heads read (the
    embedder's)."""

    training: keras.Model
    classifier: keras.Model
    head_probabilities: keras.Model | None
    embedder: keras.Model


def heads_of(model: SiamdogModel, tail: keras.Model | None = None) -> OnCache:
    """The training model without the frozen front of its tower, with the same outputs, and
    the classifiers that go with it.

    Inputs are pooled features (no `tail`), or activations that `tail`, the trainable end
    of the tower, turns into pooled features. All share the model's layers, so training them
    on cached inputs trains the full model.
    """
    shape = tail.input_shape[1:] if tail is not None else (model.tower.output_shape[-1],)
    inputs = keras.Input(shape, name="cached")
    pooled = tail(inputs, training=False) if tail is not None else inputs
    parts = model.parts
    return OnCache(
        parts.training(inputs, pooled, f"{parts.mode}_on_cache"),
        keras.Model(inputs, parts.classified(pooled), name="cached_classifier"),
        keras.Model(inputs, parts.both_heads(pooled), name="cached_heads") if parts.fusion is not None else None,
        keras.Model(inputs, _embedded(parts.embedding, pooled), name="cached_embedder"),
    )
