"""Independent numpy float32 emulations of what the originals compute (docs/original.md §1, §5).

Written from the originals' arithmetic, not from the package: TF's legacy ``ResizeBilinear``
kernel (``resize_bilinear_op.cc``), Caffe's ``Interp`` (``interp.cpp``/``interp_layer.cpp`` of
deeplab-public-ver2), ``evaluate_msc.py``'s multi-scale graph and the authors' Caffe test
(pad to 513, MSC with Interp shrink/zoom, Eltwise MAX, ``fc1_interp`` zoom 8, crop). The only
package code they run is the single-scale network, passed in as ``net``.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def tf_taps(in_size: int, out_size: int):
    """compute_interpolation_weights with LegacyScaler, one output pixel at a time, in float32."""
    scale = F32(in_size) / F32(out_size)  # CalculateResizeScale: in_size / (float)out_size
    lower, upper, lerp = [], [], []
    for i in range(out_size):
        src = F32(F32(i) * scale)
        src_floor = np.floor(src)
        lower.append(max(int(src_floor), 0))
        upper.append(min(int(np.ceil(src)), in_size - 1))
        lerp.append(F32(src - src_floor))
    return np.array(lower), np.array(upper), np.array(lerp, dtype=F32)


def tf_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 ``resize_bilinear`` (align_corners=False, no half-pixel centres) of ``... x H x W`` float32."""
    x = x.astype(F32)
    yl, yu, ylerp = tf_taps(x.shape[-2], out_h)
    xl, xu, xlerp = tf_taps(x.shape[-1], out_w)
    top_left, top_right = x[..., yl[:, None], xl[None, :]], x[..., yl[:, None], xu[None, :]]
    bottom_left, bottom_right = x[..., yu[:, None], xl[None, :]], x[..., yu[:, None], xu[None, :]]
    # compute_lerp
    top = top_left + (top_right - top_left) * xlerp[None, :]
    bottom = bottom_left + (bottom_right - bottom_left) * xlerp[None, :]
    out = top + (bottom - top) * ylerp[:, None]
    assert out.dtype == F32
    return out


def caffe_taps(in_size: int, out_size: int):
    """interp.cpp's per-output coordinates: (h1, h1 + h1p, h0lambda, h1lambda), in float32."""
    ratio = F32(in_size - 1) / F32(out_size - 1) if out_size > 1 else F32(0.0)
    lo, hi, w0, w1 = [], [], [], []
    for d in range(out_size):
        src = F32(ratio * F32(d))
        i = int(src)
        step = 1 if i < in_size - 1 else 0
        lam = F32(src - F32(i))
        lo.append(i)
        hi.append(i + step)
        w1.append(lam)
        w0.append(F32(F32(1.0) - lam))
    return np.array(lo), np.array(hi), np.array(w0, dtype=F32), np.array(w1, dtype=F32)


def caffe_interp(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Caffe's ``Interp`` of ``... x H x W`` float32 (corner-aligned; equal sizes copy)."""
    x = x.astype(F32)
    if x.shape[-2:] == (out_h, out_w):
        return x.copy()
    h_lo, h_hi, h0, h1 = caffe_taps(x.shape[-2], out_h)
    w_lo, w_hi, w0, w1 = caffe_taps(x.shape[-1], out_w)
    p00, p01 = x[..., h_lo[:, None], w_lo[None, :]], x[..., h_lo[:, None], w_hi[None, :]]
    p10, p11 = x[..., h_hi[:, None], w_lo[None, :]], x[..., h_hi[:, None], w_hi[None, :]]
    out = h0[:, None] * (w0[None, :] * p00 + w1[None, :] * p01) + h1[:, None] * (w0[None, :] * p10 + w1[None, :] * p11)
    assert out.dtype == F32
    return out


def interp_out(n: int, zoom: int = 1, shrink: int = 1) -> int:
    """interp_layer.cpp's output size: shrink first, then zoom."""
    m = (n - 1) // shrink + 1
    return m + (m - 1) * (zoom - 1)


def bgr_input(rgb: np.ndarray, mean_bgr) -> np.ndarray:
    """``1 x 3 x H x W`` float32: BGR minus the mean."""
    bgr = rgb[:, :, ::-1].astype(F32) - np.asarray(mean_bgr, dtype=F32)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])


def evaluate_msc_tf(net, x: np.ndarray, scales=(1.0, 0.75, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """``evaluate_msc.py``: fused stride-8 logits and their resize to the input size."""
    h, w = x.shape[-2:]
    raw100 = net(x)
    outs = [raw100]
    for s in scales[1:]:
        size = int(F32(h) * F32(s)), int(F32(w) * F32(s))  # to_int32(to_float(h) * s)
        branch = net(tf_resize(x, *size))
        outs.append(tf_resize(branch, *raw100.shape[-2:]))
    fused = np.max(np.stack(outs), axis=0)
    return fused, tf_resize(fused, h, w)


# The authors' MSC prototxt: the input shrunk by Interp (zoom, shrink) per scale, the branch
# logits brought back by the inverse factors.
AUTHORS_BRANCHES = {0.75: ((3, 4), (4, 3)), 0.5: ((1, 2), (2, 1))}


def authors_caffe_test(
    net, rgb: np.ndarray, mean_bgr, *, msc: bool, pad: int = 513, back_to_grid: bool = False
) -> np.ndarray:
    """The authors' Caffe test of one image: ``C x H x W`` logits at the image size.

    Pad bottom/right with 0 after mean subtraction to ``pad`` (a longer side to the next 8k+1),
    the net (with MSC: Interp-shrunk branches, their logits Interp-zoomed back, Eltwise MAX),
    ``fc1_interp`` zoom 8, crop the image. ``back_to_grid`` brings the branch logits back to the
    1x grid by size (where the prototxt's fixed factors would not land on it and Caffe's Eltwise
    would abort); otherwise the test checks that they land on it.
    """
    height, width = rgb.shape[:2]

    def padded(n: int) -> int:
        return pad if n <= pad else 8 * -(-(n - 1) // 8) + 1

    x = np.zeros((1, 3, padded(height), padded(width)), dtype=F32)
    x[:, :, :height, :width] = bgr_input(rgb, mean_bgr)
    raw = net(x)
    if msc:
        outs = [raw]
        for (zoom, shrink), (zoom_back, shrink_back) in AUTHORS_BRANCHES.values():
            size = [interp_out(n, zoom, shrink) for n in x.shape[-2:]]
            branch = net(caffe_interp(x, *size))
            if back_to_grid:
                back = raw.shape[-2:]
            else:
                back = tuple(interp_out(n, zoom_back, shrink_back) for n in branch.shape[-2:])
                assert back == raw.shape[-2:], (back, raw.shape)  # else Eltwise would abort
            outs.append(caffe_interp(branch, *back))
        raw = np.max(np.stack(outs), axis=0)
    up = caffe_interp(raw, *[interp_out(n, zoom=8) for n in raw.shape[-2:]])
    return up[0, :, :height, :width]


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
