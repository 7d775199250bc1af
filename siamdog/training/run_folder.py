"""The run folder: where each artifact of a run lives, its lock, and its saved settings.

    config.yaml            the configuration used
    classes.txt            class names, in the model's output order
    best.keras, best.json  the single-image classifier with the best val_accuracy so far
    best-embedding.keras   its features (image -> what the heads read), saved with it
    best-same-class.keras  its same-class head (two images' features -> probability), multi-loss runs
    verification.json      each answer to "same class?" on valid pairs: threshold, accuracy, ROC AUC
    history/<stage>.csv    per-epoch logs of each stage
    curves.png             training curves of all stages
    checkpoints/<stage>.weights.h5   the model (and its random generators) after each finished stage
    state.json             finished stages, their epochs and wall time
    backup/<stage>/        the training state after each epoch of a running stage
"""

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from siamdog.config import TrainConfig, config_to_dict, load_config, save_config
from siamdog.errors import SiamdogError


@dataclass
class RunPaths:
    """Where each artifact of a run lives."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def classes(self) -> Path:
        return self.root / "classes.txt"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def best_model(self) -> Path:
        return self.root / "best.keras"

    @property
    def best_embedder(self) -> Path:
        return self.root / "best-embedding.keras"

    @property
    def best_same_class(self) -> Path:
        return self.root / "best-same-class.keras"

    @property
    def verification(self) -> Path:
        return self.root / "verification.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    def history(self, stage: str) -> Path:
        return self.root / "history" / f"{stage}.csv"

    def checkpoint(self, stage: str) -> Path:
        return self.root / "checkpoints" / f"{stage}.weights.h5"

    def backup(self, stage: str) -> Path:
        return self.root / "backup" / stage

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


@contextlib.contextmanager
def run_lock(path: Path):
    """Hold an exclusive lock on a run folder for as long as this process trains in it.

    An flock belongs to the open file: the kernel drops it when the process ends, however it
    ends, so a killed run never leaves the folder locked.
    """
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SiamdogError(f"{path.parent} is being trained by {holder}; wait for it to finish or use another --run") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def saved_config(run: RunPaths) -> TrainConfig | None:
    """The config an existing run was started with (None for a new run)."""
    return load_config(run.config) if run.config.exists() else None


def prepare_run(run: RunPaths, config: TrainConfig, classes: list[str]) -> None:
    """Save the config and classes of a new run, or check that an existing run used the same."""
    run.root.mkdir(parents=True, exist_ok=True)
    saved = saved_config(run)
    if saved is not None:
        if saved != config:
            new, old = config_to_dict(config), config_to_dict(saved)
            changed = ", ".join(k for k in new if new[k] != old.get(k))
            raise SiamdogError(
                f"{run.root} holds a run with another configuration (differs in: {changed}); "
                "use another --run folder, or the same settings to resume it"
            )
    else:
        save_config(config, run.config)
    if run.classes.exists():
        saved_classes = run.classes.read_text(encoding="utf-8").splitlines()
        if saved_classes != classes:
            raise SiamdogError(f"{run.root} was trained on other classes than those in the data folder")
    else:
        run.classes.write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
