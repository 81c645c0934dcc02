"""Bilinear resizing exactly as each original does it (docs/original.md §1).

* ``"tf"``: TF1 ``resize_bilinear`` with ``align_corners=False`` and no half-pixel centres:
  the source coordinate of output pixel ``d`` is ``d * in / out`` (clamped at the last pixel).
  This is *not* PyTorch's ``align_corners=False``, which uses half-pixel centres.
* ``"caffe"``: Caffe's ``Interp`` layer, corner-aligned: ``d * (in - 1) / (out - 1)``, i.e.
  PyTorch's ``align_corners=True``.

Both are separable, so a resize is two small matrix products, ``Wy @ x @ Wx^T``. That is exact,
works for any sizes and dtypes, and exports to ONNX as plain matmuls.
"""

from __future__ import annotations

import torch

from .conventions import Convention, check_convention


def interp_matrix(
    in_size: int, out_size: int, convention: Convention, *, dtype=torch.float32, device=None
) -> torch.Tensor:
    """The ``out_size x in_size`` matrix whose rows hold each output pixel's two weights."""
    check_convention(convention)
    dst = torch.arange(out_size, dtype=torch.float64, device=device)
    if convention == "tf":
        src = dst * (in_size / out_size)
    else:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * scale
    low = src.floor().clamp(max=in_size - 1)
    frac = src - low
    low = low.long()
    high = (low + 1).clamp(max=in_size - 1)
    m = torch.zeros(out_size, in_size, dtype=torch.float64, device=device)
    rows = torch.arange(out_size, device=device)
    m.index_put_((rows, low), 1.0 - frac, accumulate=True)
    m.index_put_((rows, high), frac, accumulate=True)
    return m.to(dtype)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], convention: Convention) -> torch.Tensor:
    """Resize the last two dims of ``x`` (``...xHxW``) to ``size`` with the convention's bilinear."""
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = x.shape[-2], x.shape[-1]
    if (in_h, in_w) == (out_h, out_w):
        return x
    dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    wy = interp_matrix(in_h, out_h, convention, dtype=dtype, device=x.device)
    wx = interp_matrix(in_w, out_w, convention, dtype=dtype, device=x.device)
    return wy @ x.to(dtype) @ wx.T


def scaled_size(height: int, width: int, scale: float, convention: Convention) -> tuple[int, int]:
    """Input size of a multi-scale branch.

    TF (``evaluate_msc.py``): ``int(h * s)``. Caffe (``Interp`` shrink/zoom): ``(h - 1) * s + 1``,
    rounded down, which keeps the corner-aligned grid (321 → 241 at 0.75, 161 at 0.5).
    """
    if convention == "tf":
        return max(int(height * scale), 1), max(int(width * scale), 1)
    return max(int((height - 1) * scale) + 1, 1), max(int((width - 1) * scale) + 1, 1)
