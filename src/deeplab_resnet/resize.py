"""Bilinear resizing and multi-scale sizes exactly as each original computes them (docs/original.md §1, §5).

* ``"tf"``: TF1 ``resize_bilinear`` with ``align_corners=False`` and no half-pixel centres, the
  legacy kernel (``resize_bilinear_op.cc``). Everything in float32: ``scale = in / (float)out``,
  source ``in = (float)d * scale``, ``lower = max(floor(in), 0)``, ``upper = min(ceil(in), in - 1)``,
  ``lerp = in - floor(in)``; a value is ``top + (bottom - top) * lerp``, along the width first.
  This is *not* PyTorch's ``align_corners=False``, which uses half-pixel centres.
* ``"caffe"``: Caffe's ``Interp`` layer (``interp.cpp`` of deeplab-public-ver2), corner-aligned,
  in float32: ``r = (float)(in - 1) / (out - 1)``, ``src = r * d``, ``lower = (int)src``,
  ``lambda = src - lower``, the upper neighbour only while ``lower < in - 1``; a value is
  ``(1 - lambda) * a + lambda * b``, along the width first. PyTorch's ``align_corners=True``
  up to the float32 coordinates.

:func:`source_taps` holds that coordinate rule for both. :func:`resize_bilinear` applies it with
each original's per-element arithmetic (bit for bit, up to compiler FMA contraction in the
originals); :func:`interp_matrix` turns the same taps into the separable matrices that the
Segmenter's chunked upsampling and the data pipeline use (equal up to float rounding).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from .conventions import Convention, check_convention

# Multi-scale branch sizes in the caffe convention follow Interp's integer shrink/zoom factors
# for scales that are such a ratio with a shrink factor up to this (0.75 = 3/4, 0.5 = 1/2,
# 0.6 = 3/5, 1.25 = 5/4, ...); see scaled_size.
MAX_SHRINK_FACTOR = 10


def source_taps(in_size: int, out_size: int, convention: Convention) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each output pixel's two source pixels and the weight of the second: ``(lower, upper, lerp)``.

    ``lower``/``upper`` are int64 indices, ``lerp`` is float32, computed with the original's own
    float32 arithmetic (module docstring).
    """
    check_convention(convention)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"cannot resize {in_size} pixels to {out_size}")
    dst = np.arange(out_size, dtype=np.float32)
    if convention == "tf":
        scale = np.float32(in_size) / np.float32(out_size)  # CalculateResizeScale
        src = dst * scale  # LegacyScaler: (float)x * scale
        floor = np.floor(src)
        # TF does not clamp lower above; it cannot exceed in - 1 unless float rounding hits in exactly.
        lower = np.clip(floor, 0, in_size - 1).astype(np.int64)
        upper = np.minimum(np.ceil(src), in_size - 1).astype(np.int64)
        lerp = (src - floor).astype(np.float32)
    else:
        ratio = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0.0)
        src = ratio * dst
        lower = np.minimum(src.astype(np.int64), in_size - 1)  # (int) truncation; src >= 0
        upper = lower + (lower < in_size - 1)
        lerp = (src - lower.astype(np.float32)).astype(np.float32)
    return lower, upper, lerp


def interp_matrix(
    in_size: int, out_size: int, convention: Convention, *, dtype=torch.float32, device=None
) -> torch.Tensor:
    """The ``out_size x in_size`` matrix whose rows hold each output pixel's two weights
    (``1 - lerp`` and ``lerp`` of :func:`source_taps`, the first rounded to float32 as Caffe does)."""
    lower, upper, lerp = source_taps(in_size, out_size, convention)
    rows = torch.arange(out_size)
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    m.index_put_(
        (rows, torch.from_numpy(lower)), torch.from_numpy((np.float32(1.0) - lerp).astype(np.float64)), accumulate=True
    )
    m.index_put_((rows, torch.from_numpy(upper)), torch.from_numpy(lerp.astype(np.float64)), accumulate=True)
    return m.to(dtype=dtype, device=device)


def _lerp_axis(x: torch.Tensor, dim: int, in_size: int, out_size: int, convention: Convention) -> torch.Tensor:
    lower, upper, lerp = source_taps(in_size, out_size, convention)
    shape = [1] * x.dim()
    shape[dim] = out_size
    a = x.index_select(dim, torch.from_numpy(lower).to(x.device))
    b = x.index_select(dim, torch.from_numpy(upper).to(x.device))
    if convention == "tf":  # compute_lerp: a + (b - a) * lerp
        return a + (b - a) * torch.from_numpy(lerp).to(x.device, x.dtype).view(shape)
    w0 = torch.from_numpy(np.float32(1.0) - lerp).to(x.device, x.dtype).view(shape)
    return w0 * a + torch.from_numpy(lerp).to(x.device, x.dtype).view(shape) * b  # interp.cpp


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], convention: Convention) -> torch.Tensor:
    """Resize the last two dims of ``x`` (``...xHxW``) to ``size`` with the convention's bilinear.

    The original's per-element arithmetic: the width first, then the height, in ``x``'s dtype
    (float32 in both originals). Differentiable; the same size returns ``x`` itself (as
    Caffe's Interp copies and TF's kernel yields the input).
    """
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = x.shape[-2], x.shape[-1]
    if (in_h, in_w) == (out_h, out_w):
        return x
    if not x.dtype.is_floating_point:
        x = x.to(torch.float32)
    if in_w != out_w:
        x = _lerp_axis(x, x.dim() - 1, in_w, out_w, convention)
    if in_h != out_h:
        x = _lerp_axis(x, x.dim() - 2, in_h, out_h, convention)
    return x


def interp_size(n: int, *, zoom: int = 1, shrink: int = 1) -> int:
    """Output length of Caffe's ``Interp`` with ``zoom_factor``/``shrink_factor`` on ``n`` pixels.

    deeplab-public-ver2's ``interp_layer.cpp`` shrinks first, then zooms:
    ``m = (n - 1) / shrink + 1`` (integer division), then ``m + (m - 1) * (zoom - 1)``, i.e.
    ``zoom * floor((n - 1) / shrink) + 1``.
    """
    if n < 1 or zoom < 1 or shrink < 1:
        raise ValueError(f"Interp of {n} pixels with zoom {zoom}, shrink {shrink}")
    return zoom * ((n - 1) // shrink) + 1


def interp_factors(scale: float) -> tuple[int, int] | None:
    """``(zoom, shrink)`` with ``zoom / shrink == scale`` and ``shrink <= MAX_SHRINK_FACTOR``, else ``None``."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    frac = Fraction(scale).limit_denominator(MAX_SHRINK_FACTOR)
    if frac.numerator < 1 or abs(float(frac) - scale) > 1e-9 * scale:
        return None
    return frac.numerator, frac.denominator


def scaled_size(height: int, width: int, scale: float, convention: Convention) -> tuple[int, int]:
    """Input size of a multi-scale branch: the one rule for segment, evaluate and train.

    * tf (``evaluate_msc.py``, ``train_msc.py``): ``to_int32(to_float(h) * s)``, in float32;
      may be 0 for tiny inputs (TF would then fail; :class:`~deeplab_resnet.models.MSC` refuses).
    * caffe (the authors' MSC prototxt): Interp with integer factors, shrink first, then zoom:
      ``zoom * floor((h - 1) / shrink) + 1`` (:func:`interp_size`); 0.75 is ``zoom 3, shrink 4``
      (513 → 385, 500 → 373), 0.5 is ``shrink 2`` (513 → 257). A scale that is no such ratio
      (shrink factor above ``MAX_SHRINK_FACTOR``; the authors' graph cannot express it) gets
      ``floor((h - 1) * s) + 1``, the corner-aligned grid of an Interp with explicit size.
    """
    check_convention(convention)
    if convention == "tf":
        s = np.float32(scale)
        return int(np.float32(height) * s), int(np.float32(width) * s)
    factors = interp_factors(scale)
    if factors is None:
        return math.floor((height - 1) * scale) + 1, math.floor((width - 1) * scale) + 1
    zoom, shrink = factors
    return interp_size(height, zoom=zoom, shrink=shrink), interp_size(width, zoom=zoom, shrink=shrink)
