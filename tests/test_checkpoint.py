"""Checkpoints: atomic, keep-last-K, safe loading; a kill -9 during a write loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.training import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]


def state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "config": {"a": 1}, "rng": ckpt.rng_state()}


def test_save_load_roundtrip_and_keep_last_k(tmp_path):
    for step in (1, 2, 3, 4, 5):
        ckpt.save_checkpoint(tmp_path, step, state(float(step)), run_id="a", keep=3)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4, 5]
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest == tmp_path / "ckpt-00000005.pt"
    loaded = ckpt.load_checkpoint(latest)
    assert loaded["step"] == 5 and torch.equal(loaded["model"]["w"], torch.full((3,), 5.0))
    assert torch.equal(loaded["rng"]["torch"], torch.get_rng_state())


def test_load_rejects_damaged_and_foreign_files(tmp_path):
    bad = tmp_path / "ckpt-00000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DeepLabError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(bad)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(DeepLabError, match="not a deeplab_resnet training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(DeepLabError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    # A child writes checkpoint 1, then starts checkpoint 2 with a torch.save that writes half
    # the bytes and stops; we SIGKILL it there.
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        from deeplab_resnet.training import checkpoint as ckpt
        ckpt.save_checkpoint({str(tmp_path)!r}, 1, {{"model": {{"w": torch.ones(1000)}}}}, run_id="a")
        from deeplab_resnet import atomic
        real_write = atomic.atomic_write
        def slow_write(path, write):
            def half(tmp):
                write(tmp)
                data = open(tmp, "rb").read()
                open(tmp, "wb").write(data[: len(data) // 2])
                print("writing", flush=True)
                time.sleep(60)
            real_write(path, half)
        atomic.atomic_write = slow_write
        ckpt.save_checkpoint({str(tmp_path)!r}, 2, {{"model": {{"w": torch.zeros(1000)}}}}, run_id="a")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert list(tmp_path.glob(".ckpt-00000002.pt.*.tmp")), "the half-written temp file is there"
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]
    loaded = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert torch.equal(loaded["model"]["w"], torch.ones(1000))
    # The next save cleans the leftover up.
    ckpt.save_checkpoint(tmp_path, 2, {"model": {}}, run_id="a")
    assert not list(tmp_path.glob(".ckpt-*.tmp"))


def test_pruning_deletes_only_the_saving_runs_checkpoints(tmp_path):
    # Another run's checkpoints with higher step numbers, and one from before runs had ids.
    for step in (10, 11, 12):
        ckpt.save_checkpoint(tmp_path, step, state(float(step)), run_id="other", keep=0)
    legacy = ckpt.checkpoint_path(tmp_path, 7)
    torch.save({"format": ckpt.FORMAT, "format_version": 1, "step": 7, "model": {}}, legacy)
    foreign = {p: p.read_bytes() for _, p in ckpt.list_checkpoints(tmp_path)}
    for step in (1, 2, 3, 4, 5):
        ckpt.save_checkpoint(tmp_path, step, state(float(step)), run_id="mine", keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5, 7, 10, 11, 12]
    assert all(p.read_bytes() == data for p, data in foreign.items())
    assert ckpt.checkpoint_run_id(ckpt.checkpoint_path(tmp_path, 5)) == "mine"
    assert ckpt.checkpoint_run_id(legacy) is None
