"""The shared progress line: hidden off a terminal or when disabled, drawn in place on one, with the rate."""

from __future__ import annotations

import io

import pytest

from deeplab_resnet import progress as progress_mod
from deeplab_resnet.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """A settable monotonic clock, so rates and redraw throttling are exact."""
    now = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: now[0])
    return now


def test_hidden_when_not_a_terminal_or_disabled(clock):
    pipe = io.StringIO()
    bar = Progress("work", 3, stream=pipe)
    for _ in range(3):
        bar.update()
    bar.close()
    assert not bar.visible and pipe.getvalue() == ""
    quiet = Progress("work", 3, stream=FakeTerminal(), enabled=False)
    quiet.update(3)
    assert not quiet.visible and quiet.stream.getvalue() == ""


def test_terminal_line_has_count_percentage_rate_and_eta(clock):
    term = FakeTerminal()
    bar = Progress("evaluating", 10, unit="images", stream=term)
    clock[0] += 2.0
    bar.update(4)  # 4 images in 2 s: 2 images/s, 6 left: 3 s
    assert term.getvalue() == "\r\033[Kevaluating: 4/10 images (40%), 2 images/s, ETA 3 s"
    clock[0] += 3.0
    bar.update(6)  # the final state ends the line
    assert term.getvalue().endswith("\r\033[Kevaluating: 10/10 images (100%), 2 images/s\n")


def test_redraws_are_throttled_but_the_last_one_is_drawn(clock):
    term = FakeTerminal()
    bar = Progress("x", 100, stream=term, min_interval=0.5)
    for _ in range(99):
        clock[0] += 0.01  # 99 updates within 0.99 s: drawn at 0.01 and 0.51 only
        bar.update()
    assert term.getvalue().count("\r") == 2
    bar.update()
    assert term.getvalue().count("\r") == 3 and term.getvalue().endswith("100/100 items (100%), 101 items/s\n")


def test_resumed_run_counts_only_new_items_in_the_rate_and_scale_shows_megabytes(clock):
    term = FakeTerminal()
    bar = Progress("training", 1000, unit="steps", initial=900, stream=term)
    clock[0] += 10.0
    bar.set(950, note="loss 0.5")
    assert term.getvalue().endswith("training: 950/1000 steps (95%), 5 steps/s, ETA 10 s, loss 0.5")
    term = FakeTerminal()
    download = Progress("downloading w.zip", 3_000_000, unit="MB", scale=1e6, stream=term)
    clock[0] += 2.0
    download.set(1_500_000)
    assert term.getvalue().endswith("downloading w.zip: 1.5/3.0 MB (50%), 0.75 MB/s, ETA 2 s")


def test_write_keeps_the_line_below_messages_and_close_ends_it(clock):
    term = FakeTerminal()
    bar = Progress("training", 10, stream=term)
    clock[0] += 1.0
    bar.update(2)
    bar.write("checkpoint saved")
    lines = term.getvalue().split("\n")
    assert lines[0].endswith("checkpoint saved") and lines[1] == "training: 2/10 items (20%), 2 items/s, ETA 4 s"
    bar.close()
    assert term.getvalue().endswith("\n")


def test_evaluation_callback_sets_total_and_count(clock):
    term = FakeTerminal()
    bar = Progress("evaluating", unit="images", stream=term)
    clock[0] += 1.0
    bar.callback(3, 6, 1.0)
    assert bar.total == 6 and term.getvalue().endswith("evaluating: 3/6 images (50%), 3 images/s, ETA 1 s")
