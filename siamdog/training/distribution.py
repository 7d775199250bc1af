"""Data-parallel training over the local devices, on the engines Keras 3 supports.

`data_parallel` replicates the model on every local accelerator (or every logical CPU device
when there is none) and splits each batch between them; `batch_size` stays the global batch,
so a run's figures do not change with the number of devices. JAX uses
`keras.distribution.DataParallel` (multi-host too, after `jax.distributed.initialize`);
TensorFlow uses `tf.distribute.MirroredStrategy`, its documented single-host path
(MultiWorkerMirroredStrategy does not work with Keras 3: keras issue 20585). The PyTorch
backend has no Keras-level data parallelism, and is refused.
"""

import contextlib

import keras

from siamdog.errors import SiamdogError

DISTRIBUTIONS = ("none", "data_parallel")


def _tensorflow_devices() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]


@contextlib.contextmanager
def distributed(name: str, batch_size: int, mode: str):
    """Build, compile and train the model inside this context to train it with `name`."""
    if name == "none":
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
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
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
    Keras iterates the loader twice at the start of an epoch, and with several threads the
    batches then reach the model in another order (found by comparing runs on one and two
    devices), so there the loader runs in one thread."""
    return 1 if name != "none" and keras.backend.backend() == "tensorflow" else workers


def _check_batch(batch_size: int, devices: int) -> None:
    # JAX shards a batch in equal parts; TensorFlow would accept uneven ones, but the same
    # rule on both keeps a config portable.
    if batch_size % devices:
        raise SiamdogError(f"batch_size {batch_size}: data_parallel splits each batch between {devices} devices; use a multiple of {devices}")
