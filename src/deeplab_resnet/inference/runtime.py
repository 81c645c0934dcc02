"""Inference backends with one interface: ``backend.logits(batch)``.

``batch`` is a preprocessed ``N x 3 x H x W`` float32 tensor (BGR − mean); the result is the
stride-8 logits ``N x C x h x w`` as a float32 tensor on the CPU or the backend's device.

- :class:`TorchBackend`: the PyTorch model, optionally through the fast paths of
  :mod:`deeplab_resnet.inference.optimize`.
- :class:`OnnxRuntimeBackend`: an ONNX file (from ``deeplab export``) run by onnxruntime.

:func:`make_backend` builds either from a loaded model.
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
from .optimize import REFERENCE, FastInference, InferenceOptions

BACKENDS = ("torch", "onnxruntime")


class Backend(Protocol):
    convention: str

    def logits(self, batch: torch.Tensor) -> torch.Tensor: ...


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
        self.convention = getattr(model, "convention", "caffe")

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.fast.logits(batch)


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
        from .export import read_onnx_metadata

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
        self.metadata = read_onnx_metadata(path)
        self.convention = self.metadata.get("convention", "caffe")
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def _cached_onnx(model: nn.Module, cache_dir: Path) -> Path:
    """Export ``model`` to ONNX once per weights: the file name is a hash of the state dict."""
    from .export import export_onnx

    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(str(getattr(model, "convention", "")).encode())
    path = cache_dir / f"deeplab_{digest.hexdigest()[:16]}.onnx"
    if not path.exists():
        export_onnx(model, path)
    return path


def make_backend(
    name: str, model: nn.Module | None = None, *, device: str | torch.device = "cpu",
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


class BackendNet(nn.Module):
    """A backend in the place of the network inside :class:`~deeplab_resnet.inference.segmenter.Segmenter`
    or :class:`~deeplab_resnet.models.MSC`: ``net(x)`` returns ``backend.logits(x)`` on ``x``'s device.
    """

    def __init__(self, backend: Backend):
        super().__init__()
        self.backend = backend
        self.convention = backend.convention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backend.logits(x).to(x.device)


class BackendModel(BackendNet):
    """A stand-in for a :class:`~deeplab_resnet.models.DeepLabV2` whose forward runs ``backend``.

    It has what ``Segmenter``, ``MSC`` and ``evaluate_pairs`` use (``dataset``, ``num_classes``,
    ``mean_bgr``, ``convention``, ``upsample``, ``logit_size``), so preprocessing, multi-scale
    fusion, flipping, tiling, upsampling and the CRF stay as they are; only the network changes.
    """

    def __init__(self, model: nn.Module, backend: Backend):
        super().__init__(backend)
        self._source = (model,)  # a tuple: not registered, so .to()/.eval() leave the model alone
        self.dataset = model.dataset
        self.architecture = getattr(model, "architecture", {})

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def mean_bgr(self) -> tuple[float, float, float]:
        return self.dataset.mean_bgr

    def logit_size(self, height: int, width: int) -> tuple[int, int]:
        return self._source[0].logit_size(height, width)

    def upsample(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self._source[0].upsample(logits, size)


def backend_model(model: nn.Module, backend: Backend) -> BackendModel:
    """``model``'s stand-in that runs ``backend`` (see :class:`BackendModel`)."""
    return BackendModel(model, backend).eval()


def batched_logits(backend: Backend, batches: list[torch.Tensor], max_batch: int = 8) -> list[torch.Tensor]:
    """Logits for many preprocessed images (``3 x H x W`` each), same-size ones run as one batch.

    Returns one ``C x h x w`` tensor per input, in input order. Batching images of equal size is
    how evaluation uses a GPU fully (the original ran one image at a time).
    """
    order: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(batches):
        order.setdefault(tuple(x.shape), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(batches)
    for indices in order.values():
        for start in range(0, len(indices), max_batch):
            chunk = indices[start : start + max_batch]
            logits = backend.logits(torch.stack([batches[i] for i in chunk]))
            for i, row in zip(chunk, logits):
                out[i] = row
    return out  # type: ignore[return-value]
