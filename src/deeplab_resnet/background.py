"""Reading ahead and writing behind: a background thread that runs jobs in order, for commands that
stream many files (``deeplab segment`` decodes the next image and encodes and writes the last one's
results while the network runs; PIL, numpy and file writes release the GIL for most of that).

Only the main thread gets Ctrl-C and SIGTERM, so a job is never interrupted half-way: a write in
progress completes (or fails and removes its temporary file, :mod:`.atomic`). On an interrupt or an
error the command cancels the jobs still waiting and waits for the running one
(:meth:`InOrderWorker.close`), so nothing is half-written and no temporary file is left.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from .errors import deferred_interrupts

T = TypeVar("T")
_STOP = object()


class InOrderWorker:
    """One thread running submitted jobs one at a time, in submission order.

    At most ``max_waiting`` jobs wait (:meth:`submit` blocks beyond that), so what they hold in
    memory stays bounded. Once a job fails with an error for which ``halt_on`` is true (a full
    disk: every later write would fail too), the jobs after it are cancelled instead of run.
    ``inline`` runs each job at once in the calling thread instead (the same results, no thread).
    """

    def __init__(
        self, name: str, *, max_waiting: int = 2, halt_on: Callable[[BaseException], bool] = lambda exc: False,
        inline: bool = False,
    ):  # fmt: skip
        self._halt_on = halt_on
        self._halted = False
        self._jobs: queue.Queue = queue.Queue(maxsize=max(1, max_waiting))
        self._thread = None if inline else threading.Thread(target=self._loop, name=name)
        if self._thread is not None:
            self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future:
        """Queue ``fn(*args)``; its :class:`~concurrent.futures.Future` gives the result or the error."""
        future: Future = Future()
        if self._thread is None:
            self._run(future, fn, args)
        else:
            self._jobs.put((future, fn, args))
        return future

    def _run(self, future: Future, fn: Callable, args: tuple) -> None:
        if self._halted:
            future.cancel()
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever asks the future, in the main thread
            self._halted = self._halted or self._halt_on(exc)
            future.set_exception(exc)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            self._run(*job)

    def close(self, *, cancel: bool = False) -> None:
        """Finish the waiting jobs (or, with ``cancel``, cancel them), and wait for the thread.

        The running job always completes: it may be writing a file. Ctrl-C or SIGTERM during the
        wait is held until it is over (a second one stops at once)."""
        if self._thread is None:
            return
        with deferred_interrupts():
            if cancel:
                self._cancel_waiting()
            self._jobs.put(_STOP)
            self._thread.join()

    def _cancel_waiting(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                job[0].cancel()

    def __enter__(self) -> InOrderWorker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)


def read_ahead(worker: InOrderWorker, items: Iterable[T], read: Callable[[T], Any], ahead: int = 1) -> Iterator[Future]:
    """Futures of ``read(item)`` for each item in order, ``ahead`` reads started before they are asked for."""
    started: list[Future] = []
    for item in items:
        started.append(worker.submit(read, item))
        if len(started) > ahead:
            yield started.pop(0)
    yield from started


def failed_job(exc: BaseException) -> Future:
    """A finished :class:`~concurrent.futures.Future` holding ``exc``: a job that failed before it was queued."""
    future: Future = Future()
    future.set_exception(exc)
    return future
