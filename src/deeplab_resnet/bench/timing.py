"""Timing and reporting: synchronised timers, interleaved repeats, result rows, the table and the JSON.

Timings are taken after warm-up, over repeats *interleaved* across the cases being compared (so
a noisy, shared machine slows all of them alike), with CUDA events on GPU and ``perf_counter`` on
CPU; a :class:`Result` gives the median, the spread (min..max), items/s and FLOP/s.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_text


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes: CUDA events on GPU, ``perf_counter`` on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(
    cases: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1, device: torch.device | str = "cpu",
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:  # fmt: skip
    """Time every case ``repeats`` times after ``warmup`` calls, interleaving the cases.

    Repeat ``r`` runs case A, B, C, ... once each (the order rotates every repeat), so slow
    phases of a shared machine hit all cases alike. Returns the seconds per call per case.
    """
    device = torch.device(device)
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            cases[name]()
        synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            times[name].append(time_once(cases[name], device))
            if on_progress:
                on_progress(f"repeat {r + 1}/{repeats} {name}: {times[name][-1] * 1000:.1f} ms")
    return times


@dataclass
class Result:
    """One row of the benchmark table."""

    name: str
    times_s: list[float]
    items: int = 1  # images (or samples) per call
    flops: int | None = None  # per call
    peak_memory_mb: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s) if self.times_s else math.nan

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.times_s), max(self.times_s)) if self.times_s else (math.nan, math.nan)

    @property
    def items_per_s(self) -> float:
        return self.items / self.median_s if self.times_s else math.nan

    @property
    def tflops(self) -> float | None:
        return self.flops / self.median_s / 1e12 if self.flops and self.times_s else None

    def to_dict(self, peak_tflops: float | None = None) -> dict:
        d = asdict(self)
        d.update(
            median_s=self.median_s, min_s=self.spread[0], max_s=self.spread[1], items_per_s=self.items_per_s,
            achieved_tflops=self.tflops,
            fraction_of_peak=self.tflops / peak_tflops if self.tflops is not None and peak_tflops else None,
        )  # fmt: skip
        return d


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


def format_table(results: Sequence[Result], peak_tflops: float | None = None) -> str:
    """A fixed-width table: median, spread, items/s, TFLOP/s, fraction of peak, peak memory."""
    header = ["case", "median ms", "min..max ms", "items/s", "TFLOP/s", "of peak", "peak MB", "note"]
    rows = [header]
    for r in results:
        if not r.times_s:
            rows.append([r.name, "-", "-", "-", "-", "-", "-", r.note])
            continue
        lo, hi = r.spread
        tf = r.tflops
        rows.append([
            r.name, _fmt_ms(r.median_s), f"{_fmt_ms(lo)}..{_fmt_ms(hi)}", f"{r.items_per_s:.3g}",
            f"{tf:.3g}" if tf is not None else "-",
            f"{tf / peak_tflops:.1%}" if tf is not None and peak_tflops else "-",
            f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb is not None else "-", r.note,
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def machine_info(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "device": str(device), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def report_main(parse_args: Callable[[Sequence[str] | None], Any], run: Callable[[Any], dict],
                argv: Sequence[str] | None = None) -> int:  # fmt: skip
    """A benchmark script's ``main``: parse, run, and write the report to ``--json`` atomically."""
    args = parse_args(argv)
    report = run(args)
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def write_json(
    path: str | Path, results: Sequence[Result], *, peak_tflops: float | None, info: dict, extra: dict | None = None
) -> None:
    """The results as JSON (with ``extra``'s keys beside them), written atomically."""
    payload = {"machine": info, "peak_tflops": peak_tflops, "results": [r.to_dict(peak_tflops) for r in results]}
    payload.update(extra or {})
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
