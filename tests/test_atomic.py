"""Atomic writes keep the old file on failure and create files with ordinary permissions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from conftest import REPO

from deeplab_resnet.atomic import atomic_write, atomic_write_text


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def _all_modules() -> list[str]:
    package = REPO / "src" / "deeplab_resnet"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [n for n in names if n and n != "__main__"]  # __main__ runs the CLI


def test_every_module_imports():
    # one interpreter for all (fast); circles are ruled out statically by test_import_graph.py
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    code = f"import importlib\nfor m in {_all_modules()!r}:\n    importlib.import_module('deeplab_resnet.' + m)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-500:]


@pytest.mark.slow
@pytest.mark.parametrize("module", _all_modules())
def test_each_module_imports_first(module):
    # no circular import whichever module a user imports first (an interpreter each: slow)
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", f"import deeplab_resnet.{module}"], env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-500:]


def test_save_npy_writes_exactly_the_given_path(tmp_path):
    import numpy as np

    from deeplab_resnet.atomic import save_npy

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_npy(tmp_path / "x.bin", array)  # np.save(path) would have written x.bin.npy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    np.testing.assert_array_equal(np.load(tmp_path / "x.bin"), array)


def test_a_work_folder_is_removed_and_so_are_those_of_killed_processes(tmp_path, monkeypatch):
    import tempfile

    from deeplab_resnet.atomic import work_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    stale = tmp_path / f"deeplab_quantize_{gone.pid}_x_y"
    (stale / "inner").mkdir(parents=True)
    alive = tmp_path / f"deeplab_quantize_{os.getppid()}_abc"  # a running process's: kept
    alive.mkdir()
    other = tmp_path / "deeplab_quantize_notapid_abc"
    other.mkdir()
    with work_folder("quantize") as folder:
        (folder / "folded.onnx").write_bytes(b"x")
        assert folder.parent == tmp_path and folder.name.startswith(f"deeplab_quantize_{os.getpid()}_")
        assert not stale.exists() and alive.exists() and other.exists()
    assert not folder.exists()
