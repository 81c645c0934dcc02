"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011) with interchangeable backends.

:func:`dense_crf` takes the image and the class probabilities at the image's size and returns
refined probabilities; the unary is ``-log(probs)``. It checks its input once
(:func:`.params.check_inputs`) and hands it to a backend:

- ``builtin`` (:mod:`.builtin`): ours. On CPU the C kernel of :mod:`.c_meanfield` when a C compiler
  is found (compiled on first use), else torch ops (:mod:`.torch_meanfield`); torch ops on CUDA.
- ``pydensecrf`` (:mod:`.pydensecrf_adapter`): the ``pydensecrf2`` package, optional extra ``[crf]``.

Both compute the same model (:mod:`.meanfield_rules` documents it) and agree label for label.
``torch`` is the old name of ``builtin`` and still accepted (with a :class:`DeprecationWarning`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import DeepLabError
from . import builtin, kernel_c, pydensecrf_adapter
from .params import DEFAULT_PRESET, MAX_FEATURE, PRESETS, CRFParams, check_inputs

__all__ = [
    "BACKENDS",
    "BACKEND_ALIASES",
    "DEFAULT_PRESET",
    "MAX_FEATURE",
    "PRESETS",
    "CRFParams",
    "check_backend",
    "check_inputs",
    "dense_crf",
    "pydensecrf_available",
    "resolve_backend",
]

BACKENDS = ("auto", "builtin", "pydensecrf")
# Old names that keep existing scripts working: --crf-backend torch ran our C kernel on CPU.
BACKEND_ALIASES = {"torch": "builtin"}

pydensecrf_available = pydensecrf_adapter.available


def check_backend(backend: str) -> str:
    """The name in :data:`BACKENDS` that ``backend`` stands for (an old alias is mapped to its new
    name, with a :class:`DeprecationWarning`), after checking that it can run here.

    Raises:
        DeepLabError: an unknown name, or ``pydensecrf`` without the package (the message says how
            to install it).
    """
    if backend in BACKEND_ALIASES:
        new = BACKEND_ALIASES[backend]
        warnings.warn(f"CRF backend {backend!r} is now called {new!r}", DeprecationWarning, stacklevel=2)
        backend = new
    if backend not in BACKENDS:
        raise DeepLabError(f"unknown CRF backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "pydensecrf" and not pydensecrf_available():
        raise DeepLabError(pydensecrf_adapter.INSTALL_HINT)
    return backend


def resolve_backend(backend: str = "auto", device: str | None = None) -> str:
    """The concrete backend ``"builtin"`` or ``"pydensecrf"`` that ``backend`` means here.

    ``auto``: ours on CUDA, and on CPU whenever its C kernel compiles (it is several times faster
    than pydensecrf there; BENCHMARKS.md, "Dense CRF of our own"); without a C compiler,
    ``pydensecrf`` when it is installed (ours then runs as torch ops, which are only about as
    fast), else ours.

    Args:
        backend: one of :data:`BACKENDS` (or an alias in :data:`BACKEND_ALIASES`).
        device: the device ours would run on (``None``: CUDA when available).
    """
    backend = check_backend(backend)
    if backend != "auto":
        return backend
    on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if on_cuda or not pydensecrf_available() or kernel_c.available():
        return "builtin"
    return "pydensecrf"


def dense_crf(
    image: np.ndarray, probs: np.ndarray, params: CRFParams = PRESETS[DEFAULT_PRESET], *, backend: str = "auto"
) -> np.ndarray:
    """Refine ``probs`` (``C x H x W`` float32, summing to 1 over C) for ``image`` (``H x W x 3`` uint8 RGB).

    Args:
        image: the RGB image the probabilities belong to.
        probs: class probabilities at the image's size.
        params: iterations, kernel weights and standard deviations (see :data:`PRESETS`).
        backend: ``"builtin"`` (ours, CUDA when available), ``"pydensecrf"`` (optional extra
            ``[crf]``) or ``"auto"`` (see :func:`resolve_backend`).

    Returns:
        Refined ``C x H x W`` float32 probabilities.

    Raises:
        DeepLabError: bad input or an unknown or missing backend.
    """
    name = resolve_backend(backend)
    check_inputs(image, probs, params)
    if name == "builtin":
        return builtin.refine(image, probs, params)
    return pydensecrf_adapter.refine(image, probs, params)
