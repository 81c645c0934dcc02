"""Keeping a thread's alternate signal stack across calls into libraries that swap it.

Python runs its signal handlers (Ctrl-C, SIGTERM, a child's SIGCHLD) on the thread's alternate
signal stack. OpenVINO's CPU plugin (seen with 2026.4) installs a stack of its own on the thread
that compiles a model and puts back the one it found when the model is released. With two compiled
models released in the order they were made, the second release puts back the first model's
stack, which is freed by then: the next signal is handled on freed memory and the process dies
with SIGSEGV instead of, for example, stopping cleanly on Ctrl-C. :func:`kept_signal_stack` saves
the calling thread's stack before such a call and puts it back after.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator

SS_ONSTACK = 1  # the thread is running on its alternate stack now (then it is left alone)


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.lru_cache(maxsize=1)
def _sigaltstack():
    if os.name != "posix":
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.POINTER(_Stack), ctypes.POINTER(_Stack)]
    function.restype = ctypes.c_int
    return function


def current_signal_stack() -> tuple[int, int, int] | None:
    """This thread's alternate signal stack as ``(address, size, flags)``; ``None`` where unknown."""
    sigaltstack = _sigaltstack()
    stack = _Stack()
    if sigaltstack is None or sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack.ss_sp or 0, stack.ss_size, stack.ss_flags


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Restore the calling thread's alternate signal stack, as it was on entry, on exit."""
    sigaltstack = _sigaltstack()
    saved = _Stack()
    if sigaltstack is None or sigaltstack(None, ctypes.byref(saved)) != 0 or saved.ss_flags & SS_ONSTACK:
        yield
        return
    try:
        yield
    finally:
        now = current_signal_stack()
        if now is not None and now != (saved.ss_sp or 0, saved.ss_size, saved.ss_flags):
            sigaltstack(ctypes.byref(saved), None)  # ss_flags is 0 or SS_DISABLE, as sigaltstack wants
