"""Inference backends: callables with one interface, ``backend(batch)`` (also ``backend.logits(batch)``).

``batch`` is a preprocessed ``N x 3 x H x W`` float32 tensor (BGR − mean); the result is the
stride-8 logits ``N x C x h x w`` as a float32 tensor on the CPU or the backend's device.

- :class:`TorchBackend`: the PyTorch model, optionally through the fast paths of
  :mod:`deeplab_resnet.inference.optimize`.
- :class:`OnnxRuntimeBackend`: an ONNX file (from ``deeplab export``) run by onnxruntime; its
  ``spec`` is the :class:`~deeplab_resnet.models.spec.ModelSpec` stored in the file.

:func:`make_backend` builds either from a loaded model. A backend is only the network: give it to
:class:`~deeplab_resnet.inference.segmenter.Segmenter` (or :class:`~deeplab_resnet.models.MSC`)
together with the model's spec, ``Segmenter(backend, model.spec)``.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..cache import cache_dir as user_cache_dir
from ..errors import DeepLabError
from ..models.deeplab import DeepLabV2
from ..models.spec import ModelSpec
from .export import export_onnx
from .metadata import metadata_from_session
from .optimize import REFERENCE, FastInference, InferenceOptions

BACKENDS = ("torch", "onnxruntime")


class Backend(Protocol):
    name: str

    def logits(self, batch: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class TorchBackend:
    """The PyTorch model, run with :class:`~deeplab_resnet.inference.optimize.InferenceOptions`.

    Args:
        model: a DeepLab-v2 model.
        device: where to run.
        options: fast paths (default: the float32 eager reference).
    """

    name = "torch"

    def __init__(self, model: nn.Module, *, device: str | torch.device = "cpu", options: InferenceOptions = REFERENCE):
        self.fast = FastInference(model, options, device)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.fast.logits(batch)

    __call__ = logits


def _session_options(threads: int | None, optimize: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    # ORT_ENABLE_ALL: constant folding, conv+BN+ReLU fusion and the NCHWc layout of MLAS on CPU.
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


class OnnxRuntimeBackend:
    """An exported ONNX model run by onnxruntime (CUDA provider when asked and available).

    Args:
        path: the ``.onnx`` file (written by :func:`deeplab_resnet.inference.export.export_onnx`).
        device: ``cpu`` or ``cuda``; CUDA needs ``onnxruntime-gpu``.
        threads: intra-op threads (default: onnxruntime's choice).
        optimize: onnxruntime's full graph optimisations (on by default).
    """

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, *, device: str | torch.device = "cpu", threads: int | None = None, optimize: bool = True
    ):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DeepLabError("the onnxruntime backend needs: pip install 'deeplab_resnet[onnx]'") from exc
        path = Path(path)
        if not path.is_file():
            raise DeepLabError(f"ONNX file not found: {path}")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise DeepLabError("onnxruntime has no CUDA provider here: install onnxruntime-gpu or use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), _session_options(threads, optimize), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise DeepLabError(f"{path}: not a loadable ONNX model ({exc})") from exc
        self.metadata = metadata_from_session(self.session)
        # None for an ONNX file not written by deeplab export: the caller then supplies the spec.
        self.spec = ModelSpec.from_metadata(self.metadata, str(path)) if self.metadata else None
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])

    __call__ = logits


def _cached_onnx(model: DeepLabV2, cache_dir: Path) -> Path:
    """Export ``model`` to ONNX once per weights: the file name is a hash of the state dict and convention."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(model.convention.encode())
    path = cache_dir / f"deeplab_{digest.hexdigest()[:16]}.onnx"
    if not path.exists():
        export_onnx(model, path)
    return path


def make_backend(
    name: str, model: DeepLabV2 | None = None, *, device: str | torch.device = "cpu",
    options: InferenceOptions = REFERENCE, onnx_path: str | Path | None = None,
    cache_dir: str | Path | None = None, threads: int | None = None,
) -> Backend:  # fmt: skip
    """A backend by name.

    Args:
        name: ``torch`` or ``onnxruntime``.
        model: the loaded model (for ``onnxruntime`` it is exported to ``cache_dir`` unless
            ``onnx_path`` names an existing export).
        device: where to run.
        options: fast paths for the torch backend.
        onnx_path: an ONNX file to run instead of exporting ``model``.
        cache_dir: where exports are cached (default: ``~/.cache/deeplab_resnet/onnx``).
        threads: onnxruntime intra-op threads.
    """
    if name == "torch":
        if model is None:
            raise DeepLabError("the torch backend needs a model")
        return TorchBackend(model, device=device, options=options)
    if name == "onnxruntime":
        if onnx_path is None:
            if model is None:
                raise DeepLabError("the onnxruntime backend needs a model or an ONNX file")
            cache = Path(cache_dir) if cache_dir else user_cache_dir("onnx")
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError:
                cache = Path(tempfile.mkdtemp(prefix="deeplab_onnx_"))
            onnx_path = _cached_onnx(model, cache)
        return OnnxRuntimeBackend(onnx_path, device=device, threads=threads)
    raise DeepLabError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
