"""The CPU engines side by side: speed (interleaved repeats) and accuracy against eager float32.

What ``benchmarks/cpu_engines.py`` runs: every installed engine (:data:`ENGINES`) on one model, timed
at one size and batch 1 after warm-up with repeats interleaved (:func:`.timing.time_interleaved`),
each path's accuracy measured on other images at their own (protocol) size: relative L2 of the
logits for the float32 paths, argmax agreement (pooled, and the worst image) for reduced precision,
with the bars of :func:`~deeplab_resnet.inference.agreement.meets_target`. :func:`target_lines`
says whether the speed targets are met and by how much they are missed; :func:`layer_profile` says
where the fastest path spends its time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ..inference import cpu_features
from ..inference.agreement import agreement_over, meets_target
from ..inference.openvino_backend import OpenVinoBackend
from ..inference.optimize import REFERENCE, InferenceOptions
from ..inference.runtime import installed, make_backend

# name -> (backend name, torch options, precision)
ENGINES: dict[str, tuple[str, InferenceOptions | None, str]] = {
    "eager-fp32": ("torch", REFERENCE, "float32"),
    "torch-fold+cl": ("torch", InferenceOptions(fold_bn=True, channels_last=True), "float32"),
    "torch-compile": ("torch", InferenceOptions(fold_bn=True, channels_last=True, compile=True), "float32"),
    "onnxruntime": ("onnxruntime", None, "float32"),
    "openvino": ("openvino", None, "float32"),
    "onnxruntime-int8": ("onnxruntime-int8", None, "int8"),
    "openvino-int8": ("openvino-int8", None, "int8"),
    "openvino-bf16": ("openvino-bf16", None, "bfloat16"),
    "torch-bf16": ("torch-bf16", None, "bfloat16"),
}
# Targets over eager float32 at batch 1: float32-exact paths, and reduced precision per CPU class.
FP32_TARGET = 2.0
REDUCED_TARGET = {"bf16": 5.0, "avx512": 3.0, "avx2": 3.0, "baseline": 3.0}


def available_engines(names: Sequence[str] | None = None) -> list[str]:
    """The engines asked for (default: all) whose packages are installed."""
    needs = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
    chosen = list(names) if names else list(ENGINES)
    return [n for n in chosen if all(installed(m) for key, m in needs.items() if n.startswith(key))]


@dataclass
class EngineRow:
    name: str
    precision: str
    times_s: list[float] = field(default_factory=list)
    accuracy: dict = field(default_factory=dict)
    runs_as: str = ""  # what OpenVINO actually ran when it differs from the request (bf16 on a CPU without it)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def build_engines(
    model, names: Sequence[str], *, threads: int, cache_dir: Path, int8_model: Path | None
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Each engine as a callable (int8 ones run ``int8_model``, made by :func:`.quantize.quantize_model`)."""
    built = {}
    for name in names:
        backend, options, _ = ENGINES[name]
        onnx_path = int8_model if backend.endswith("int8") else None
        if options is not None and options.compile:  # inductor's code cache beside the exports
            options = dataclasses.replace(options, compile_cache_dir=str(Path(cache_dir) / "inductor"))
        built[name] = make_backend(
            backend, model, options=options or REFERENCE, cache_dir=cache_dir, threads=threads, onnx_path=onnx_path
        )
    return built


def measure_accuracy(
    model, engines: dict, inputs: Sequence[torch.Tensor], image_sizes: Sequence[tuple[int, int]] | None = None
) -> dict[str, dict]:  # fmt: skip
    """Per engine: worst rel-L2 and pooled / worst-image argmax agreement with eager float32 over
    ``inputs`` (over the images' own pixels when ``image_sizes`` says where they are in them)."""
    return agreement_over(model, engines, inputs, image_sizes)


def accuracy_text(row: EngineRow) -> str:
    """The accuracy column: rel-L2 for float32 paths, agreement (and the worst image) otherwise."""
    if not row.accuracy:
        return "-"
    ok = "" if meets_target(row.accuracy, row.precision) else " BELOW BAR"
    if row.precision == "float32":
        return f"rel-L2 {row.accuracy['rel_l2']:.1e}{ok}"
    a = row.accuracy
    return f"argmax {a['argmax_agreement']:.2%} (worst image {a['worst_image_agreement']:.2%}){ok}"


def format_rows(rows: Sequence[EngineRow]) -> str:
    base = next(r for r in rows if r.name == "eager-fp32").median_s
    lines = [f"{'engine':<18}{'median s':>10}{'min..max s':>16}{'x eager':>9}  accuracy vs eager fp32"]
    for r in rows:
        spread = f"{min(r.times_s):.3f}..{max(r.times_s):.3f}"
        note = f"  (runs as {r.runs_as})" if r.runs_as else ""
        lines.append(f"{r.name:<18}{r.median_s:>10.3f}{spread:>16}{base / r.median_s:>9.2f}  {accuracy_text(r)}{note}")
    return "\n".join(lines)


def runs_as(engine, precision: str) -> str:
    """``f32`` when OpenVINO ran a bf16 request in f32 (a CPU without bf16), else empty."""
    effective = getattr(engine, "effective_precision", "")
    return effective if precision == "bfloat16" and effective and effective != "bf16" else ""


def best_within_bar(rows: Sequence[EngineRow], precisions: tuple[str, ...]) -> EngineRow | None:
    eligible = [
        r for r in rows
        if r.precision in precisions and not r.runs_as and r.accuracy and meets_target(r.accuracy, r.precision)
    ]  # fmt: skip
    return min(eligible, key=lambda r: r.median_s, default=None)


def target_lines(rows: Sequence[EngineRow], feature_class: str) -> tuple[list[str], list[EngineRow]]:
    """``target met/missed`` lines, and the best row of each missed target (to profile)."""
    base = next(r for r in rows if r.name == "eager-fp32").median_s
    lines, missed = [], []
    reduced = REDUCED_TARGET[feature_class]
    for label, precisions, target in (
        ("fp32-exact", ("float32",), FP32_TARGET),
        (f"reduced precision ({feature_class} CPU)", ("float32", "int8", "bfloat16"), reduced),
    ):
        best = best_within_bar([r for r in rows if r.name != "eager-fp32"], precisions)
        if best is None:
            lines.append(f"{label} target {target:g}x: no path within its accuracy bar")
            continue
        ratio = base / best.median_s
        if ratio >= target:
            lines.append(f"{label} target {target:g}x: met by {best.name} at {ratio:.2f}x")
        else:
            lines.append(
                f"{label} target {target:g}x: MISSED, best {best.name} at {ratio:.2f}x "
                f"({target / ratio:.2f}x short: {best.median_s * 1000:.0f} ms, needs {base / target * 1000:.0f} ms)"
            )
            missed.append(best)
    if feature_class != "bf16":
        lines.append("(the 5x reduced-precision target applies to CPUs with AMX/AVX512-BF16: not measurable here)")
    return lines, missed


def fp32_bound_line(
    flops: float, *, eager_s: float, best_s: float, cores: int, mhz: float, flags: frozenset[str] | None = None
) -> str:  # fmt: skip
    """Whether the fp32 target is within reach of this CPU at all: the rate it needs against the peak.

    An fp32-exact path does the model's ``flops`` (2 x conv MACs); doing them in ``eager_s / FP32_TARGET``
    needs a rate that may be above ``cores x FLOP/cycle x clock``, whatever the engine.
    """
    needed_s = eager_s / FP32_TARGET
    needed = flops / needed_s / 1e9
    head = f"fp32 bound: {flops / 1e9:.0f} GFLOP per image; {FP32_TARGET:g}x eager ({needed_s * 1000:.0f} ms) needs {needed:.0f} GFLOP/s"
    if not mhz:
        return head + "; this CPU's fp32 peak is not known: clock unknown"
    per_cycle = cpu_features.fp32_flops_per_cycle(flags)
    peak = cores * per_cycle * mhz / 1e3
    where = "above" if needed > peak else "within"
    ceiling = f", which allows at most {peak * eager_s / flops * 1e9:.2f}x" if needed > peak else ""
    return (
        f"{head}, {where} this CPU's fp32 peak of {peak:.0f} GFLOP/s ({cores} cores x {per_cycle} FLOP/cycle x "
        f"{mhz / 1e3:.2f} GHz){ceiling}; the best fp32 path runs at {flops / best_s / 1e9:.0f} GFLOP/s "
        f"({flops / best_s / 1e9 / peak:.0%} of peak)"
    )


def machine_lines() -> list[str]:
    flags = cpu_features.cpu_flags()
    shown = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")) or f in ("f16c",))
    return [
        f"CPU: {cpu_features.cpu_model() or 'unknown'}; class {cpu_features.feature_class()}; "
        f"{cpu_features.physical_cores()} physical cores; flags: {' '.join(shown)}",
        "load average: " + " ".join(f"{v:.2f}" for v in os.getloadavg()),
    ]


def _openvino_profile(engine, x: torch.Tensor, top: int) -> list[tuple[str, str, float]]:
    profiled = OpenVinoBackend(engine.path, threads=engine.compiled.get_property("INFERENCE_NUM_THREADS"),
                               precision=engine.precision, perf_counters=True)  # fmt: skip
    profiled(x)
    return [(name, f"{kind} [{kernel}]", ms) for name, kind, kernel, ms in profiled.layer_profile(top)]


def _onnxruntime_profile(engine, x: torch.Tensor, top: int) -> list[tuple[str, str, float]]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="deeplab_ort_profile_") as tmp:
        options = engine.session.get_session_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(engine.path), options, providers=["CPUExecutionProvider"])
        session.run(None, {engine.input_name: x.numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    rows = [
        (e["name"].removesuffix("_kernel_time"), e.get("args", {}).get("op_name", "?"), e["dur"] / 1000)
        for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
    ]  # fmt: skip
    return sorted(rows, key=lambda r: -r[2])[:top]


def _torch_profile(engine, x: torch.Tensor, top: int) -> list[tuple[str, str, float]]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine(x)
    rows = [(e.key, f"{e.count} calls", e.self_cpu_time_total / 1000) for e in prof.key_averages()]
    return sorted(rows, key=lambda r: -r[2])[:top]


def layer_profile(engine, x: torch.Tensor, top: int = 15) -> list[str]:
    """Where one run of ``engine`` spends its time: the ``top`` slowest layers (or torch ops), as lines."""
    name = getattr(engine, "name", "")
    if name.startswith("openvino"):
        rows = _openvino_profile(engine, x, top)
    elif name.startswith("onnxruntime"):
        rows = _onnxruntime_profile(engine, x, top)
    else:
        rows = _torch_profile(engine, x, top)
    total = sum(r[2] for r in rows)
    return [f"  {ms:9.1f} ms  {ms / total:6.1%} of these  {layer}  ({kind})" for layer, kind, ms in rows]
