"""A run folder belongs to one run.

A fresh run refuses a ``--snapshot-dir`` that holds another run's files, unless ``--overwrite``,
which moves the old run aside to ``DIR.old-YYYYmmdd-HHMMSS`` (nothing is deleted). ``--resume``
continues the run recorded in the folder. The owner's id is kept in ``DIR/run.json`` and in
each checkpoint, so that keeping the last K checkpoints never deletes another run's.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DeepLabError
from .checkpoint import PATTERN

RUN_FILE = "run.json"
# What a run writes into its folder (besides its checkpoints).
RUN_FILES = (RUN_FILE, "config.json", "model.safetensors", "metrics.jsonl", "previews", "tensorboard")


def new_run_id() -> str:
    return uuid.uuid4().hex


def run_files(directory: Path) -> list[str]:
    """The names of the run files in ``directory`` (empty if none, or if it does not exist)."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name in RUN_FILES or PATTERN.match(p.name))


def recorded_run_id(directory: Path) -> str | None:
    """The id in ``directory/run.json`` (``None``: no such file, or not readable)."""
    try:
        return str(json.loads((directory / RUN_FILE).read_text(encoding="utf-8"))["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def aside_path(directory: Path) -> Path:
    """A free ``DIR.old-YYYYmmdd-HHMMSS`` (with ``-2``, ``-3``... if taken) next to ``directory``."""
    directory = directory.resolve()  # "." or "runs/" have no usable name of their own
    base = directory.with_name(f"{directory.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_run_dir(directory: str | Path, run_id: str, *, resuming: bool, overwrite: bool) -> bool:
    """Whether ``directory`` holds another run's files, which ``overwrite`` will move aside;
    without ``overwrite`` that is an error naming ``--resume``/``--overwrite``. Changes nothing.

    When ``resuming``, files of the same run, or of a run without a recorded id (written before
    runs had ids), are the run's own.
    """
    directory = Path(directory)
    present = run_files(directory)
    foreign = bool(present) and not (resuming and recorded_run_id(directory) in (None, run_id))
    if foreign and not overwrite:
        shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
        raise DeepLabError(
            f"--snapshot-dir {directory} holds another run ({shown}): continue it with --resume, move it "
            f"aside with --overwrite (to {directory.resolve().name}.old-DATE-TIME, nothing is deleted), or choose "
            "another --snapshot-dir"
        )
    return foreign


def claim_run_dir(directory: str | Path, run_id: str, *, resuming: bool, overwrite: bool) -> Path | None:
    """Make ``directory`` the folder of run ``run_id`` (see :func:`check_run_dir`); returns where
    another run's files were moved, if they were."""
    directory = Path(directory)
    moved = None
    if check_run_dir(directory, run_id, resuming=resuming, overwrite=overwrite):
        moved = aside_path(directory)
        directory.rename(moved)
    directory.mkdir(parents=True, exist_ok=True)
    if recorded_run_id(directory) != run_id:
        atomic_write_text(directory / RUN_FILE, json.dumps({"run_id": run_id}) + "\n")
    return moved
