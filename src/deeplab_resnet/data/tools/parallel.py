"""Mapping a function over many files in worker processes, with a progress bar.

Decoding images is CPU-bound and holds the GIL, so the tools use processes, not threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from ...errors import leave_interrupts_to_the_main_process
from ...progress import Progress

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """One worker per CPU core, at most 8 (file reading stops scaling beyond that)."""
    return max(1, min(8, os.cpu_count() or 1))


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
    with Progress(desc, len(items), unit="files", enabled=progress) as bar:
        for result in _map(fn, items, workers):
            bar.update()
            yield result


def _map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    if workers == 1 or len(items) < 2:
        yield from map(fn, items)
        return
    # Chunks amortise the inter-process traffic; ~4 chunks per worker keeps the load balanced.
    chunksize = max(1, min(64, len(items) // (workers * 4)))
    pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=leave_interrupts_to_the_main_process)
    try:
        yield from pool.map(fn, items, chunksize=chunksize)
    finally:  # on Ctrl-C or an error, the files not started yet are dropped, not waited for
        pool.shutdown(wait=True, cancel_futures=True)
