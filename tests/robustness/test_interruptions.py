"""Kills, Ctrl-C, two trainers on one run folder, and a full disk: nothing finished is lost."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from siamdog.cli import main
from siamdog.config import save_config
from siamdog.data.organize import organize
from siamdog.errors import SiamdogError
from siamdog.training.trainer import run_lock, train
from tests.conftest import STAGES, read_history, tiny_config, write_image

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# `siamdog ARGS` in a child process that turns SIGINT into KeyboardInterrupt (what Ctrl-C does
# in a terminal) even when this test runs in the background, where SIGINT is inherited ignored.
_CHILD = (
    "import runpy, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "sys.argv[0] = 'siamdog'\n"
    "runpy.run_module('siamdog.cli', run_name='__main__')\n"
)


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _kill_once_placed(process: subprocess.Popen, dst: Path, count: int) -> bool:
    """SIGKILL `process` as soon as `count` files (temporaries included) are in DST's splits.

    The child is stopped while the files are counted, so however fast the machine, it is
    killed within a few files of that point, not after some wall-clock delay. False if it
    finished first.
    """
    while process.poll() is None:
        process.send_signal(signal.SIGSTOP)
        placed = sum(1 for _ in dst.glob("*/*/*"))
        if placed >= count:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
            return True
        process.send_signal(signal.SIGCONT)
        time.sleep(0.002)
    process.communicate(timeout=60)
    return False


def test_organize_killed_at_random_points_completes_on_rerun(tmp_path):
    src = tmp_path / "src"
    for k in range(1500):
        write_image(src / f"{k % 7}_{k:05d}.png", rgb=(k % 256, 50, 90), size=(8, 8), noise=20, seed=k)
    reference = tmp_path / "reference"
    organize(src, reference, progress=False)
    dst = tmp_path / "dst"
    rng = np.random.default_rng(0)
    for count in sorted(rng.integers(1, 1450, size=4)):
        assert _kill_once_placed(_spawn("organize", str(src), str(dst), "--workers", "2"), dst, count), f"finished before {count} files"
    process = _spawn("organize", str(src), str(dst))
    assert process.wait(timeout=120) == 0
    assert _tree(dst / "train") == _tree(reference / "train")
    assert _tree(dst / "valid") == _tree(reference / "valid")
    assert not list(dst.rglob(".tmp-*"))
    for name in ("classes.txt", "manifest.csv", "rejected.csv"):
        assert (dst / name).read_bytes() == (reference / name).read_bytes()


def _wait_for_epochs(run: Path, stage: str, count: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "history" / f"{stage}.csv").exists() and len(read_history(run, stage)) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended before {stage} epoch {count}: {process.communicate()[1][-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {stage} epoch {count} within {timeout} s")


class InterruptOnce(keras.callbacks.Callback):
    """Raises KeyboardInterrupt (what Ctrl-C does) once `stages_done` stages of `run` have
    their checkpoint: at the start of the next stage (epoch None), or in its `epoch`, after
    `batch` (None: at the epoch's very end, after everything of the epoch was written)."""

    def __init__(self, run: Path, stages_done: int, epoch: int | None, batch: int | None = None):
        super().__init__()
        self.run, self.stages_done, self.epoch, self.batch = run, stages_done, epoch, batch
        self.current_epoch = None

    def _in_stage(self):
        return len(list((self.run / "checkpoints").glob("*.weights.h5"))) == self.stages_done

    def on_train_begin(self, logs=None):
        if self.epoch is None and self._in_stage():
            raise KeyboardInterrupt

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.batch == batch and self.current_epoch == self.epoch and self._in_stage():
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch and self._in_stage():
            raise KeyboardInterrupt


def test_training_interrupted_or_killed_in_a_stage_resumes_where_it_stopped(demo, tmp_path):
    stage = {"optimizer": "sgd", "learning_rate": 1e-3, "momentum": 0.9, "trainable_blocks": 2}
    config = tiny_config(
        stages=[
            {"name": "heads", "epochs": 3, "optimizer": "nadam", "learning_rate": 2e-3},
            {"name": "finetune", "epochs": 3, **stage},
        ]
    )
    save_config(config, tmp_path / "config.yaml")
    run = tmp_path / "run"
    args = ("train", "--data", str(demo / "data"), "--run", str(run), "--config", str(tmp_path / "config.yaml"), "--workers", "2")
    # Each signal lands at a random moment of the stage's second epoch (training, validation
    # or checkpoint writing), after its first epoch has been recorded.
    delays = np.random.default_rng(1).uniform(0.0, 2.0, size=2)
    for (stage_name, sig), delay in zip((("heads", signal.SIGINT), ("finetune", signal.SIGKILL)), delays):
        process = _spawn(*args)
        _wait_for_epochs(run, stage_name, 1, process)
        time.sleep(delay)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        if sig == signal.SIGINT:
            assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
        else:
            assert process.returncode == -signal.SIGKILL
        if stage_name == "finetune":
            heads_history = (run / "history" / "heads.csv").read_text()
    process = _spawn(*args)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    assert (run / "history" / "heads.csv").read_text() == heads_history, "a finished stage was run again"
    for stage_name in ("heads", "finetune"):
        epochs = [int(r["epoch"]) for r in read_history(run, stage_name)]
        assert epochs == sorted(set(epochs)) and epochs[0] == 0 and epochs[-1] == 2, (stage_name, epochs)
    assert keras.saving.load_model(run / "best.keras").output_shape[-1] == 4


def test_a_damaged_epoch_checkpoint_falls_back_to_the_one_before(demo, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(mode="softmax", stages=[{"name": "heads", "epochs": 2, "optimizer": "nadam", "learning_rate": 2e-3}])
    with pytest.raises(KeyboardInterrupt):
        train(demo / "data", run, config, workers=2, verbose=0, callbacks=[InterruptOnce(run, stages_done=0, epoch=1)])
    latest = run / "backup" / "heads" / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[:1000])  # as if the disk had damaged it
    train(demo / "data", run, config, workers=2, verbose=0)
    assert [int(r["epoch"]) for r in read_history(run, "heads")] == [0, 1, 1], "resumed from the checkpoint after epoch 1"


def test_a_second_trainer_on_the_same_run_is_refused(demo, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run / ".lock"):
        with pytest.raises(SiamdogError, match=f"being trained by process {os.getpid()}"):
            train(demo / "data", run, tiny_config(), verbose=0)


def test_a_killed_trainer_does_not_leave_the_run_locked(demo, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from siamdog.training.trainer import run_lock\n"
         "with run_lock(__import__('pathlib').Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)", str(run / ".lock")],
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(SiamdogError, match=f"process {holder.pid}"):
        with run_lock(run / ".lock"):
            pass
    holder.kill()
    holder.wait()
    with run_lock(run / ".lock"):
        pass


def test_a_full_disk_while_checkpointing_is_a_clear_error_and_loses_nothing(demo, tmp_path, monkeypatch, capsys):
    config = tiny_config(stages=[{**tiny_config().stages[0].__dict__, "epochs": 1}, {**tiny_config().stages[1].__dict__, "epochs": 1}])
    save_config(config, tmp_path / "config.yaml")
    run = tmp_path / "run"
    argv = ["train", "--data", str(demo / "data"), "--run", str(run), "--config", str(tmp_path / "config.yaml"), "--workers", "2"]
    real_save_weights = keras.Model.save_weights

    def full_disk_after_heads(self, filepath, *args, **kwargs):
        if (run / "checkpoints" / "heads.weights.h5").exists() and "backup" not in str(filepath):
            with open(filepath, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        return real_save_weights(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", full_disk_after_heads)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    heads = run / "checkpoints" / "heads.weights.h5"
    assert heads.exists() and not (run / "checkpoints" / "finetune.weights.h5").exists()
    assert not list((run / "checkpoints").glob(".tmp-*")), "the half-written checkpoint was left behind"
    keras.saving.load_model(run / "best.keras")
    monkeypatch.undo()
    assert main(argv) == 0
    assert (run / "checkpoints" / "finetune.weights.h5").exists()


def test_an_interrupted_run_ends_byte_identical_to_an_uninterrupted_one(demo, tmp_path):
    # Dropout, momentum, the plateau rule's and early stopping's counters, and the place on a
    # cosine schedule's curve all carry over an interrupt; each must be restored for the
    # histories to agree.
    plateau = {"reduce_lr_patience": 1, "early_stopping_patience": 2}
    config = tiny_config(
        dropout=0.5,
        stages=[
            {**STAGES[0], "epochs": 2, **plateau},
            {**STAGES[1], "epochs": 2, "early_stopping_patience": 2, "schedule": "cosine", "warmup_epochs": 1},
            {**STAGES[2], "epochs": 1},
        ],
    )
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(demo / "data", whole, config, workers=2, verbose=0)
    interrupts = [
        InterruptOnce(resumed, stages_done=0, epoch=1, batch=2),  # inside heads' second epoch
        InterruptOnce(resumed, stages_done=1, epoch=None),  # between heads and finetune
        InterruptOnce(resumed, stages_done=1, epoch=0, batch=1),  # inside finetune
    ]
    for interrupt in interrupts:
        with pytest.raises(KeyboardInterrupt):
            train(demo / "data", resumed, config, workers=2, verbose=0, callbacks=[interrupt])
    # The last resume through the command line, as a user would, with the same settings in a file.
    save_config(config, tmp_path / "config.yaml")
    argv = ["train", "--data", str(demo / "data"), "--run", str(resumed), "--config", str(tmp_path / "config.yaml"), "--workers", "2"]
    assert main(argv) == 0
    state = json.loads((resumed / "state.json").read_text())
    assert state["completed"]["finetune"]["epochs_run_now"] == 2, "finetune was interrupted inside its first epoch"
    assert state["completed"]["polish"]["epochs_run_now"] == 1, "the stage after a resumed one runs from its epoch 0"
    assert not (resumed / "backup" / "finetune").exists(), "a finished stage leaves no epoch checkpoint behind"
    for stage in ("heads", "finetune", "polish"):
        assert (resumed / "history" / f"{stage}.csv").read_text() == (whole / "history" / f"{stage}.csv").read_text(), stage
    # The cosine stage logs its rate: the peak after the warmup epoch, 0 after the last.
    rates = [float(row["learning_rate"]) for row in read_history(whole, "finetune")]
    assert rates == pytest.approx([STAGES[1]["learning_rate"], 0.0], abs=1e-9)
    assert (resumed / "best.json").read_text() == (whole / "best.json").read_text()
    a, b = keras.saving.load_model(whole / "best.keras"), keras.saving.load_model(resumed / "best.keras")
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
