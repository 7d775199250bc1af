"""Everything that steers training, in one file, so that a resumed run continues exactly as an
uninterrupted one would.

Keras's weights file holds the model's weights and the optimizer's state (step count, learning
rate, moments). It does not hold the layers' random generators (Dropout's seed state) nor the
counters of the callbacks that act on validation figures (early stopping with its best
weights, learning-rate reduction on a plateau). A training checkpoint is the weights file with
those added in a `siamdog_state` group, written under a temporary name and renamed, so it is
whole or absent.
"""

import json
import logging
import os
import shutil

import h5py
import keras
import numpy as np

from siamdog.files import replace_atomically

log = logging.getLogger(__name__)

STATE_GROUP = "siamdog_state"

# The attributes of Keras's callbacks that decide what they do next (their on_train_begin resets them).
CALLBACK_COUNTERS = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}


def seed_variables(model: keras.Model) -> list:
    """The state variables of the model's random generators (Dropout's, for one)."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _plain(value):
    return None if value is None else float(value) if isinstance(value, (float, np.floating)) else int(value)


def save_training_state(path: str | os.PathLike, model: keras.Model, epoch: int | None = None, callbacks=()) -> None:
    """Write `model`'s weights, optimizer and random generators, the epochs done (`epoch`) and
    the counters of `callbacks` to `path` (a `.weights.h5` name), atomically."""
    counters, best_weights = [], []
    for callback in callbacks:
        counters.append({name: _plain(getattr(callback, name, None)) for name in CALLBACK_COUNTERS[type(callback)]})
        best_weights.append(getattr(callback, "best_weights", None))

    def write(tmp):
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            group = f.create_group(STATE_GROUP)
            stopping = bool(getattr(model, "stop_training", False))  # absent on a model never fit
            group.attrs["state"] = json.dumps({"epoch": epoch, "stop_training": stopping, "callbacks": counters})
            for k, variable in enumerate(seed_variables(model)):
                group.create_dataset(f"seed_{k}", data=keras.ops.convert_to_numpy(variable))
            for c, weights in enumerate(best_weights):
                for k, array in enumerate(weights or ()):
                    group.create_dataset(f"best_weights_{c}_{k}", data=array)

    replace_atomically(path, write)


def load_training_state(path: str | os.PathLike, model: keras.Model, callbacks=()) -> dict | None:
    """Restore what save_training_state wrote into `model` and `callbacks`; returns the epochs
    done and whether training was to stop ({"epoch", "stop_training"}), or None for a file
    without them (Keras's own weights files)."""
    optimizer = getattr(model, "optimizer", None)  # None, or absent, on a model never compiled
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
    model.load_weights(path)
    with h5py.File(path, "r") as f:
        if STATE_GROUP not in f:  # a plain weights file (an earlier siamdog's stage checkpoint)
            return None
        group = f[STATE_GROUP]
        state = json.loads(group.attrs["state"])
        for k, variable in enumerate(seed_variables(model)):
            variable.assign(group[f"seed_{k}"][()])
        for c, (callback, counters) in enumerate(zip(callbacks, state["callbacks"])):
            for name, value in counters.items():
                setattr(callback, name, value)
            if hasattr(callback, "best_weights"):
                count = sum(1 for key in group if key.startswith(f"best_weights_{c}_"))
                callback.best_weights = [group[f"best_weights_{c}_{k}"][()] for k in range(count)] or None
    return {"epoch": state["epoch"], "stop_training": state["stop_training"]}


def has_training_state(path: str | os.PathLike) -> bool:
    """Whether `path` is a checkpoint that save_training_state wrote (raises OSError if unreadable)."""
    with h5py.File(path, "r") as f:
        return STATE_GROUP in f


class StageCheckpoint(keras.callbacks.Callback):
    """Saves the training state after every epoch of a stage and restores it when the stage
    is run again, so an interrupted stage resumes at the next epoch as if never stopped.

    Put it after the callbacks in `stateful` (EarlyStopping, ReduceLROnPlateau): their
    on_train_begin resets what this one then restores, and their on_epoch_end updates what
    this one then saves. The file before the latest is kept, for a latest one that a failing
    disk left unreadable. `fit` reads the epoch to start at from the model's `_initial_epoch`,
    as Keras's BackupAndRestore sets it; it is cleared when the stage ends, so that the next
    stage's `fit` starts at its own epoch 0.
    """

    def __init__(self, directory: str | os.PathLike, stateful=()):
        super().__init__()
        self.directory = str(directory)
        self.stateful = list(stateful)
        self.latest = os.path.join(self.directory, "latest.weights.h5")
        self.previous = os.path.join(self.directory, "previous.weights.h5")

    def on_train_begin(self, logs=None):
        for path in (self.latest, self.previous):
            if not os.path.exists(path):
                continue
            try:
                if not has_training_state(path):
                    log.warning("%s holds no training state (an earlier siamdog's); ignoring it", path)
                    continue
                state = load_training_state(path, self.model, self.stateful)
            except (OSError, ValueError) as e:
                log.warning("%s is unreadable (%s); trying the one before", path, str(e).splitlines()[0][:200])
                continue
            # Early stopping had ended the stage: run no more epochs, only the callbacks' ends.
            self.model._initial_epoch = self.params["epochs"] if state["stop_training"] else state["epoch"]
            log.info("resuming after epoch %d", state["epoch"])
            return

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(self.latest):
            os.replace(self.latest, self.previous)
        save_training_state(self.latest, self.model, epoch + 1, self.stateful)

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None

    def discard(self) -> None:
        """Remove the stage's files, once the finished stage has its own checkpoint."""
        shutil.rmtree(self.directory, ignore_errors=True)
