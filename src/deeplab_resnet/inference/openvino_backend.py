"""An exported ONNX model (float32 or int8 QDQ) run by OpenVINO's CPU plugin.

OpenVINO reads the ONNX file that ``deeplab export`` (or :mod:`.quantize`) writes, fuses conv + bias
+ ReLU + residual add, and picks its own kernels per CPU (AVX2, AVX-512, AMX). Its CPU plugin may
run float32 models in bf16 on CPUs with AMX unless told otherwise, so the precision is always set
explicitly: ``f32`` for the exact path, ``bf16`` only when asked. A QDQ int8 model runs as int8
whatever the precision hint says about the layers left in float.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepLabError, first_line, missing_extra
from ..models.spec import ModelSpec
from .cpu_features import physical_cores
from .metadata import METADATA_KEY
from .signal_stack import kept_signal_stack

PRECISIONS = ("f32", "bf16")
_SHORT_TYPES = {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}
INSTALL = "pip install 'deeplab_resnet[openvino]'"


def import_openvino():
    """The ``openvino`` module, or a one-line error naming what to install."""
    try:
        import openvino
    except ImportError as exc:
        raise missing_extra(exc, f"the openvino backend needs: {INSTALL}") from exc
    return openvino


def _metadata(model) -> dict:
    """The deeplab metadata OpenVINO keeps from the ONNX file's ``metadata_props`` (empty if none)."""
    try:
        text = model.get_rt_info(["framework", METADATA_KEY]).astype(str)
    except Exception:  # OpenVINO raises its own error type for a missing key
        return {}
    return json.loads(text) if text else {}


class OpenVinoBackend:
    """An ONNX file compiled by OpenVINO for the CPU, latency-oriented (one image at a time).

    Args:
        path: the ``.onnx`` file.
        threads: inference threads (default: the physical cores).
        precision: ``f32`` (exact up to rounding) or ``bf16`` (fast only on CPUs with AMX or
            AVX512-BF16; emulated and slow elsewhere).
        perf_counters: collect per-layer timings (:meth:`layer_profile`); costs a little time.
    """

    def __init__(
        self, path: str | Path, *, threads: int | None = None, precision: str = "f32", perf_counters: bool = False
    ):
        if precision not in PRECISIONS:
            raise DeepLabError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        ov = import_openvino()
        path = Path(path)
        if not path.is_file():
            raise DeepLabError(f"ONNX file not found: {path}")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises its own exception types for bad files
            raise DeepLabError(f"{path}: not a model OpenVINO can read ({first_line(exc)})") from exc
        self.metadata = _metadata(model)
        self.spec = ModelSpec.from_metadata(self.metadata, str(path)) if self.metadata else None
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or physical_cores()),
            "INFERENCE_PRECISION_HINT": precision,
            "PERF_COUNT": bool(perf_counters),
        }
        with kept_signal_stack():  # the CPU plugin swaps this thread's signal stack (see signal_stack)
            self.compiled = core.compile_model(model, "CPU", config)
            self.request = self.compiled.create_infer_request()
            self.output = self.compiled.output(0)
        self.path = path
        self.precision = precision
        # What the plugin actually runs: a CPU without bf16 support runs a bf16 request in f32.
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))  # e.g. "<Type: 'float32'>"
        self.effective_precision = next((short for long, short in _SHORT_TYPES.items() if long in hint), hint)
        self.name = "openvino" if precision == "f32" else f"openvino-{precision}"

    def close(self) -> None:
        """Release the compiled model now (also done when the backend is garbage-collected)."""
        with kept_signal_stack():  # releasing it puts back a signal stack of the plugin's choosing
            self.request = self.output = self.compiled = None

    def __del__(self) -> None:
        if getattr(self, "compiled", None) is not None:
            self.close()

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            raise DeepLabError(f"{self.path}: this OpenVINO backend was closed")
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        out = self.request.infer({0: x})[self.output]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))

    __call__ = logits

    def layer_profile(self, top: int = 15) -> list[tuple[str, str, str, float]]:
        """The slowest layers of the last run: ``(layer, type, kernel, ms)``, slowest first
        (needs ``perf_counters=True``)."""
        rows = [
            (p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1000)
            for p in self.request.get_profiling_info()
        ]
        return sorted(rows, key=lambda r: -r[3])[:top]
