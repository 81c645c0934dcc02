"""How fragile a model's argmax is: the measures behind a reduced-precision path's agreement.

A reduced-precision engine perturbs every layer's activations a little; whether the labels survive
depends on two properties of the *model*, not of the engine:

- :func:`perturbation_gain`: how much a small relative perturbation of the input (or of one
  block's output) grows by the time it reaches the logits. A trained network damps noise; a
  random one passes it on or amplifies it.
- :func:`top2_margins` and :func:`noise_agreement`: how far apart the two best classes are at each
  pixel, and so how much logit noise flips the argmax. A trained classifier separates its classes
  by several logit standard deviations; a random one by a fraction of one.

``benchmarks/int8_diagnosis.py`` reports both for the model the speed benchmarks use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _relative_noise(x: torch.Tensor, rel: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise with ``||noise|| = rel * ||x||``."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return noise * (rel * x.norm() / noise.norm())


def top2_margins(logits: torch.Tensor) -> torch.Tensor:
    """Per pixel: (largest - second largest logit) / the standard deviation of all the logits.

    ``logits`` is ``N x C x h x w``; the result ``N x h x w``. Small values mean a fragile argmax.
    """
    top2 = logits.double().topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / logits.double().std()


def noise_agreement(logits: torch.Tensor, rel: float, *, seed: int = 0) -> float:
    """Share of pixels whose argmax survives Gaussian noise of relative L2 ``rel`` added to ``logits``."""
    ref = logits.double()
    noisy = ref + _relative_noise(ref, rel, torch.Generator().manual_seed(seed))
    return float((noisy.argmax(1) == ref.argmax(1)).double().mean())


@torch.inference_mode()
def perturbation_gain(
    model: nn.Module, x: torch.Tensor, *, rel: float = 0.01, at: nn.Module | None = None, seed: int = 0
) -> float:
    """Relative L2 change of the logits divided by ``rel``, the relative L2 of a Gaussian perturbation.

    The perturbation is added to the input, or to the output of module ``at`` (e.g. one residual
    block). 1 means the noise reaches the logits at its own relative size; above 1 it grows.
    """
    generator = torch.Generator().manual_seed(seed)
    reference = model(x)
    if at is None:
        perturbed = model(x + _relative_noise(x, rel, generator))
    else:
        perturb: Callable = lambda module, inputs, out: out + _relative_noise(out, rel, generator)  # noqa: E731
        handle = at.register_forward_hook(perturb)
        try:
            perturbed = model(x)
        finally:
            handle.remove()
    return float((perturbed - reference).double().norm() / reference.double().norm() / rel)
