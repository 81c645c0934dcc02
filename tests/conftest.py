"""Shared fixtures: the real data beside the repo, and small models built from the real code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# DEEPLAB_TEST_DATA: another folder holding voc_fixture/, camvid/, ... (a GPU machine's carried copy).
DATA = Path(os.environ["DEEPLAB_TEST_DATA"]) if os.environ.get("DEEPLAB_TEST_DATA") else SHARED / "data"
REFERENCE = SHARED / "reference"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# Without a GPU, Triton's kernels can only run in its CPU interpreter, and Triton reads this setting
# in ways that stick once it is imported (torch.compile's tests import it too): so it is set for the
# whole session, before anything imports triton. On a GPU machine the real compiler runs them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def shared_path(*parts: str) -> Path:
    """A path under ../shared; in CI its absence fails the test instead of skipping it."""
    path = DATA.joinpath(*parts[1:]) if parts[:1] == ("data",) else SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data missing in CI: {path}")
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def voc_fixture() -> Path:
    return shared_path("data", "voc_fixture")


@pytest.fixture
def camvid() -> Path:
    return shared_path("data", "camvid")


def tiny_model(convention: str = "caffe", num_classes: int = 21, seed: int = 0, **kwargs):
    """The real DeepLab-v2 code at one block per stage, width 8, with non-trivial BN statistics."""
    from deeplab_resnet.models import BatchNorm, create_model

    torch.manual_seed(seed)
    model = create_model("deeplab_v2_resnet_tiny", num_classes=num_classes, convention=convention, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    from deeplab_resnet import save_weights

    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_model(), path, source="test")
    return path
