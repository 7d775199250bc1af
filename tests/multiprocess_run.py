"""Run by tests/test_distribution.py, once alone and once as each of two processes of one
multi-process JAX run (Keras's KERAS_DISTRIBUTION_* variables): a tiny multi-loss run, its
losses per epoch printed as JSON; with `lr-find`, its stage's learning-rate sweep, the loss
of each step; with `pseudo-labels`, a pseudo-label round on DATA/../test after it, the round's
losses per epoch and how many photos it pseudo-labelled.

    python tests/multiprocess_run.py DATA OUT DISTRIBUTION LOADER_THREADS [lr-find | pseudo-labels]
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from siamdog.training.distribution import join_processes  # noqa: E402

join_processes()

from siamdog.training.lr_finder import find_learning_rate  # noqa: E402
from siamdog.training.pseudo_rounds import round_folder, train_with_pseudo_labels  # noqa: E402
from siamdog.training.trainer import train  # noqa: E402
from tests.conftest import STAGES, read_history, tiny_config  # noqa: E402


def main() -> None:
    data, out, distribution, loader_threads = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    # No dropout: its masks are drawn per device.
    config = tiny_config(mode="multiloss", dropout=0.0, distribution=distribution, stages=[{**STAGES[1], "epochs": 2}])
    if sys.argv[5:] == ["lr-find"]:
        sweep = find_learning_rate(data, config, start=1e-5, end=1e-1, steps=12, workers=loader_threads)
        print(json.dumps(sweep.losses.tolist()))
        return
    if sys.argv[5:] == ["pseudo-labels"]:
        train_with_pseudo_labels(data, out, config, data.parent / "test", threshold=0.3, workers=loader_threads, verbose=0)
        chosen = json.loads((round_folder(out, 1) / "pseudo-labels.json").read_text())["chosen"]
        print(json.dumps([chosen, *(float(row["loss"]) for row in read_history(round_folder(out, 1), "finetune"))]))
        return
    train(data, out, config, workers=loader_threads, verbose=0)
    print(json.dumps([float(row["loss"]) for row in read_history(out, "finetune")]))


if __name__ == "__main__":
    main()
