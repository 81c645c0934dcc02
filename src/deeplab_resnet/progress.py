"""The one progress line every long-running command shows: ``desc: 12/1449 images (1%), 3.1 images/s, ETA 7 min``.

It goes to stderr, so piping a command's output stays clean, and it hides itself when stderr is
not a terminal (logs and CI would otherwise fill with redraws) or when the user asked for quiet.
Commands print their own summary lines at the end, so nothing is lost when it is hidden.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """A progress line redrawn in place, at most every ``min_interval`` seconds.

    Args:
        desc: what is being done, shown in front of the count.
        total: items expected (``None``: unknown, no percentage or ETA).
        unit: what an item is, e.g. ``"images"``, ``"steps"``, ``"MB"``.
        enabled: ``False`` hides it (``--quiet``, ``--no-progress``, non-zero ranks).
        initial: items already done before this run (a resumed training run); not counted in the rate.
        scale: items per displayed unit (``1e6`` shows a byte count in MB).
        stream: where to draw (stderr); shown only if it is a terminal.
        min_interval: seconds between redraws (the final state is always drawn).
    """

    def __init__(
        self, desc: str, total: int | None = None, *, unit: str = "items", enabled: bool = True, initial: int = 0,
        scale: float = 1.0, stream: TextIO | None = None, min_interval: float = 0.1,
    ) -> None:  # fmt: skip
        self.stream = sys.stderr if stream is None else stream
        self.desc, self.total, self.unit, self.scale = desc, total, unit, scale
        self.visible = enabled and self.stream.isatty()
        self.done = self.initial = initial
        self.note = ""
        self.min_interval = min_interval
        self.start = time.monotonic()
        self._last_draw = -float("inf")
        self._open = False  # a drawn line not yet ended by a newline

    def _amount(self, value: float) -> str:
        return f"{value / self.scale:.1f}" if self.scale != 1.0 else str(int(value))

    def text(self) -> str:
        """The line as it is drawn now."""
        elapsed = time.monotonic() - self.start
        rate = (self.done - self.initial) / self.scale / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self._amount(self.done)}"]
        if self.total:
            parts[0] += f"/{self._amount(self.total)} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / self.scale / rate)}")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def set(self, done: int, note: str | None = None) -> None:
        """``done`` items so far (``note``: extra text after the rate, e.g. the current loss)."""
        self.done = done
        if note is not None:
            self.note = note
        if not self.visible:
            return
        finished = self.total is not None and done >= self.total
        now = time.monotonic()
        if finished or now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self.stream.write("\r\033[K" + self.text() + ("\n" if finished else ""))
            self.stream.flush()
            self._open = not finished

    def update(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more items done."""
        self.set(self.done + n, note)

    def callback(self, done: int, total: int, elapsed: float) -> None:
        """Shaped as the ``progress(done, total, seconds)`` callback the evaluation loops call."""
        self.total = total
        self.set(done)

    def write(self, message: str) -> None:
        """Print a line to the stream without tearing the progress line (it is redrawn below)."""
        if self._open:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        if self._open:
            self.stream.write(self.text())
        self.stream.flush()

    def close(self) -> None:
        """End the line (a run stopped before ``total`` leaves its last state on screen)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
