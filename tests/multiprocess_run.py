"""Run by tests/test_distribution.py, once alone and once as each of two processes of one
multi-process JAX run (Keras's KERAS_DISTRIBUTION_* variables): a tiny multi-loss run, its
losses per epoch printed as JSON.

    python tests/multiprocess_run.py DATA OUT DISTRIBUTION
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from siamdog.training.distribution import join_processes  # noqa: E402

join_processes()

from siamdog.training.trainer import train  # noqa: E402
from tests.conftest import STAGES, read_history, tiny_config  # noqa: E402


def main() -> None:
    data, out, distribution = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    # No dropout: its masks are drawn per device. One loader thread: with two, a lone process's
    # losses already differ from its one-thread losses (found here, not yet explained).
    config = tiny_config(mode="multiloss", dropout=0.0, distribution=distribution, stages=[{**STAGES[1], "epochs": 2}])
    train(data, out, config, workers=1, verbose=0)
    print(json.dumps([float(row["loss"]) for row in read_history(out, "finetune")]))


if __name__ == "__main__":
    main()
