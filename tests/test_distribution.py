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


def test_data_parallel_on_two_tensorflow_cpu_devices_trains_as_one_device_does(demo, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(demo / "data"), str(tmp_path), "softmax"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(losses["none"]) == 2
    # The two devices each take half of every batch and their gradients are summed: the same
    # arithmetic in another order, so equal up to float32 rounding.
    assert losses["data_parallel"] == pytest.approx(losses["none"], rel=1e-5)


def test_what_tensorflow_data_parallel_cannot_do_is_one_clear_refusal():
    with pytest.raises(SiamdogError, match="multi-loss pairs span the whole batch"):
        with distributed("data_parallel", 16, "multiloss"):
            pass
    with pytest.raises(SiamdogError, match="unknown distribution"):
        with distributed("model_parallel", 16, "softmax"):
            pass
