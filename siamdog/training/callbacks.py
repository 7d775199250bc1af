"""Callbacks that the staged schedule adds to Keras's own (EarlyStopping, ReduceLROnPlateau,
CSVLogger); the one that saves and restores a stage is in checkpoint.py."""

import logging
import os

import keras
import numpy as np

from siamdog.files import read_json, replace_atomically, write_json
from siamdog.inference import predict_batches
from siamdog.models.siamese import HeadFusion, accuracy_share
from siamdog.plots import plot_training_curves

log = logging.getLogger(__name__)


class ClassifierValidation(keras.callbacks.Callback):
    """Adds `val_accuracy` (top-1 of the single-image classifier) and `val_loss` (its
    cross-entropy) to the epoch logs, for the callbacks after it to monitor.

    Keras's own validation would score the Siamese model on pairs and name its metrics by
    output; this scores what is shipped: one image in, one class out. For a classifier that
    fuses two heads, give `heads` (both heads' probabilities side by side) and its `fusion`:
    each epoch the fusion is set from the heads' valid accuracies (logged as
    `val_classifier_accuracy`, `val_auxiliary_accuracy` and `fusion_share`), and the fused
    probabilities are scored.
    """

    def __init__(self, classifier: keras.Model, batches, heads: keras.Model | None = None, fusion: HeadFusion | None = None):
        super().__init__()
        self.classifier = classifier
        self.batches = batches
        self.heads = heads
        self.fusion = fusion

    def _fused(self, logs) -> tuple[np.ndarray, np.ndarray]:
        both, labels = predict_batches(self.heads, self.batches)
        classifier, auxiliary = np.split(both, 2, axis=1)
        accuracies = [float(np.mean(np.argmax(p, axis=1) == labels)) for p in (classifier, auxiliary)]
        share = accuracy_share(*accuracies)
        self.fusion.share.assign(share)
        logs.update(val_classifier_accuracy=accuracies[0], val_auxiliary_accuracy=accuracies[1], fusion_share=share)
        return keras.ops.convert_to_numpy(self.fusion([classifier, auxiliary])), labels  # as the saved classifier fuses them

    def on_epoch_end(self, epoch, logs=None):
        if self.heads is not None:
            probabilities, labels = self._fused(logs)
        else:
            probabilities, labels = predict_batches(self.classifier, self.batches)
        self.batches.on_epoch_end()  # a validation pass is an epoch of its source (it reports skipped files)
        picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
        logs["val_accuracy"] = float(np.mean(np.argmax(probabilities, axis=1) == labels))
        logs["val_loss"] = float(-np.mean(np.log(picked)))


class ScheduledLearningRate(keras.callbacks.Callback):
    """Logs the learning rate a schedule reached at the end of each epoch (ReduceLROnPlateau
    logs the rate it sets; a schedule object logs nothing by itself)."""

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class PositivePairFraction(keras.callbacks.Callback):
    """Logs the fraction of positive ("same class") pairs the pair sampler made in the epoch."""

    def __init__(self, paired_batches):
        super().__init__()
        self.paired_batches = paired_batches

    def on_epoch_end(self, epoch, logs=None):
        fraction = self.paired_batches.last_epoch_positive_fraction
        if fraction is not None:
            logs["positive_pair_fraction"] = fraction
            log.info("epoch %d: %.1f%% positive pairs", epoch + 1, 100 * fraction)


class EpochOrder(keras.callbacks.Callback):
    """Puts the batch source at the epoch fit is starting, so a resumed stage sees the same
    order and augmentations as an uninterrupted one."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


class SaveBestClassifier(keras.callbacks.Callback):
    """Saves the single-image classifier, and the `companions` made of the same parts (the
    embedder, the same-class head), whenever `val_accuracy` beats the best of the run.

    The best score is kept in a JSON file beside the model so that it survives a restart;
    every file is written under a temporary name and renamed, so none is ever half-written,
    and the score last, so it never names models not yet written.
    """

    def __init__(self, classifier: keras.Model, model_path: str, stage: str, companions=()):
        super().__init__()
        self.models = [(model_path, classifier), *((str(path), model) for path, model in companions)]
        self.score_path = os.path.splitext(model_path)[0] + ".json"
        self.stage = stage
        self.best = read_json(self.score_path)

    def on_epoch_end(self, epoch, logs=None):
        score = logs.get("val_accuracy")
        if score is None or (self.best is not None and score <= self.best["val_accuracy"]):
            return
        for path, model in self.models:
            replace_atomically(path, model.save)
        self.best = {"val_accuracy": score, "stage": self.stage, "epoch": epoch + 1}
        write_json(self.score_path, self.best)
        log.info("new best model: val_accuracy %.4f (%s, epoch %d)", score, self.stage, epoch + 1)


class TrainingCurves(keras.callbacks.Callback):
    """Redraws the training-curves PNG after every epoch from the stages' CSV histories."""

    def __init__(self, histories, out_path):
        super().__init__()
        self.histories = histories
        self.out_path = out_path

    def on_epoch_end(self, epoch, logs=None):
        plot_training_curves([(s, p) for s, p in self.histories if os.path.exists(p)], self.out_path)
