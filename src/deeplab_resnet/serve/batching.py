"""One worker thread runs the network for every request; requests that can share a forward pass do.

The web server's event loop must stay free to accept uploads and answer quickly (a full queue is
refused at once), so the network runs here, in a thread of its own. Jobs wait in a bounded queue;
the worker takes the oldest, then waits up to ``wait_s`` for more jobs with the same key (image size
and options), up to ``max_batch``, and runs them as one batch. Jobs with other keys keep their place.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """Every place in the queue is taken: the caller should come back later."""


@dataclass
class Job:
    """One request's work: ``payload`` for the batch function, ``future`` for its result."""

    key: Hashable
    payload: Any
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None
    finished_at: float | None = None
    batch_size: int = 0


# Runs payloads that share a key as one batch; returns one result per payload, in order.
BatchFunction = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class BatchQueue:
    """A bounded queue of :class:`Job` served by one worker thread in batches of equal keys."""

    def __init__(self, run_batch: BatchFunction, *, max_queue: int, max_batch: int, wait_s: float):
        self.run_batch = run_batch
        self.max_queue = max_queue
        self.max_batch = max(1, max_batch)
        self.wait_s = max(0.0, wait_s)
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches_run = 0

    @property
    def pending(self) -> int:
        """Jobs waiting for the worker (not counting the batch it is running)."""
        with self._cond:
            self._drop_cancelled()
            return len(self._pending)

    def check_room(self) -> None:
        """:class:`QueueFull` if a job submitted now would be refused."""
        with self._cond:
            self._check_room()

    def _check_room(self) -> None:
        if self._closed:
            raise QueueFull("the server is shutting down")
        self._drop_cancelled()
        if len(self._pending) >= self.max_queue:
            raise QueueFull(f"{len(self._pending)} requests are already waiting")

    def _drop_cancelled(self) -> None:
        # Requests whose clients went away give their places back now, not when the worker reaches them.
        self._pending = collections.deque(job for job in self._pending if not job.future.cancelled())

    def submit(self, key: Hashable, payload: Any) -> Job:
        """Queue one job; :class:`QueueFull` at once if ``max_queue`` jobs are already waiting."""
        job = Job(key, payload)
        with self._cond:
            self._check_room()
            self._pending.append(job)
            self._start_worker()
            self._cond.notify_all()
        return job

    def close(self, wait_s: float = 10.0) -> bool:
        """Stop the worker after the batch it is running; jobs still waiting fail with :class:`QueueFull`.

        Waits up to ``wait_s`` for that batch; returns whether the worker has stopped (a forward
        pass cannot be interrupted). Closing twice is harmless."""
        with self._cond:
            self._closed = True
            left, self._pending = list(self._pending), collections.deque()
            self._cond.notify_all()
        for job in left:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # its client went away meanwhile
                job.future.set_exception(QueueFull("the server is shutting down"))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=wait_s)
            return not self._thread.is_alive()
        return True

    def _start_worker(self) -> None:
        # Started on first use (under the lock), so an app is usable without its lifespan events running.
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="deeplab-serve-network", daemon=True)
            self._thread.start()

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            batch = [self._pending.popleft()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                batch += self._take_same_key(batch[0].key, self.max_batch - len(batch))
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return batch

    def _take_same_key(self, key: Hashable, limit: int) -> list[Job]:
        taken = [job for job in self._pending if job.key == key][:limit]
        for job in taken:
            self._pending.remove(job)
        return taken

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        # A request whose client went away was cancelled while waiting: it is dropped, not run.
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        started = time.perf_counter()
        for job in batch:
            job.started_at, job.batch_size = started, len(batch)
        try:
            results = list(self.run_batch(batch[0].key, [job.payload for job in batch]))
        except Exception as exc:  # every request of the batch hears of the failure
            for job in batch:
                job.finished_at = time.perf_counter()
                job.future.set_exception(exc)
            return
        finally:
            self.batches_run += 1
        for job, result in zip(batch, results):
            job.finished_at = time.perf_counter()
            job.future.set_result(result)
