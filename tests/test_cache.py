"""One cache folder rule (:mod:`deeplab_resnet.cache`), and files written with normal permissions."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO, tiny_model
from fixtures_weights import caffe_layers, random_tf_arrays, tf_variables, write_caffemodel

from deeplab_resnet import DeepLabError, save_weights
from deeplab_resnet import cache as cache_module
from deeplab_resnet.atomic import atomic_write
from deeplab_resnet.cache import cache_dir
from deeplab_resnet.crf import kernel_c
from deeplab_resnet.weights import registry
from deeplab_resnet.weights.convert import convert


@pytest.fixture
def fresh(monkeypatch):
    """No XDG_CACHE_HOME, and the once-per-process fallback forgotten before and after."""
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    cache_module._private_temp_root.cache_clear()
    yield
    cache_module._private_temp_root.cache_clear()


def test_xdg_cache_home_when_absolute(tmp_path, monkeypatch, fresh) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("onnx") == tmp_path / "xdg" / "deeplab_resnet" / "onnx"
    assert cache_dir() == tmp_path / "xdg" / "deeplab_resnet"
    # Every cache of the package follows it.
    assert kernel_c.cache_dir() == tmp_path / "xdg" / "deeplab_resnet" / "kernels"
    assert registry.cached_path("voc12") == tmp_path / "xdg" / "deeplab_resnet" / "voc12.safetensors"


@pytest.mark.parametrize("xdg", ["", "relative/cache"])
def test_empty_or_relative_xdg_falls_back_to_home(tmp_path, monkeypatch, fresh, xdg) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("inductor") == tmp_path / ".cache" / "deeplab_resnet" / "inductor"


def test_unusable_home_gives_a_private_temp_folder_and_one_warning(tmp_path, monkeypatch, fresh, capsys) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "does-not-exist"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    expected = tmp_path / f"deeplab_resnet-{os.getuid()}"
    assert cache_dir("onnx") == expected / "onnx"
    assert cache_dir("kernels") == expected / "kernels"
    assert stat.S_IMODE(expected.stat().st_mode) == 0o700
    assert capsys.readouterr().err.count("warning:") == 1


def test_a_temp_folder_open_to_others_is_refused(tmp_path, monkeypatch, fresh) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "does-not-exist"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"deeplab_resnet-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(DeepLabError, match="not a private folder"):
        cache_dir("onnx")


def _unused_uid() -> int:
    for uid in range(54321, 54400):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    pytest.skip("no unused user id found")


CHILD = """
import os, pwd, sys
from deeplab_resnet import cache
from deeplab_resnet.crf import kernel_c
from deeplab_resnet.inference import optimize, runtime
from deeplab_resnet.weights import registry
# Imports first: after dropping root, the interpreter's own files may be unreadable.
uid = int(sys.argv[1])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
print(cache.cache_dir("onnx"))
print(kernel_c.cache_dir())
print(registry.cached_path("voc12").parent)
print(cache.cache_dir("inductor"))
"""


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to change the user id")
def test_no_home_and_no_passwd_entry(tmp_path) -> None:
    """As under ``docker --user 12345``: no HOME, a user id unknown to /etc/passwd."""
    uid = _unused_uid()
    tmp = Path(tempfile.mkdtemp(prefix="cache-test-", dir="/tmp"))  # reachable by the other user
    try:
        tmp.chmod(0o1777)
        env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME")}
        env.update(PYTHONPATH=str(REPO / "src"), TMPDIR=str(tmp))
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(uid)], capture_output=True, text=True, env=env, cwd=tmp, timeout=300
        )
        assert result.returncode == 0, result.stderr
        root = tmp / f"deeplab_resnet-{uid}"
        assert result.stdout.split() == [str(root / "onnx"), str(root / "kernels"), str(root), str(root / "inductor")]
        info = root.stat()
        assert info.st_uid == uid and stat.S_IMODE(info.st_mode) == 0o700
        assert result.stderr.count("warning:") == 1 and str(root) in result.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_weight_files_get_umask_permissions(tmp_path, umask_022) -> None:
    save_weights(tiny_model(), tmp_path / "model.safetensors")
    assert _mode(tmp_path / "model.safetensors") == umask_022
    caffemodel = tmp_path / "tiny.caffemodel"
    write_caffemodel(caffemodel, caffe_layers(random_tf_arrays(tf_variables((1, 1, 1, 1), width=8), seed=2)))
    convert(caffemodel, tmp_path / "as_is.safetensors")  # tensors written as they are
    convert(caffemodel, tmp_path / "new_head.safetensors", not_restore_last=True, num_classes=3)  # a model saved
    assert _mode(tmp_path / "as_is.safetensors") == umask_022
    assert _mode(tmp_path / "new_head.safetensors") == umask_022


def test_atomic_write_fixes_the_mode_of_a_file_the_writer_replaced(tmp_path, umask_022) -> None:
    def replace_with_private_file(tmp: Path) -> None:  # what safetensors' writer does
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.close(fd)

    atomic_write(tmp_path / "out.bin", replace_with_private_file)
    assert _mode(tmp_path / "out.bin") == umask_022 and (tmp_path / "out.bin").read_bytes() == b"data"
