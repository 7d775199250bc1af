"""Data-parallel training on real engines: two devices must train as one does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from siamdog.errors import SiamdogError
from siamdog.training.distribution import distributed

SCRIPT = Path(__file__).with_name("distributed_runs.py")


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


def test_what_tensorflow_data_parallel_cannot_do_is_one_clear_refusal():
    with pytest.raises(SiamdogError, match="multi-loss pairs span the whole batch"):
        with distributed("data_parallel", 16, "multiloss"):
            pass
    with pytest.raises(SiamdogError, match="unknown distribution"):
        with distributed("model_parallel", 16, "softmax"):
            pass
