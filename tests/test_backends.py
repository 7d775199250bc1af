"""The end-to-end training tests under the other Keras backends (make test-backends).

Each runs tests/test_training.py's full run (organize, all three stages of the multi-loss
model, evaluate), and the per-block learning rates (which reach into each backend's optimizer
update), in a fresh process with KERAS_BACKEND set, since Keras picks its backend once per
process.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
END_TO_END = [
    "tests/test_training.py::test_all_stages_run_and_leave_a_complete_run_folder",
    "tests/test_training.py::test_it_learns_far_below_chance",
    "tests/test_model.py::test_scaled_learning_rates_update_each_variable_at_its_rate",
]


@pytest.mark.other_backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_end_to_end_run_learns_under_another_backend(backend):
    pytest.importorskip(backend, reason=f"needs {backend} (make test-backends installs it)")
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *END_TO_END], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "4 passed" in result.stdout  # the learning-rate test runs for SGD and Adam
