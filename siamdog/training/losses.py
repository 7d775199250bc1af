"""Losses on the shared embedding, written with keras.ops so that every backend runs them."""

import keras


def batch_hard_triplet(y_true, y_pred, margin: float = 0.3):
    """Per sample: max(0, d(hardest positive) - d(hardest negative) + margin), on L2-normalized
    embeddings (Hermans et al., "In Defense of the Triplet Loss", 2017, as in torchreid).

    `y_true` holds one-hot labels, `y_pred` the embeddings of one batch; every pair of the batch
    is compared, so a P x K batch (siamdog.data.sampling) gives each sample K - 1 positives. A
    sample with no positive (or no negative) in the batch contributes nothing.
    """
    labels = keras.ops.argmax(y_true, axis=-1)
    embeddings = y_pred / (keras.ops.norm(y_pred, axis=-1, keepdims=True) + 1e-12)
    similarity = keras.ops.matmul(embeddings, keras.ops.transpose(embeddings))
    distance = keras.ops.sqrt(keras.ops.maximum(2.0 - 2.0 * similarity, 1e-12))
    same = keras.ops.equal(labels[:, None], labels[None, :])
    other = keras.ops.logical_not(keras.ops.eye(keras.ops.shape(labels)[0], dtype="bool"))
    positive = keras.ops.logical_and(same, other)
    hardest_positive = keras.ops.max(keras.ops.where(positive, distance, 0.0), axis=1)
    hardest_negative = keras.ops.min(keras.ops.where(same, 4.0, distance), axis=1)  # 4 > any distance (at most 2)
    has_both = keras.ops.logical_and(keras.ops.any(positive, axis=1), keras.ops.any(keras.ops.logical_not(same), axis=1))
    loss = keras.ops.relu(hardest_positive - hardest_negative + margin)
    return keras.ops.where(has_both, loss, 0.0)


def center_loss(y_true, y_pred):
    """Per sample: half the squared distance of its features to its class's center (Wen et
    al., "A Discriminative Feature Learning Approach for Deep Face Recognition", 2016), from
    `y_pred`, the squared distances to every center (siamdog.models.siamese.ClassCenters). The
    centers learn by gradient with the rest of the model."""
    return 0.5 * keras.ops.sum(y_true * y_pred, axis=-1)


def mined_pair_loss(y_true, y_pred):
    """Per sample: the same-class head's binary cross-entropy on every positive pair it forms
    in the batch and on its hardest negative (the other-class sample the head finds most
    alike), averaged over those pairs.

    `y_true` holds the batch's one-hot labels, `y_pred` the head's probabilities for every pair
    of the batch (row i: sample i with each sample of the batch). A P x K batch gives each sample K - 1
    positives; a sample with no positive or no negative in the batch contributes nothing.
    """
    labels = keras.ops.argmax(y_true, axis=-1)
    size = keras.ops.shape(labels)[0]
    probability = keras.ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
    same = keras.ops.equal(labels[:, None], labels[None, :])
    positive = keras.ops.logical_and(same, keras.ops.logical_not(keras.ops.eye(size, dtype="bool")))
    positive_loss = keras.ops.sum(keras.ops.where(positive, -keras.ops.log(probability), 0.0), axis=1)
    hardest_negative = keras.ops.max(keras.ops.where(same, 0.0, probability), axis=1)
    negative_loss = -keras.ops.log(1.0 - keras.ops.clip(hardest_negative, 1e-7, 1.0 - 1e-7))
    positives = keras.ops.sum(keras.ops.cast(positive, "float32"), axis=1)
    has_both = keras.ops.logical_and(positives > 0, keras.ops.any(keras.ops.logical_not(same), axis=1))
    return keras.ops.where(has_both, (positive_loss + negative_loss) / (positives + 1.0), 0.0)
