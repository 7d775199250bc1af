"""Run by tests/test_distribution.py in a fresh process: the same tiny run on one device and
data-parallel on two, printed as JSON ({distribution: [loss per epoch]}).

    python tests/distributed_runs.py DATA OUT

On TensorFlow the process splits its CPU into two logical devices first (possible only
before TensorFlow starts); on JAX, XLA_FLAGS=--xla_force_host_platform_device_count=2 does it.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from siamdog.training.trainer import train  # noqa: E402
from tests.conftest import STAGES, read_history, tiny_config  # noqa: E402


def main() -> None:
    data, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    losses = {}
    for distribution in ("none", "data_parallel"):
        # No dropout: its masks are drawn per device. Fine-tuning trains the last blocks too; the
        # epoch's loss is the mean over steps that each start from the weights the last one updated.
        config = tiny_config(mode=mode, dropout=0.0, distribution=distribution, stages=[{**STAGES[1], "epochs": 1}])
        train(data, out / distribution, config, workers=2, verbose=0)
        losses[distribution] = [float(row["loss"]) for row in read_history(out / distribution, "finetune")]
    print(json.dumps(losses))


if __name__ == "__main__":
    main()
