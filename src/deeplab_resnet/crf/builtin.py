"""The ``builtin`` CRF backend: our own dense CRF, on whichever of our kernels suits the device.

All kernels compute the model of :mod:`.meanfield_rules` and agree to rounding:

- ``"c"``: :mod:`.c_meanfield`, the C kernel (CPU only: the lattice, all iterations, slice,
  messages and softmax fused, OpenMP threads), compiled on first use;
- ``"torch"``: :mod:`.torch_meanfield`, torch ops on any device (CUDA, or a CPU without a C
  compiler);
- ``"triton"``: :mod:`.triton_lattice`, Triton kernels on CUDA (optional extra ``[gpu-crf]``; on
  the CPU only under Triton's interpreter, ``TRITON_INTERPRET=1``, which the tests use).

``"auto"`` takes the C kernel on CPU when it compiles, else torch ops; on CUDA the Triton kernels
when ``triton`` is installed, else torch ops. Inputs are those
:func:`deeplab_resnet.crf.dense_crf` has checked.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DeepLabError
from . import c_meanfield, kernel_c, torch_meanfield, triton_lattice
from .params import CRFParams

KERNELS = ("auto", "c", "torch", "triton")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """``"c"``, ``"torch"`` or ``"triton"``: what ``kernel`` means on ``device`` (see the module docstring)."""
    if kernel not in KERNELS:
        raise DeepLabError(f"unknown CRF kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    if kernel == "c" and device.type != "cpu":
        raise DeepLabError(f"the C CRF kernel runs on the CPU only, not on {device}")
    if kernel == "c" and not kernel_c.available():
        raise DeepLabError("the C CRF kernel could not be compiled (no working C compiler; set CC)")
    if kernel == "triton" and not triton_lattice.available():
        raise DeepLabError(triton_lattice.INSTALL_HINT)
    if kernel == "triton" and not triton_lattice.runs_on(device):
        raise DeepLabError(
            f"the Triton CRF kernel runs on CUDA (on the CPU only with TRITON_INTERPRET=1, for testing), not on {device}"
        )
    if kernel != "auto":
        return kernel
    if device.type == "cpu":
        return "c" if kernel_c.available() else "torch"
    return "triton" if device.type == "cuda" and triton_lattice.available() else "torch"


def refine_batch(images: torch.Tensor, probs: torch.Tensor, params: CRFParams, *, kernel: str = "auto") -> torch.Tensor:
    """Refine a batch of same-size images' probabilities on their device.

    Args:
        images: ``B x H x W x 3`` uint8 RGB.
        probs: ``B x C x H x W`` class probabilities (summing to 1 over C), same device.
        params: iterations, kernel weights and standard deviations.
        kernel: ``"auto"``, ``"c"``, ``"torch"`` or ``"triton"`` (see the module docstring).

    Returns:
        ``B x C x H x W`` float32 refined probabilities.
    """
    name = resolve_kernel(kernel, probs.device)
    if name == "c":
        out = [c_meanfield.refine(images[i].numpy(), probs[i].numpy(), params) for i in range(len(probs))]
        return torch.from_numpy(np.stack(out))
    if name == "triton":
        return triton_lattice.refine_batch(images, probs, params)
    return torch_meanfield.refine_batch(images, probs, params)


def refine(
    image: np.ndarray,
    probs: np.ndarray,
    params: CRFParams,
    device: torch.device | str | None = None,
    *,
    kernel: str = "auto",
) -> np.ndarray:
    """Refine ``probs`` (``C x H x W``) for ``image`` (``H x W x 3`` uint8 RGB); numpy in, numpy out.

    Args:
        image: the RGB image (the bilateral kernel's colours).
        probs: class probabilities at the image's size.
        params: iterations, kernel weights and standard deviations.
        device: where to run (default: CUDA when available, else CPU).
        kernel: ``"auto"``, ``"c"``, ``"torch"`` or ``"triton"`` (see the module docstring).

    Returns:
        ``C x H x W`` float32 refined probabilities.
    """
    dev = torch.device(device) if device is not None else default_device()
    name = resolve_kernel(kernel, dev)
    if name == "c":
        return c_meanfield.refine(image, probs, params)
    img = torch.from_numpy(np.ascontiguousarray(image)).to(dev)[None]
    p = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).to(dev)[None]
    module = triton_lattice if name == "triton" else torch_meanfield
    return module.refine_batch(img, p, params)[0].cpu().numpy()
