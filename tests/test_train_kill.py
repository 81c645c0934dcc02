"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deeplab_resnet.training import checkpoint as ckpt
from deeplab_resnet.weights import read_weights

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def command(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "deeplab_resnet", "train", "--data-dir", str(data),
        "--data-list", str(data / "list_train.txt"), "--model", "deeplab_v2_resnet_tiny", "--input-size", "33,33",
        "--batch-size", "2", "--num-steps", "8", "--checkpoint-every", "1", "--keep-checkpoints", "2",
        "--random-scale", "--random-mirror", "--learning-rate", "1e-3", "--num-workers", "1",
        "--snapshot-dir", str(run_dir), "--no-progress", "--no-tensorboard", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path, voc_fixture):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(command(voc_fixture, full), env=ENV, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(command(voc_fixture, killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 600
        while not (killed / "ckpt-00000004.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the worker process dies with its parent
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists()
    done = ckpt.list_checkpoints(killed)
    assert done and done[-1][0] < 8
    ckpt.load_checkpoint(done[-1][1])  # whatever moment it died at, the newest checkpoint is whole
    resumed = subprocess.run(
        command(voc_fixture, killed, "--resume"), env=ENV, capture_output=True, text=True, timeout=600
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {done[-1][1]} at step {done[-1][0]}" in resumed.stderr
    a, _ = read_weights(full / "model.safetensors")
    b, _ = read_weights(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
