"""Training checkpoints that lose nothing: atomic writes, keep the last K, exact resume.

A checkpoint is ``SNAPSHOT_DIR/ckpt-STEP.pt`` (``STEP`` = steps completed), a ``torch.save``
of plain tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``. It holds the model and optimizer state, the step, the
resolved config, what is needed to rebuild the model, the RNG states, and the id of the run that
wrote it. It is written to a temporary file and renamed, so a kill at any moment leaves the
previous checkpoint whole (a half-written ``.ckpt-*.tmp`` may remain; it is ignored and cleaned
up on the next save). Keeping the last K deletes only checkpoints of the run saving: a checkpoint
of another run (or of no known run) is never deleted.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_bytes
from ..errors import DeepLabError, add_note

PATTERN = re.compile(r"^ckpt-(\d+)\.pt$")
FORMAT = "deeplab_resnet-checkpoint"
FORMAT_VERSION = 1


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"ckpt-{step:08d}.pt"


def checkpoint_step(path: str | Path) -> int:
    """The steps completed when ``path`` (named by :func:`checkpoint_path`) was written."""
    m = PATTERN.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: not a checkpoint name (ckpt-STEP.pt)")
    return int(m.group(1))


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if PATTERN.match(path.name):
            found.append((checkpoint_step(path), path))
    return sorted(found)


def save_checkpoint(directory: str | Path, step: int, state: dict[str, Any], *, run_id: str, keep: int = 3) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically; then keep only the newest ``keep`` of this run's.

    Args:
        directory: the run's snapshot directory.
        step: steps completed.
        state: what to save (tensors, numbers, strings, lists, dicts).
        run_id: the run saving; recorded in the checkpoint, and only checkpoints with this id are pruned.
        keep: how many of this run's checkpoints to keep (0 or less keeps all).
    """
    path = checkpoint_path(directory, step)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step), **state, "run_id": run_id}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        atomic_write_bytes(path, buffer.getbuffer())
    except OSError as exc:
        earlier = [p for _, p in list_checkpoints(directory) if p != path and checkpoint_run_id(p) == run_id]
        add_note(exc, f"the last complete checkpoint is {earlier[-1]}" if earlier else "no checkpoint was written")
        raise
    if keep > 0:
        own = [p for _, p in list_checkpoints(directory) if p == path or checkpoint_run_id(p) == run_id]
        for old in own[:-keep]:
            old.unlink(missing_ok=True)
    return path


def checkpoint_run_id(path: str | Path) -> str | None:
    """The id of the run that wrote the checkpoint ``path`` (``None``: unreadable, or written
    before runs had ids). Memory-mapped: the tensors are not read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # damaged or foreign: not ours to delete
        return None
    return state.get("run_id") if isinstance(state, dict) else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (safely: ``weights_only``) onto the CPU; a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DeepLabError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise DeepLabError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DeepLabError(f"{path}: not a deeplab_resnet training checkpoint")
    return state


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint in ``directory`` (``None`` if there is none)."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    """The main process's torch RNG states (CPU and every CUDA device), to restore on resume."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
