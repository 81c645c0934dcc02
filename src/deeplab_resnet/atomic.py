"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

A write goes to a hidden temporary file beside the target (``.NAME.deeplab-PID-XXXX.tmp``) that is
renamed over the target when complete. The temporary file is removed when the write fails or is
interrupted (Ctrl-C, SIGTERM); one left behind by a killed process (``kill -9``, power loss) is
removed by the next write into that folder, once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    If the body raises (or the process is killed), ``path`` is left as it was and the
    temporary file is removed (or, after a kill, left as an ignorable ``.tmp`` file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.deeplab-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            # mkstemp creates the file 0600, and some writers (safetensors) replace the file with their
            # own 0600 one: give the result the permissions a plain open() would (0666 & ~umask).
            os.chmod(tmp_path, 0o666 & ~_umask())
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
        except OSError as exc:
            if exc.filename is not None:
                raise
            # Writes through an open file report no path: name the file the user asked for.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(umask)
    return umask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write ``data`` atomically. Serialise to memory first and write with this: the writers of
    torch and safetensors abort the process or raise their own errors on a full disk, where a
    Python write raises an ``OSError`` that names the file."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file atomically.

    The header and the data go through Python's own file writes, so a full disk is an ``OSError``
    with its errno (``np.save`` reports a short write without one) and no copy of the array is made.
    """
    array = np.ascontiguousarray(array)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
            f.write(memoryview(array.reshape(-1)).cast("B"))

    atomic_write(path, write)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_TEMP_NAME = re.compile(r"^\..+\.deeplab-(\d+)-[^.]+\.tmp$")
_swept: set[Path] = set()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to another user
        return True
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove this tool's temporary files in ``directory`` left by processes that no longer run.

    Done once per folder and process (the first atomic write there); returns what was removed.
    """
    directory = Path(directory)
    if directory in _swept:
        return []
    _swept.add(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _process_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def work_folder(label: str) -> Iterator[Path]:
    """A temporary folder for intermediate files, removed at the end of the block; the folders of
    killed processes (``kill -9``, a power cut) are removed when the next one is made."""
    parent = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in parent.glob(f"deeplab_{label}_*"):
            match = re.match(rf"deeplab_{re.escape(label)}_(\d+)_", entry.name)
            pid = int(match.group(1)) if match else None
            if pid is not None and pid != os.getpid() and not _process_alive(pid) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"deeplab_{label}_{os.getpid()}_") as folder:
        yield Path(folder)
