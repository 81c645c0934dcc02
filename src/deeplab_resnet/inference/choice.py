"""``--backend auto``: the fastest installed engine for this device and CPU, within the accuracy asked for.

:func:`choose_engine` is the rule (pure: CPU flags, installed packages and cached int8 models in,
a decision out); :func:`choose_backend` applies it to a model and builds the backend. The rule:

- CUDA: PyTorch with BN folded and channels_last, plus bf16 autocast when reduced precision is
  allowed (``deeplab segment``), float32 when not (``deeplab evaluate``).
- CPU, float32: onnxruntime, else OpenVINO (forced to f32), else PyTorch with BN folded and
  channels_last. Measured on a 2-core AVX2 EPYC in two quiet runs (``benchmarks/cpu_engines.py``,
  BENCHMARKS.md): onnxruntime had the lowest median both times (1.42x and 1.44x eager), OpenVINO
  1.36x and 1.30x, torch.compile 1.33x, PyTorch fold+cl 1.26-1.27x, all within rel-L2 1e-5 of
  eager; onnxruntime was also the fastest on the 2-core Xeon of the issue that asked for this.
- CPU, reduced precision allowed: int8 only when ``deeplab quantize --check`` has cached a
  calibrated int8 model for these weights (the user's opt-in) *and* measured it within the 99.5%
  agreement bar on held-out images, on a CPU of the same int8 kind (:mod:`.int8_check`): whether
  int8 keeps the labels depends on the weights, so it is measured, never assumed. On the AVX2
  EPYC int8 ran 2.8x eager but kept only 69-71% of the labels of the random-weights benchmark model
  (``benchmarks/int8_diagnosis.py`` says why). Otherwise the float32 choice.
- CPU, bf16: never chosen. Like int8's, its agreement depends on the weights, and nothing measures it
  yet (no CPU with bf16 instructions was at hand to build that check on; elsewhere OpenVINO runs a
  bf16 request in f32 and PyTorch emulates it, 5-10x slower than f32). ``--backend openvino-bf16``
  asks for it.
- ``torch.compile`` is never chosen: its first run takes minutes (``--backend torch --fast compile``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..models.deeplab import DeepLabV2
from . import cpu_features
from .int8_check import engines_within_bar, read_check
from .optimize import InferenceOptions, default_options
from .quantize import any_int8, find_int8
from .runtime import ONNX_ENGINES, installed, make_backend, onnx_cache_dir


@dataclass(frozen=True)
class EngineChoice:
    """What ``auto`` chose: a :data:`~deeplab_resnet.inference.runtime.BACKENDS` name, the torch
    options when it is ``torch``, and the words that explain it."""

    backend: str
    options: InferenceOptions | None
    precision: str  # fp32, bf16 or int8
    reason: str

    def line(self) -> str:
        """The one line ``deeplab segment``/``evaluate`` print when they start."""
        engine = self.backend.split("-")[0]
        if engine == "torch" and self.options is not None:
            engine = f"torch {replace(self.options, dtype='float32').describe()}"  # the dtype follows
        return f"backend: {engine} {self.precision} ({self.reason}; --backend to override)"


def choose_engine(
    device: str | torch.device = "cpu", *, allow_reduced_precision: bool = False, int8_within_bar: tuple[str, ...] = (),
    flags: frozenset[str] | None = None, engines: tuple[str, ...] | None = None, int8_reason: str = "",
) -> EngineChoice:  # fmt: skip
    """The engine ``auto`` picks (see the module's description for the rule).

    Args:
        device: where the model runs.
        allow_reduced_precision: whether int8 (CPU, when checked) or bf16 (CUDA) may be chosen.
        int8_within_bar: the int8 engines (``onnxruntime-int8``, ``openvino-int8``) whose recorded check
            of these weights' int8 model meets the agreement bar on this kind of CPU.
        int8_reason: the words that say so (for the line printed at start).
        flags: the CPU's feature flags (default: this CPU's).
        engines: the installed ONNX engines among :data:`ONNX_ENGINES` (default: probed).
    """
    if torch.device(device).type == "cuda":
        options = default_options(device)
        if not allow_reduced_precision:
            options = InferenceOptions(fold_bn=True, channels_last=True, cudnn_benchmark=True, pinned=True)
        return EngineChoice("torch", options, "bf16" if options.dtype != "float32" else "fp32", "CUDA device")
    flags = cpu_features.cpu_flags() if flags is None else flags
    if engines is None:
        engines = tuple(name for name in ONNX_ENGINES if installed(name))
    cpu = cpu_features.describe(flags)
    engines = tuple(name for name in ONNX_ENGINES if name in engines)  # in order of preference
    int8 = [f"{e}-int8" for e in engines if f"{e}-int8" in int8_within_bar]
    if allow_reduced_precision and int8:
        return EngineChoice(int8[0], None, "int8", f"{cpu}, {int8_reason or 'int8 model checked by deeplab quantize'}")
    if engines:
        return EngineChoice(engines[0], None, "fp32", cpu)
    return EngineChoice(
        "torch", InferenceOptions(fold_bn=True, channels_last=True), "fp32", f"{cpu}, no openvino/onnxruntime installed"
    )


def choose_backend(
    model: DeepLabV2, *, device: str | torch.device = "cpu", allow_reduced_precision: bool = False,
    threads: int | None = None, cache_dir: str | Path | None = None,
):  # fmt: skip
    """The backend ``--backend auto`` runs ``model`` with; its ``choice`` attribute is the
    :class:`EngineChoice` (``backend.choice.line()`` says what was chosen and why).

    >>> backend = choose_backend(model, device="cpu", allow_reduced_precision=True)
    >>> segmenter = Segmenter(backend, model.spec)
    """
    within, reason = (), ""
    # Hashing the weights to find their int8 model takes a moment: only when there is one to find.
    cache = onnx_cache_dir(cache_dir) if allow_reduced_precision and torch.device(device).type == "cpu" else None
    if cache is not None and any_int8(cache):
        found = find_int8(model, cache)
        record = read_check(found) if found is not None else None
        within = engines_within_bar(record)
        if within:
            stats = record["engines"][within[0]]
            reason = f"int8 model checked by deeplab quantize: {stats['argmax_agreement']:.2%} agreement"
    choice = choose_engine(
        device, allow_reduced_precision=allow_reduced_precision, int8_within_bar=within, int8_reason=reason
    )
    try:
        backend = make_backend(
            choice.backend, model, device=device, options=choice.options or InferenceOptions(), cache_dir=cache_dir,
            threads=threads,
        )  # fmt: skip
    except Exception as exc:  # an engine that cannot export or load this model: PyTorch still can
        if choice.backend == "torch":
            raise
        reason = f"{choice.reason}; {choice.backend} failed: {str(exc).splitlines()[0][:120]}"
        choice = EngineChoice("torch", InferenceOptions(fold_bn=True, channels_last=True), "fp32", reason)
        backend = make_backend("torch", model, device=device, options=choice.options)
    backend.choice = choice
    return backend
