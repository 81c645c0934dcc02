"""What this CPU can do fast: its instruction-set features, grouped into the classes the engine choice uses.

The classes, from slowest to fastest for DeepLab-v2's convolutions:

- ``baseline``: no AVX2 (old or non-x86 CPUs as far as these flags tell).
- ``avx2``: AVX2 + FMA (e.g. AMD EPYC before Zen 4, older Intel): fp32 only; bf16 is emulated and
  int8 without VNNI gains little.
- ``avx512``: AVX-512 without native bf16.
- ``bf16``: native bf16 dot products (``avx512_bf16``) or Intel AMX (``amx_bf16``): oneDNN and
  OpenVINO run bf16 at up to twice (AMX: many times) the fp32 rate.

The flags come from ``/proc/cpuinfo`` (Linux); elsewhere from PyTorch's own dispatch level
(``torch.backends.cpu.get_cpu_capability()``), which knows AVX2 and AVX-512 but not bf16.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
VNNI_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def parse_cpuinfo(text: str) -> tuple[frozenset[str], str, int]:
    """The feature flags, model name and physical core count in the text of ``/proc/cpuinfo``."""
    flags: frozenset[str] = frozenset()
    model = ""
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        elif key == "model name" and not model:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
            cores.add((physical, core))
    return flags, model, len(cores)


def parse_clock_mhz(text: str) -> float:
    """The first ``cpu MHz`` of a ``/proc/cpuinfo`` text (0 when absent)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 0.0


@functools.lru_cache(maxsize=1)
def _cpuinfo_text() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[frozenset[str], str, int]:
    return parse_cpuinfo(_cpuinfo_text())


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (lower case, as Linux names them); from torch's dispatch level off Linux."""
    flags = _cpuinfo()[0]
    if flags:
        return flags
    capability = torch.backends.cpu.get_cpu_capability().lower()  # e.g. "avx2", "avx512", "default"
    if capability.startswith("avx512"):
        return frozenset({"avx2", "fma", "avx512f"})
    return frozenset({"avx2", "fma"}) if capability.startswith("avx2") else frozenset()


def cpu_model() -> str:
    """The CPU's model name (empty when unknown)."""
    return _cpuinfo()[1]


def clock_mhz() -> float:
    """The clock Linux reports for the first core, in MHz (0 when unknown; boost clocks may be higher)."""
    return parse_clock_mhz(_cpuinfo_text())


def fp32_flops_per_cycle(flags: Iterable[str] | None = None) -> int:
    """Peak float32 FLOPs per cycle and core: two FMA units of the widest vectors the flags show.

    AVX-512: 2 x 16 lanes x 2 = 64; AVX2 + FMA: 32; AVX: 16 (mul + add); else 8 (SSE). Cores with a
    single 512-bit FMA unit reach half the AVX-512 figure.
    """
    flags = frozenset(cpu_flags() if flags is None else flags)
    if "avx512f" in flags:
        return 64
    if "avx2" in flags and "fma" in flags:
        return 32
    return 16 if "avx" in flags else 8


def physical_cores() -> int:
    """Physical cores (hyper-threads share a core's vector units, so more threads than cores rarely help)."""
    return _cpuinfo()[2] or os.cpu_count() or 1


def feature_class(flags: Iterable[str] | None = None) -> str:
    """``bf16``, ``avx512``, ``avx2`` or ``baseline`` (see the module's description)."""
    flags = frozenset(cpu_flags() if flags is None else flags)
    if any(f in flags for f in FAST_BF16_FLAGS):
        return "bf16"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "baseline"


def has_vnni(flags: Iterable[str] | None = None) -> bool:
    """Whether int8 dot products are native (VNNI or AMX-INT8): what makes int8 inference pay off."""
    flags = frozenset(cpu_flags() if flags is None else flags)
    return any(f in flags for f in VNNI_FLAGS)


CLASS_LABELS = {"bf16": "bf16-capable CPU", "avx512": "AVX-512 CPU", "avx2": "AVX2 CPU", "baseline": "CPU"}


def describe(flags: Iterable[str] | None = None) -> str:
    """A few words for messages, e.g. ``AVX2 CPU`` or ``bf16-capable CPU with VNNI``."""
    label = CLASS_LABELS[feature_class(flags)]
    return label + (" with VNNI" if has_vnni(flags) else "")
