"""`precision: auto`: the precision picked for each kind of machine (no backend needed)."""

import pytest

from siamdog.training.hardware import Hardware, auto_precision, cpu_flags, parse_compute_capability

CPU_FLAGS = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n"


@pytest.mark.parametrize("hardware, precision", [
    (Hardware(None, None, frozenset({"avx512f", "amx_bf16", "amx_tile"})), "mixed_bfloat16"),
    (Hardware(None, None, frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})), "mixed_bfloat16"),  # without AMX
    (Hardware(None, None, frozenset({"avx2", "avx512f", "avx512_vnni"})), "float32"),
    (Hardware("gpu", (9, 0), frozenset()), "mixed_bfloat16"),
    (Hardware("gpu", (8, 0), frozenset()), "mixed_bfloat16"),
    (Hardware("gpu", (7, 5), frozenset({"amx_bf16"})), "mixed_float16"),  # the GPU trains, not the CPU
    (Hardware("gpu", None, frozenset()), "float32"),
    (Hardware("tpu", None, frozenset()), "mixed_bfloat16"),
])
def test_auto_precision_is_bfloat16_where_the_hardware_computes_in_it(hardware, precision):
    assert auto_precision(hardware) == precision


def test_cpu_flags_are_the_first_processor_s_and_none_without_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPU_FLAGS)
    assert cpu_flags(tmp_path / "cpuinfo") == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize("text, capability", [("9.0", (9, 0)), ("8.6", (8, 6)), ("gfx90a", None), (None, None), ("", None)])
def test_a_compute_capability_is_read_from_jax_s_text_or_is_unknown(text, capability):
    assert parse_compute_capability(text) == capability
