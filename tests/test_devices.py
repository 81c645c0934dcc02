"""One device rule and one peak-memory helper for every command."""

from __future__ import annotations

import resource

import pytest
import torch

from deeplab_resnet.devices import peak_memory_mb, reset_peak_memory, resolve_device
from deeplab_resnet.errors import DeepLabError


def test_auto_and_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu", local_rank=3) == "cpu"


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu", "CPU", ""])
def test_unknown_devices_are_one_line_naming_the_option(name):
    with pytest.raises(DeepLabError, match=r"^--weird-option must be auto, cpu, cuda, cuda:N or mps, got ") as exc:
        resolve_device(name, option="--weird-option")
    assert "\n" not in str(exc.value)


def test_cuda_rules(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeepLabError, match="--device cuda: CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda", local_rank=1) == "cuda:1"  # torchrun: one GPU per process
    assert resolve_device("cuda:0", local_rank=1) == "cuda:0"  # an explicit index is kept
    with pytest.raises(DeepLabError, match="--device cuda:2: this machine has 2 CUDA device"):
        resolve_device("cuda:2")


def test_commands_share_the_rule():
    from deeplab_resnet.commands import common

    assert common.resolve_device is resolve_device


def test_cpu_peak_memory_is_the_process_peak_rss_in_mib():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    reset_peak_memory("cpu")  # nothing to reset on the CPU: must not fail or change the peak
    value = peak_memory_mb("cpu")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert before <= value <= after and value > 10  # a Python process with torch loaded
    assert peak_memory_mb(torch.device("cpu")) >= value
