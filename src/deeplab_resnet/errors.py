"""How failures reach the user: one exception type for bad input, the exit codes, and one line per fault.

Code at the edges (file readers, argument checks) raises :class:`DeepLabError` with a sentence
that says what is wrong and what to do; the CLI prints it on one line and exits with
:data:`EXIT_USAGE`. Operating-system faults (disk full, permission denied, a path that is a
directory) are turned into one line by :func:`describe_os_error` and exit with :data:`EXIT_IO`.
SIGTERM is handled like Ctrl-C (:func:`install_signal_handlers`), so clean-up code runs for both.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import signal
import threading
from collections.abc import Iterator

EXIT_OK = 0
EXIT_PARTIAL = 1  # the command finished, but some inputs were skipped (each said why on stderr)
EXIT_USAGE = 2  # bad usage or bad input (a file, an argument, a weight file): nothing useful was done
EXIT_IO = 3  # the system refused a read or write (disk full, permission, not a directory)
EXIT_SIGINT = 130  # interrupted by Ctrl-C (128 + SIGINT)
EXIT_SIGTERM = 143  # stopped by SIGTERM (128 + SIGTERM), as sent by timeout, docker, Kubernetes, Slurm


class DeepLabError(Exception):
    """An error caused by the user's input (a file, an argument), with a readable message."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's KeyboardInterrupt, so that every
    ``finally`` and ``except KeyboardInterrupt`` clean-up runs for it too."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (libraries such as OpenVINO write whole reports)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def missing_extra(exc: ImportError, message: str) -> BaseException:
    """What to raise when an optional package fails to import: a one-line :class:`DeepLabError`
    saying how to install it, unless Ctrl-C or SIGTERM arrived while the package was loading (a
    C extension then reports the interrupt as a failed import): that interrupt, as itself."""
    cause = exc.__cause__ or exc.__context__
    return cause if isinstance(cause, KeyboardInterrupt) else DeepLabError(message)


_REASONS = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "it already exists",
    errno.EFBIG: "file too large",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` means that no more can be written anywhere on that device."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def add_note(exc: BaseException, note: str) -> None:
    """Attach ``note`` to ``exc`` (``BaseException.add_note`` of Python 3.11, on every version)."""
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]


def describe_os_error(exc: OSError) -> str:
    """One line naming the path and the reason, e.g. ``out/a.png: no space left on the device (disk full)``,
    followed by the notes added on the way up (what is still complete)."""
    reason = _REASONS.get(exc.errno) or exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    line = f"{' -> '.join(str(p) for p in paths)}: {reason}" if paths else reason
    return "; ".join([line, *getattr(exc, "__notes__", [])])


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated()


def leave_interrupts_to_the_main_process() -> None:
    """In a worker process: ignore Ctrl-C, which a terminal sends to every process of the group.
    The main process gets it too, stops the pool and says so once (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT blocked in this thread) while worker processes may start inside.

    A process started here inherits the block, so a Ctrl-C that reaches the whole process group
    while a worker is still importing cannot end it with a traceback of its own (its initializer
    then ignores Ctrl-C for good); this process gets the held Ctrl-C when the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def install_signal_handlers() -> None:
    """Turn SIGTERM into :class:`Terminated` in the main thread (a no-op elsewhere)."""
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave the process's handlers alone
        return
    # Python restores the default handlers while it shuts down, so a signal in those last moments
    # killed a finished run (status -15 or -2 instead of its own); by then every file is written.
    atexit.register(_ignore_late_signals)


def _ignore_late_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done (a second one stops at once).

    For work that must not stop half-way, such as an optimizer step: the interrupt is raised
    right after the block, where the state is consistent and can be saved.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame) -> None:
        if pending:  # asked twice: stop now
            _raise_for(signum)
        pending.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if pending:
        _raise_for(pending[0])


def _raise_for(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
