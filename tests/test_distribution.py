"""Data-parallel training on real engines: two devices must train as one does."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from siamdog.errors import SiamdogError
from siamdog.training.distribution import ProcessShare, distributed, join_processes

SCRIPT = Path(__file__).with_name("distributed_runs.py")
MULTIPROCESS_SCRIPT = Path(__file__).with_name("multiprocess_run.py")


def losses_on_one_and_two_devices(data: Path, out: Path, mode: str, **env: str) -> dict[str, list[float]]:
    """The per-epoch losses of distributed_runs.py's two runs (distribution: losses)."""
    result = subprocess.run([sys.executable, str(SCRIPT), str(data), str(out), mode], env={**os.environ, **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(losses["none"]) == len(losses["data_parallel"]) == 1
    return losses


def test_data_parallel_on_two_tensorflow_cpu_devices_trains_as_one_device_does(demo, tmp_path):
    losses = losses_on_one_and_two_devices(demo / "data", tmp_path, "softmax", KERAS_BACKEND="tensorflow")
    # The two devices each take half of every batch and their gradients are summed: the same
    # arithmetic in another order, so equal up to float32 rounding.
    assert losses["data_parallel"] == pytest.approx(losses["none"], rel=1e-5)


@pytest.mark.other_backends
def test_data_parallel_on_two_jax_cpu_devices_trains_the_multiloss_model_as_one_device_does(demo, tmp_path):
    pytest.importorskip("jax", reason="needs JAX (pip install 'siamdog[jax]')")
    losses = losses_on_one_and_two_devices(
        demo / "data", tmp_path, "multiloss", KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    # JAX computes on the sharded batch as if on the whole of it, pairs across the halves included.
    assert losses["data_parallel"] == pytest.approx(losses["none"], rel=1e-4)


class TwoBatches:
    """A batch source: ((images, partner), targets by name), the last batch of 3 samples."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        rows = 4 if index == 0 else 3
        x = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2) + 100 * index
        return (x, np.roll(np.arange(rows), -1)), {"ctg_out_1": x[:, :1]}


def test_each_process_takes_its_own_slice_of_every_array_of_a_batch():
    source = TwoBatches()
    shares = [ProcessShare(source, k, 2)[0] for k in range(2)]
    (x, partner), targets = source[0]
    np.testing.assert_array_equal(np.concatenate([share[0][0] for share in shares]), x)
    np.testing.assert_array_equal(np.concatenate([share[1]["ctg_out_1"] for share in shares]), targets["ctg_out_1"])
    # a partner is an index into the global batch, which the model sees whole
    np.testing.assert_array_equal(np.concatenate([share[0][1] for share in shares]), partner)
    with pytest.raises(SiamdogError, match="batch 1 has 3 samples, which 2 processes cannot share equally"):
        ProcessShare(source, 0, 2)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def multiprocess_losses(data: Path, out: Path, distribution: str, processes: int, loader_threads: int = 2, what: tuple[str, ...] = ()) -> list[list[float]]:
    """The losses per epoch that each of `processes` processes of one JAX run reports (per
    step of its learning-rate sweep with `what` ("lr-find",))."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    if processes > 1:
        env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{free_port()}", KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes))
    runs = [
        subprocess.Popen(
            [sys.executable, str(MULTIPROCESS_SCRIPT), str(data), str(out / f"process-{k}"), distribution, str(loader_threads), *what],
            env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(k)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for k in range(processes)
    ]
    losses = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
        losses.append(json.loads(stdout.strip().splitlines()[-1]))
    return losses


@pytest.mark.other_backends
def test_two_jax_processes_train_the_multiloss_model_as_one_process_does(demo, tmp_path):
    pytest.importorskip("jax", reason="needs JAX (pip install 'siamdog[jax]')")
    [alone] = multiprocess_losses(demo / "data", tmp_path / "alone", "none", 1)
    first, second = multiprocess_losses(demo / "data", tmp_path / "two", "data_parallel", 2)
    assert len(alone) == 2
    # Each process feeds its half of every batch; the pairs cross the halves. Both processes
    # record the same run, and it is the lone process's run up to float32 rounding.
    assert first == second
    assert first == pytest.approx(alone, rel=1e-4)


@pytest.mark.other_backends
def test_two_jax_processes_sweep_the_learning_rate_as_one_process_does(demo, tmp_path):
    pytest.importorskip("jax", reason="needs JAX (pip install 'siamdog[jax]')")
    [alone] = multiprocess_losses(demo / "data", tmp_path / "alone", "none", 1, what=("lr-find",))
    first, second = multiprocess_losses(demo / "data", tmp_path / "two", "data_parallel", 2, what=("lr-find",))
    assert len(alone) == 12
    # The same sweep, up to float32 rounding, until the last steps: there the rate (up to 0.1)
    # makes the loss blow up, which magnifies the rounding (0.4 % at the last step).
    assert first == second
    assert first[:10] == pytest.approx(alone[:10], rel=1e-4)


@pytest.mark.other_backends
def test_two_jax_processes_run_a_pseudo_label_round_as_one_process_does(demo, tmp_path):
    pytest.importorskip("jax", reason="needs JAX (pip install 'siamdog[jax]')")
    [alone] = multiprocess_losses(demo / "data", tmp_path / "alone", "none", 1, what=("pseudo-labels",))
    first, second = multiprocess_losses(demo / "data", tmp_path / "two", "data_parallel", 2, what=("pseudo-labels",))
    # Each process labels the photos with its copy of the model, lays out its own round and
    # trains it: the same photos chosen, the same round's losses.
    assert alone[0] > 0 and len(alone) == 3, "some photos pseudo-labelled, then the round's two epochs"
    assert first == second
    assert first == pytest.approx(alone, rel=1e-4)


@pytest.mark.other_backends
def test_a_jax_run_trains_on_the_same_batches_whatever_its_loader_thread_count(demo, tmp_path):
    pytest.importorskip("jax", reason="needs JAX (pip install 'siamdog[jax]')")
    # JAX's fit would start an epoch to build the compiled losses; with two threads the batches
    # prefetched by then came back in the first epoch (build_before_fit).
    [one_thread] = multiprocess_losses(demo / "data", tmp_path / "one", "none", 1, loader_threads=1)
    [two_threads] = multiprocess_losses(demo / "data", tmp_path / "two", "none", 1, loader_threads=2)
    assert two_threads == one_thread


def test_what_tensorflow_data_parallel_cannot_do_is_one_clear_refusal():
    with pytest.raises(SiamdogError, match="multi-loss pairs span the whole batch"):
        with distributed("data_parallel", 16, "multiloss"):
            pass
    with pytest.raises(SiamdogError, match="unknown distribution"):
        with distributed("model_parallel", 16, "softmax"):
            pass


def test_a_multi_process_environment_with_a_mistake_is_one_clear_refusal(monkeypatch):
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "two")
    with pytest.raises(SiamdogError, match="the number of processes, a whole number"):
        join_processes()
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.delenv("KERAS_DISTRIBUTION_PROCESS_ID", raising=False)
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "localhost:1234")
    with pytest.raises(SiamdogError, match="KERAS_DISTRIBUTION_PROCESS_ID not set"):
        join_processes()
