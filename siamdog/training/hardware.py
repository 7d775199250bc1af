"""What this machine computes on, and `precision: auto`: the tower's precision that trains
fastest there.

On CPUs, bfloat16 pays where they compute in it: a training step of the whole tower ran 1.45x
as fast as float32 on 2 cores with AMX (Intel Xeon, Sapphire Rapids and later) and 1.63x on an
AMD EPYC with AVX-512 BF16, with the same accuracy; on a Xeon whose flags were not recorded,
probably with neither, the forward ran 0.63x as fast (bench/README.md, "Mixed precision"). On
accelerators the choice is the usual one, not measured here: bfloat16 on TPUs and on NVIDIA
GPUs of compute capability 8.0 (Ampere) and later, float16 with loss scaling on older NVIDIA
GPUs, float32 where the capability is unknown (other vendors).
"""

import os
from dataclasses import dataclass
from pathlib import Path

BFLOAT16_COMPUTE_CAPABILITY = (8, 0)
BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True)
class Hardware:
    accelerator: str | None  # "gpu" or "tpu", or None: the CPU alone
    compute_capability: tuple[int, int] | None  # an NVIDIA GPU's (major, minor)
    cpu_flags: frozenset[str]  # as /proc/cpuinfo names them


def auto_precision(hardware: Hardware) -> str:
    """The precision (a name in siamdog.config.PRECISIONS) that trains the tower fastest on `hardware`."""
    if hardware.accelerator == "tpu":
        return "mixed_bfloat16"
    if hardware.accelerator == "gpu":
        if hardware.compute_capability is None:
            return "float32"
        return "mixed_bfloat16" if hardware.compute_capability >= BFLOAT16_COMPUTE_CAPABILITY else "mixed_float16"
    return "mixed_bfloat16" if hardware.cpu_flags & BFLOAT16_CPU_FLAGS else "float32"


def this_hardware() -> Hardware:
    """This machine, as the Keras backend sees its accelerators."""
    accelerator, capability = _accelerator()
    return Hardware(accelerator, capability, cpu_flags())


def has_accelerator() -> bool:
    """Whether the backend sees a GPU or a TPU."""
    return _accelerator()[0] is not None


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags (empty where the system has no /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _accelerator() -> tuple[str | None, tuple[int, int] | None]:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None, None
        if device.platform == "tpu":
            return "tpu", None
        # a str such as "9.0" on CUDA (on ROCm the gfx version, which is no capability)
        return "gpu", parse_compute_capability(getattr(device, "compute_capability", None))
    if backend == "torch":
        import torch

        return ("gpu", tuple(torch.cuda.get_device_capability())) if torch.cuda.is_available() else (None, None)
    import tensorflow as tf

    if tf.config.list_physical_devices("TPU"):
        return "tpu", None
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None, None
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    return "gpu", tuple(capability) if capability else None


def parse_compute_capability(text: str | None) -> tuple[int, int] | None:
    """(major, minor) from JAX's "MAJOR.MINOR"; None for anything else."""
    major, _, minor = (text or "").partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None
