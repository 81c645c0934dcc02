"""The memory estimate that stops a run before the system kills it."""

from __future__ import annotations

import pytest
import torch

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.inference import memory


def test_the_estimate_grows_with_pixels_scales_and_width():
    full = {"width": 64}
    one = memory.network_bytes(513, 513, (1.0,), full)
    assert one == int(513 * 513 * memory.BYTES_PER_PIXEL)
    # the original's three scales: 1 + 0.5625 + 0.25 times the pixels
    assert memory.network_bytes(513, 513, (1.0, 0.75, 0.5), full) == int(1.8125 * 513 * 513 * memory.BYTES_PER_PIXEL)
    assert memory.network_bytes(513, 513, (1.0,), {"width": 8}) == one // 8
    # a 4000x3000 photo at full resolution: about 12 GB
    assert 11e9 < memory.network_bytes(3000, 4000, (1.0,), full) < 14e9


def test_an_input_that_does_not_fit_is_one_line(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4 << 30)
    memory.check_fits(500, 375, (1.0, 0.75, 0.5), {"width": 64}, torch.device("cpu"))  # fits
    with pytest.raises(
        DeepLabError, match=r"a 375x500 input at scales 20 needs about 73.3 GB, and 4.0 GB is available"
    ):
        memory.check_fits(500, 375, (20.0,), {"width": 64}, torch.device("cpu"))
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)  # unknown: no check
    memory.check_fits(500, 375, (20.0,), {"width": 64}, torch.device("cpu"))


def test_available_memory_is_read_from_the_system():
    have = memory.available_bytes(torch.device("cpu"))
    assert have is None or 0 < have < 1 << 50


def test_the_segmenter_refuses_an_input_that_would_not_fit(monkeypatch):
    import numpy as np
    from conftest import tiny_model

    from deeplab_resnet import Segmenter

    model = tiny_model()
    image = np.zeros((64, 48, 3), np.uint8)
    need = memory.network_bytes(64, 48, (1.0, 2.0), model.architecture)
    monkeypatch.setattr(memory, "available_bytes", lambda device: need - 1)
    with pytest.raises(DeepLabError, match="a 48x64 input at scales 1, 2 needs about"):
        Segmenter(model, scales=(1.0, 2.0))(image)
    monkeypatch.setattr(memory, "available_bytes", lambda device: need)
    assert Segmenter(model, scales=(1.0, 2.0))(image).labels.shape == (64, 48)
