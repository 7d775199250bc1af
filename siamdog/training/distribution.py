"""Data-parallel training over the local devices, on the engines Keras 3 supports.

`data_parallel` replicates the model on every local accelerator (or every logical CPU device
when there is none) and splits each batch between them; `batch_size` stays the global batch,
so a run's figures do not change with the number of devices. JAX uses
`keras.distribution.DataParallel` (multi-host too, after `jax.distributed.initialize`);
TensorFlow uses `tf.distribute.MirroredStrategy`, its documented single-host path
(MultiWorkerMirroredStrategy does not work with Keras 3: keras issue 20585). The PyTorch
backend has no Keras-level data parallelism, and is refused.

Several hosts (JAX only): one process per host, each started with Keras's
KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and
KERAS_DISTRIBUTION_PROCESS_ID (`join_processes` reads them). Every process builds the same
global batches from the same seed and feeds the model its own rows of each (`ProcessShare`);
the devices of all processes together then train as one. Inference (validation, the cached
passes) runs the whole batch on every process, so each holds every figure a run records and
writes a complete run folder of its own (processes that share a filesystem need one --run
each: the run's lock refuses a second process).
"""

import contextlib
import os

import keras
import numpy as np
from keras import tree

from siamdog.errors import SiamdogError

DISTRIBUTIONS = ("none", "data_parallel")


def _tensorflow_devices() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]


PROCESS_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")


def join_processes() -> None:
    """Join the other processes of a multi-host run, if the environment names them (see the
    module's docstring); before anything else runs on the backend."""
    count = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")
    if not count.isdigit():
        raise SiamdogError(f"KERAS_DISTRIBUTION_NUM_PROCESSES={count!r}: the number of processes, a whole number")
    if int(count) <= 1:
        return
    missing = [name for name in PROCESS_VARIABLES if not os.environ.get(name)]
    if missing:
        raise SiamdogError(f"a multi-process run needs {', '.join(PROCESS_VARIABLES)}; {', '.join(missing)} not set")
    if keras.backend.backend() != "jax":
        raise SiamdogError(f"several processes: implemented for the JAX backend (KERAS_BACKEND=jax), not {keras.backend.backend()}")
    import jax

    # Keras agrees on a seed over the CPU devices, and CPU-only processes train over them: gloo
    # does their collectives (asking which platform JAX has would start it too early).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize()


def process_place() -> tuple[int, int]:
    """(this process's index, the number of processes) of this run: several only on JAX,
    after join_processes."""
    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


class ProcessShare(keras.utils.PyDataset):
    """This process's rows of every batch of `source` (for a run of several processes): the
    process with id k of P takes the k-th of P equal slices of each array. Index arrays into the
    batch (a pair's partner) keep their global values: the model computes on the global batch."""

    def __init__(self, source: keras.utils.PyDataset, process: int, processes: int):
        super().__init__()
        self.source, self.process, self.processes = source, process, processes

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        def share(array: np.ndarray) -> np.ndarray:
            rows = len(array) // self.processes
            if rows * self.processes != len(array):
                raise SiamdogError(f"batch {index} has {len(array)} samples, which {self.processes} processes cannot share equally")
            return array[self.process * rows : (self.process + 1) * rows]

        return tree.map_structure(share, self.source[index])

    def on_epoch_begin(self) -> None:
        self.source.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.source.on_epoch_end()


def process_data(data: keras.utils.PyDataset) -> keras.utils.PyDataset:
    """What this process feeds `fit`: `data` itself, or its share in a run of several processes."""
    process, processes = process_place()
    return data if processes == 1 else ProcessShare(data, process, processes)


@contextlib.contextmanager
def distributed(name: str, batch_size: int, mode: str):
    """Build, compile and train the model inside this context to train it with `name`."""
    _, processes = process_place()
    if name == "none":
        if processes > 1:
            raise SiamdogError(f"{processes} processes train one model only with distribution data_parallel (set distribution: data_parallel)")
        yield
        return
    if name not in DISTRIBUTIONS:
        raise SiamdogError(f"unknown distribution {name!r} (choose from {', '.join(DISTRIBUTIONS)})")
    backend = keras.backend.backend()
    if backend == "tensorflow" and mode == "multiloss":
        # JAX shards a batch but computes as if on the whole of it; a MirroredStrategy replica
        # sees only its part, where a pair's partner (an index into the batch) may not be.
        raise SiamdogError(
            "distribution data_parallel on TensorFlow: the multi-loss pairs span the whole batch, which MirroredStrategy "
            "splits between devices; use mode softmax, or the JAX backend (KERAS_BACKEND=jax)"
        )
    if backend == "jax":
        devices = keras.distribution.list_devices()
        _check_batch(batch_size, len(devices))
        previous = keras.distribution.distribution()
        # Each process feeds its own share of the batches (ProcessShare), not all of them.
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=processes == 1))
        try:
            yield
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        import tensorflow as tf

        devices = _tensorflow_devices()
        _check_batch(batch_size, len(devices))
        with tf.distribute.MirroredStrategy(devices).scope():
            yield
    else:
        raise SiamdogError(f"distribution data_parallel: implemented for the JAX and TensorFlow backends, not {backend}")


def loader_workers(name: str, workers: int) -> int:
    """Threads for Keras's PyDataset loader under distribution `name`. Under a MirroredStrategy
    TensorFlow's fit starts an epoch of the loader to build the model even when it is built
    (so build_before_fit cannot spare it), and with several threads the batches prefetched by
    then reach the model again in the first epoch (found by comparing runs on one and two
    devices), so there the loader runs in one thread."""
    return 1 if name != "none" and keras.backend.backend() == "tensorflow" else workers


def _check_batch(batch_size: int, devices: int) -> None:
    # JAX shards a batch in equal parts; TensorFlow would accept uneven ones, but the same
    # rule on both keeps a config portable.
    if batch_size % devices:
        raise SiamdogError(f"batch_size {batch_size}: data_parallel splits each batch between {devices} devices; use a multiple of {devices}")
