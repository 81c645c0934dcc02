"""Mapping a function over many files in worker processes, with a progress bar.

Decoding images is CPU-bound and holds the GIL, so the tools use processes, not threads.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """One worker per CPU core, at most 8 (file reading stops scaling beyond that)."""
    return max(1, min(8, os.cpu_count() or 1))


class Progress:
    """A dependency-free progress line on stderr: redrawn in place on a terminal, every 10% otherwise.

    Args:
        total: number of items expected.
        desc: what is being done, printed in front of the count.
        enabled: False silences it (tests, ``--quiet``).
    """

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled and total > 0
        self.done = 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._next_report = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        fraction = self.done / self.total
        if self.tty or fraction >= self._next_report or self.done == self.total:
            self._next_report = fraction + 0.1
            elapsed = time.monotonic() - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            line = f"{self.desc}: {self.done}/{self.total} ({100 * fraction:.0f}%) {rate:.1f}/s eta {eta:.0f}s"
            sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
            if self.tty and self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int | None = None,
    desc: str = "working",
    progress: bool = True,
) -> Iterator[R]:
    """``map(fn, items)`` in ``workers`` processes (in this process when 1), results in order.

    Args:
        fn: a module-level function (it is pickled to the workers).
        items: the inputs.
        workers: process count; None = :func:`default_workers`; 1 = no subprocesses.
        desc: progress-bar label.
        progress: show the progress bar on stderr.
    """
    workers = default_workers() if workers is None else max(1, workers)
    bar = Progress(len(items), desc, progress)
    if workers == 1 or len(items) < 2:
        results: Iterable[R] = map(fn, items)
        for result in results:
            bar.update()
            yield result
        return
    from concurrent.futures import ProcessPoolExecutor

    # Chunks amortise the inter-process traffic; ~4 chunks per worker keeps the load balanced.
    chunksize = max(1, min(64, len(items) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
        for result in pool.map(fn, items, chunksize=chunksize):
            bar.update()
            yield result
