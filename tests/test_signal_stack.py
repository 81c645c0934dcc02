"""The thread's alternate signal stack survives libraries that swap it (OpenVINO's CPU plugin)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from deeplab_resnet.inference.signal_stack import _sigaltstack, _Stack, current_signal_stack, kept_signal_stack

pytestmark = pytest.mark.skipif(os.name != "posix", reason="alternate signal stacks are POSIX")


def test_kept_signal_stack_puts_back_a_stack_swapped_inside():
    before = current_signal_stack()
    assert before is not None
    buffer = ctypes.create_string_buffer(64 * 1024)
    other = _Stack(ctypes.cast(buffer, ctypes.c_void_p), 0, len(buffer))
    with kept_signal_stack():
        assert _sigaltstack()(ctypes.byref(other), None) == 0
        assert current_signal_stack()[:2] == (ctypes.addressof(buffer), len(buffer))
    assert current_signal_stack() == before


def test_two_openvino_models_released_in_creation_order_leave_signals_working(tmp_path):
    pytest.importorskip("openvino")
    # In a fresh interpreter: before the fix, the signal below was handled on a freed stack (SIGSEGV).
    script = textwrap.dedent(f"""
        import gc, os, signal, sys
        sys.path[:0] = [{str(REPO / "src")!r}, {str(REPO / "tests")!r}]
        from conftest import tiny_model
        from deeplab_resnet.inference.runtime import make_backend
        first = make_backend("openvino", tiny_model(), cache_dir={str(tmp_path)!r}, threads=1)
        second = make_backend("openvino", tiny_model(seed=1), cache_dir={str(tmp_path)!r}, threads=1)
        del first; gc.collect()
        del second; gc.collect()
        signal.signal(signal.SIGUSR1, lambda *args: print("handled", flush=True))
        os.kill(os.getpid(), signal.SIGUSR1)
        print("done", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["handled", "done"]
