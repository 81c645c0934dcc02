"""The fragility measures of bench.sensitivity against hand-computed and closed-form values."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from deeplab_resnet.bench.sensitivity import noise_agreement, perturbation_gain, top2_margins


def test_top2_margins_against_a_sort():
    logits = torch.tensor([[[[3.0, 0.0]], [[1.0, 2.0]], [[-1.0, 2.5]]]])  # 1 x 3 classes x 1 x 2 pixels
    values = logits.numpy().astype(np.float64).reshape(3, 2)
    top = np.sort(values, axis=0)[::-1]
    expected = (top[0] - top[1]) / values.std(ddof=1)
    np.testing.assert_allclose(top2_margins(logits).numpy().reshape(2), expected, rtol=1e-12)
    assert math.isclose(float(top2_margins(logits)[0, 0, 0]), 2.0 / values.std(ddof=1))


def test_noise_agreement_matches_the_gaussian_flip_probability():
    # two classes at +a and -a everywhere: noise of relative L2 r has per-logit std r*a, and a pixel
    # flips when n2 - n1 > 2a, with probability Phi(-2a / (r a sqrt 2)) = Phi(-sqrt(2) / r)
    logits = torch.stack([torch.full((300, 300), 1.5), torch.full((300, 300), -1.5)]).unsqueeze(0)
    assert noise_agreement(logits, 0.0) == 1.0
    for rel in (0.5, 1.0, 2.0):
        flip = 0.5 * math.erfc(math.sqrt(2) / rel / math.sqrt(2))
        assert abs(noise_agreement(logits, rel, seed=3) - (1 - flip)) < 0.005, rel


def _orthogonal_conv(channels: int, seed: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1, bias=False).double()
    q, _ = torch.linalg.qr(
        torch.randn(channels, channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    conv.weight.data.copy_(q.reshape(channels, channels, 1, 1))
    return conv


def test_an_orthogonal_map_passes_noise_at_its_own_size():
    model = nn.Sequential(_orthogonal_conv(8, 0), _orthogonal_conv(8, 1))
    x = torch.randn(1, 8, 40, 40, dtype=torch.float64)
    assert abs(perturbation_gain(model, x, rel=0.01) - 1.0) < 1e-9
    assert abs(perturbation_gain(model, x, rel=0.01, at=model[0]) - 1.0) < 1e-9


def test_a_projection_that_drops_half_the_noise_damps_it_by_sqrt_2():
    # the signal lives in channels 0-3, which the model keeps; isotropic noise loses the other half
    keep = nn.Conv2d(8, 8, 1, bias=False).double()
    keep.weight.data.copy_(torch.diag(torch.tensor([1.0] * 4 + [0.0] * 4, dtype=torch.float64)).reshape(8, 8, 1, 1))
    x = torch.zeros(1, 8, 100, 100, dtype=torch.float64)
    x[:, :4] = torch.randn(1, 4, 100, 100, dtype=torch.float64)
    assert abs(perturbation_gain(keep, x, rel=0.01, seed=1) - 1 / math.sqrt(2)) < 0.01
