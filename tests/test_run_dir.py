"""A run folder belongs to one run: a new run refuses another run's folder unless --resume or
--overwrite (which moves the old run aside, never deletes), and pruning keeps to its own run."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.training import checkpoint as ckpt
from deeplab_resnet.training.run_dir import claim_run_dir, recorded_run_id


def run_cli(data: Path, run_dir: Path, *extra: str) -> int:
    from deeplab_resnet.cli import main

    return main([
        "train", "--data-dir", str(data), "--data-list", str(data / "list_train.txt"),
        "--model", "deeplab_v2_resnet_tiny", "--input-size", "17,17", "--batch-size", "1", "--num-steps", "2",
        "--checkpoint-every", "1", "--num-workers", "0", "--snapshot-dir", str(run_dir), "--no-progress",
        "--no-tensorboard", "--no-check-data", *extra,
    ])  # fmt: skip


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_new_run_refuses_another_runs_folder_and_changes_nothing(tmp_path, voc_fixture, capsys):
    run = tmp_path / "run"
    assert run_cli(voc_fixture, run) == 0
    before = snapshot(run)
    assert {"run.json", "config.json", "model.safetensors", "metrics.jsonl", "ckpt-00000002.pt"} <= set(before)
    capsys.readouterr()
    assert run_cli(voc_fixture, run, "--learning-rate", "1e-3") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--snapshot-dir {run} holds another run" in err
    assert "--resume" in err and "--overwrite" in err
    assert snapshot(run) == before  # every old file byte-identical, nothing added
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_overwrite_moves_the_old_run_aside_byte_identical(tmp_path, voc_fixture, capsys):
    run = tmp_path / "run"
    assert run_cli(voc_fixture, run) == 0
    before, old_id = snapshot(run), recorded_run_id(run)
    assert run_cli(voc_fixture, run, "--overwrite", "--num-steps", "1") == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before
    assert f"is now in {aside[0]}" in capsys.readouterr().err
    new_id = recorded_run_id(run)
    assert new_id != old_id
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [1]  # only the new run's checkpoint
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(run))["run_id"] == new_id


def test_resume_continues_the_folders_own_run(tmp_path, voc_fixture):
    run = tmp_path / "run"
    assert run_cli(voc_fixture, run, "--num-steps", "1") == 0
    run_id = recorded_run_id(run)
    (run / "model.safetensors").unlink()
    assert run_cli(voc_fixture, run, "--num-steps", "1", "--resume") == 0
    assert recorded_run_id(run) == run_id and (run / "model.safetensors").is_file()


def test_claim_rules(tmp_path):
    fresh = tmp_path / "fresh"
    assert claim_run_dir(fresh, "a", resuming=False, overwrite=False) is None
    assert recorded_run_id(fresh) == "a"
    with pytest.raises(DeepLabError, match="holds another run"):
        claim_run_dir(fresh, "b", resuming=False, overwrite=False)
    with pytest.raises(DeepLabError, match="holds another run"):  # resuming someone else's checkpoint here
        claim_run_dir(fresh, "b", resuming=True, overwrite=False)
    assert claim_run_dir(fresh, "a", resuming=True, overwrite=False) is None  # its own run
    other = tmp_path / "notes"
    other.mkdir()
    (other / "README.txt").write_text("not a run file")
    assert claim_run_dir(other, "c", resuming=False, overwrite=False) is None  # unrelated files are fine
    assert (other / "README.txt").read_text() == "not a run file"


def test_resume_ignores_settings_this_version_no_longer_has(tmp_path, voc_fixture, capsys):
    import torch

    from deeplab_resnet.training import checkpoint as ckpt

    run = tmp_path / "run"
    assert run_cli(voc_fixture, run, "--num-steps", "1") == 0
    path = ckpt.latest_checkpoint(run)
    state = torch.load(path, weights_only=True)
    state["config"]["old_setting"] = 3  # as written by an older version
    torch.save(state, path)
    capsys.readouterr()
    assert run_cli(voc_fixture, run, "--resume") == 0
    err = capsys.readouterr().err
    assert "old_setting = 3 is no longer known; ignored" in err and "Traceback" not in err
    assert "resuming from" in err and (run / "model.safetensors").is_file()
