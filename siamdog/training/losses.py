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
