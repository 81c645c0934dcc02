"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011) with interchangeable backends.

:func:`dense_crf` takes the image and the class probabilities at the image's size and returns
refined probabilities; the unary is ``-log(probs)``. Backends: ``torch`` (ours: on CPU the C
kernel of :mod:`.native` when it compiles, else torch ops; torch ops on CUDA) and ``pydensecrf``
(the ``pydensecrf2`` package, optional extra ``[crf]``); both compute the same model
(``torch_backend`` documents it) and agree label for label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DeepLabError


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations and the two kernels' weights and standard deviations.

    ``gaussian``: position-only kernel (weight ``pos_w``, std ``pos_xy``).
    ``bilateral``: position+colour kernel (weight ``bi_w``, stds ``bi_xy`` and ``bi_rgb``).
    Both use Potts compatibility, as ``pydensecrf``'s ``addPairwiseGaussian/Bilateral``.
    """

    iterations: int = 10
    pos_w: float = 3.0
    pos_xy: float = 1.0
    bi_w: float = 4.0
    bi_xy: float = 67.0
    bi_rgb: float = 3.0


# docs/original.md §6; the first is the default.
PRESETS: dict[str, CRFParams] = {
    "deeplab-resnet": CRFParams(10, 3.0, 1.0, 4.0, 67.0, 3.0),
    "deeplab-vgg": CRFParams(10, 3.0, 3.0, 4.0, 121.0, 5.0),
    "tf-branch": CRFParams(10, 4.0, 1.0, 5.0, 49.0, 13.0),
}
DEFAULT_PRESET = "deeplab-resnet"
# Largest lattice coordinate (feature / std) we accept: beyond ~1e6 float32 loses the lattice grid.
MAX_FEATURE = 65536.0
BACKENDS = ("auto", "torch", "pydensecrf")


def _check_inputs(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DeepLabError(f"CRF: expected an H x W x 3 uint8 RGB image, got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DeepLabError(f"CRF: the image is empty ({image.shape})")
    if not isinstance(probs, np.ndarray) or probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        got = probs.shape if isinstance(probs, np.ndarray) else type(probs).__name__
        raise DeepLabError(f"CRF: probabilities must be C x H x W at the image's size {image.shape[:2]}, got {got}")
    stds = (params.pos_xy, params.bi_xy, params.bi_rgb)
    if params.iterations < 0 or not all(math.isfinite(v) and v > 0 for v in stds):
        raise DeepLabError(f"CRF: iterations must be >= 0 and standard deviations finite and > 0, got {params}")
    if not all(math.isfinite(v) for v in (params.pos_w, params.bi_w)):
        raise DeepLabError(f"CRF: kernel weights must be finite, got {params}")
    largest = max(image.shape[:2]) / min(params.pos_xy, params.bi_xy)
    if max(largest, 255.0 / params.bi_rgb) > MAX_FEATURE:
        raise DeepLabError(
            f"CRF: standard deviations too small for a {image.shape[1]}x{image.shape[0]} image "
            f"(position / std and 255 / colour std must stay below {MAX_FEATURE:.0f}), got {params}"
        )


def pydensecrf_available() -> bool:
    """Whether the ``pydensecrf`` backend can run: the optional package and its adapter are both there."""
    import importlib.util

    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return importlib.util.find_spec(f"{__name__}.pydensecrf_backend") is not None


def resolve_backend(backend: str = "auto", device: str | None = None) -> str:
    """The concrete backend ``"torch"`` or ``"pydensecrf"`` that ``backend`` means here.

    ``auto``: ours (``"torch"``) on CUDA, and on CPU whenever its C kernel compiles (it is several
    times faster than pydensecrf there; BENCHMARKS.md, "Dense CRF of our own"); without a C
    compiler, ``pydensecrf`` when it is installed (ours then runs as torch ops, which are only
    about as fast), else ours.

    Args:
        backend: one of :data:`BACKENDS`.
        device: the device ours would run on (``None``: CUDA when available).
    """
    if backend not in BACKENDS:
        raise DeepLabError(f"unknown CRF backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    import torch

    on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if on_cuda or not pydensecrf_available():
        return "torch"
    from . import native

    return "torch" if native.available() else "pydensecrf"


def dense_crf(
    image: np.ndarray, probs: np.ndarray, params: CRFParams = PRESETS[DEFAULT_PRESET], *, backend: str = "auto"
) -> np.ndarray:
    """Refine ``probs`` (``C x H x W`` float32, summing to 1 over C) for ``image`` (``H x W x 3`` uint8 RGB).

    Args:
        image: the RGB image the probabilities belong to.
        probs: class probabilities at the image's size.
        params: iterations, kernel weights and standard deviations (see :data:`PRESETS`).
        backend: ``"torch"`` (ours, CUDA when available), ``"pydensecrf"`` (optional extra
            ``[crf]``) or ``"auto"`` (see :func:`resolve_backend`).

    Returns:
        Refined ``C x H x W`` float32 probabilities.
    """
    name = resolve_backend(backend)
    _check_inputs(image, probs, params)
    if name == "torch":
        from . import torch_backend

        return torch_backend.run(image, probs, params)
    if not pydensecrf_available():
        raise DeepLabError(
            'the pydensecrf CRF backend needs the pydensecrf2 package: pip install "deeplab_resnet[crf]"'
        )
    from . import pydensecrf_backend

    return pydensecrf_backend.run(image, probs, params)
