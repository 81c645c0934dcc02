"""How much memory the network needs for an input, checked before it runs out.

A full-resolution 4000x3000 photo (``--max-size 0``) or a large ``--scales`` value makes the
activations of the dilated ResNet grow with the input's pixels (output stride 8, 2048 channels in
res5). Rather than let the process be killed, the segmenter compares an estimate with the memory
the system says is available and stops with one line that says how to fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import DeepLabError

# Peak resident memory per input pixel of ResNet-101 (width 64) in float32 inference, measured as
# the growth of a process's peak RSS between building the model and segmenting one square image:
# 1.4 kB/pixel at 321x321, 1.05 at 513x513, 0.81 at 769x769 (2 threads, torch 2.13). The estimate
# takes the 513 figure; the fixed cost of small inputs is far below any machine's memory.
BYTES_PER_PIXEL = 1050


def network_bytes(height: int, width: int, scales: Sequence[float], architecture: dict) -> int:
    """Estimated peak bytes of the network on an ``height x width`` input at each of ``scales``."""
    pixels = sum(s * s for s in scales) * height * width
    return int(pixels * BYTES_PER_PIXEL * architecture.get("width", 64) / 64)


def available_bytes(device: torch.device) -> int | None:
    """Memory the system can still give this process (``None``: unknown here)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(height: int, width: int, scales: Sequence[float], architecture: dict, device: torch.device) -> None:
    """Raise :class:`DeepLabError` if the network would need more memory than is available."""
    need = network_bytes(height, width, scales, architecture)
    have = available_bytes(device)
    if have is not None and need > have:
        raise DeepLabError(
            f"a {width}x{height} input at scales {', '.join(f'{s:g}' for s in scales)} needs about "
            f"{need / 2**30:.1f} GB, and {have / 2**30:.1f} GB is available: use a smaller --max-size, "
            "--tile, or fewer or smaller --scales"
        )
