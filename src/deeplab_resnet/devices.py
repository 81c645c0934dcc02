"""Which device a command runs on, and how much memory it has used there: one rule for all.

torch is imported inside the functions: the command-line front-ends import this module before
parsing their arguments, and ``deeplab --help`` should not wait for torch.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from .errors import DeepLabError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def resolve_device(name: str, *, local_rank: int | None = None, option: str = "--device") -> str:
    """The device to use for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``).

    Args:
        name: what the user asked for; ``auto`` is CUDA when available, else the CPU.
        local_rank: under ``torchrun``, this process's local rank: plain ``cuda`` becomes
            ``cuda:LOCAL_RANK`` so that each process has its own GPU.
        option: the option ``name`` came from, for the error message.

    An unknown or unavailable device is a :class:`DeepLabError` naming ``option``.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not DEVICE_NAMES.match(name):
        raise DeepLabError(f"{option} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeepLabError(f"{option} {name}: CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else None
        if index is not None and index >= torch.cuda.device_count():
            raise DeepLabError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if index is None and local_rank is not None:
            name = f"cuda:{local_rank}"
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeepLabError(f"{option} mps: MPS is not available on this machine")
    return name


def _device_type(device: str | torch.device) -> str:
    return str(device).split(":")[0]


def peak_memory_mb(device: str | torch.device) -> float:
    """Peak memory so far in MiB: the CUDA allocator's peak on a GPU, else the process's peak
    resident size (NaN where the platform does not report it)."""
    import torch

    if _device_type(device) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def reset_peak_memory(device: str | torch.device) -> None:
    """Start a new peak (CUDA only: a process's peak resident size cannot be reset)."""
    import torch

    if _device_type(device) == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
