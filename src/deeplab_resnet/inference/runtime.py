"""Inference backends: callables with one interface, ``backend(batch)`` (also ``backend.logits(batch)``).

``batch`` is a preprocessed ``N x 3 x H x W`` float32 tensor (BGR − mean); the result is the
stride-8 logits ``N x C x h x w`` as a float32 tensor on the CPU or the backend's device.

- :class:`TorchBackend`: the PyTorch model, optionally through the fast paths of
  :mod:`deeplab_resnet.inference.optimize`.
- :class:`OnnxRuntimeBackend`: an ONNX file (from ``deeplab export``) run by onnxruntime; its
  ``spec`` is the :class:`~deeplab_resnet.models.spec.ModelSpec` stored in the file.
- :class:`~deeplab_resnet.inference.openvino_backend.OpenVinoBackend`: the same file run by
  OpenVINO (float32 forced, or bf16 when asked).
- int8: the model :mod:`.quantize` calibrated and cached, run by either ONNX engine.

:func:`make_backend` builds either from a loaded model. A backend is only the network: give it to
:class:`~deeplab_resnet.inference.segmenter.Segmenter` (or :class:`~deeplab_resnet.models.MSC`)
together with the model's spec, ``Segmenter(backend, model.spec)``.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..cache import cache_dir as user_cache_dir
from ..errors import DeepLabError, first_line, missing_extra
from ..models.deeplab import DeepLabV2
from ..models.spec import ModelSpec
from .cpu_features import physical_cores
from .export import export_onnx, onnx_file_parses
from .metadata import metadata_from_session
from .openvino_backend import OpenVinoBackend
from .optimize import REFERENCE, FastInference, InferenceOptions
from .quantize import find_int8, weights_digest

# Every engine by name; ``auto`` picks one (:mod:`.choice`). The reduced-precision ones are not
# exact: :data:`REDUCED_PRECISION` lists them.
BACKENDS = (
    "auto", "torch", "onnxruntime", "openvino", "onnxruntime-int8", "openvino-int8", "openvino-bf16", "torch-bf16",
)  # fmt: skip
REDUCED_PRECISION = ("onnxruntime-int8", "openvino-int8", "openvino-bf16", "torch-bf16")


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

    def __init__(self, model: nn.Module, *, device: str | torch.device = "cpu", options: InferenceOptions = REFERENCE):
        self.fast = FastInference(model, options, device)
        self.name = "torch" if options == REFERENCE else f"torch {options.describe()}"
        self.precision = {"bfloat16": "bf16", "float16": "fp16"}.get(options.dtype, "fp32")
        self.spec = getattr(model, "spec", None)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.fast.logits(batch)

    __call__ = logits


# The ONNX engines in auto's order of preference (float32 and int8 alike): the faster first, as measured.
ONNX_ENGINES = ("onnxruntime", "openvino")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (``sys.modules[module] = None`` counts as missing, as import does)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _session_options(threads: int | None, optimize: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    # ORT_ENABLE_ALL: constant folding, conv+BN+ReLU fusion and the NCHWc layout of MLAS on CPU.
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    # One image at a time through a chain of convs: sequential execution, all physical cores on
    # each op (hyper-threads share the vector units and only add contention).
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    return so


class OnnxRuntimeBackend:
    """An exported ONNX model run by onnxruntime (CUDA provider when asked and available).

    Args:
        path: the ``.onnx`` file (written by :func:`deeplab_resnet.inference.export.export_onnx`).
        device: ``cpu`` or ``cuda``; CUDA needs ``onnxruntime-gpu``.
        threads: intra-op threads (default: the physical cores).
        optimize: onnxruntime's full graph optimisations (on by default).
    """

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, *, device: str | torch.device = "cpu", threads: int | None = None, optimize: bool = True
    ):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_extra(exc, "the onnxruntime backend needs: pip install 'deeplab_resnet[onnx]'") from exc
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
            raise DeepLabError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from exc
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
    path = cache_dir / f"deeplab_{weights_digest(model)}.onnx"
    if not path.exists():
        export_onnx(model, path)
    return path


def onnx_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where exports are cached: ``cache_dir``, else the user cache; when that cannot be written, a
    private temporary folder, one per process, removed when the process ends."""
    cache = Path(cache_dir) if cache_dir else user_cache_dir("onnx")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return _process_cache()
    return cache


@functools.lru_cache(maxsize=1)
def _process_cache() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="deeplab_onnx_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _onnx_file(model: DeepLabV2 | None, onnx_path: str | Path | None, cache_dir: str | Path | None, name: str) -> Path:
    if onnx_path is not None:
        return Path(onnx_path)
    if model is None:
        raise DeepLabError(f"the {name} backend needs a model or an ONNX file")
    return _cached_onnx(model, onnx_cache_dir(cache_dir))


def _int8_file(model: DeepLabV2 | None, onnx_path: str | Path | None, cache_dir: str | Path | None, name: str) -> Path:
    if onnx_path is not None:
        return Path(onnx_path)
    if model is None:
        raise DeepLabError(f"the {name} backend needs a model or an int8 ONNX file")
    found = find_int8(model, onnx_cache_dir(cache_dir))
    if found is None:
        raise DeepLabError(
            f"--backend {name}: no int8 model for these weights yet; make one with "
            "'deeplab quantize --weights W --calibration LIST_OR_DIR' (calibration images apart from those you score)"
        )
    return found


def make_backend(
    name: str, model: DeepLabV2 | None = None, *, device: str | torch.device = "cpu",
    options: InferenceOptions = REFERENCE, onnx_path: str | Path | None = None,
    cache_dir: str | Path | None = None, threads: int | None = None,
) -> Backend:  # fmt: skip
    """A backend by name (one of :data:`BACKENDS` but ``auto``; for that see :mod:`.choice`).

    Args:
        name: ``torch``; ``torch-bf16`` (BN folded, channels_last, bf16 autocast); ``onnxruntime`` or
            ``openvino`` (float32); ``openvino-bf16``; ``onnxruntime-int8`` or ``openvino-int8``
            (the int8 model ``deeplab quantize`` cached for these weights).
        model: the loaded model (for the ONNX engines it is exported to ``cache_dir`` unless
            ``onnx_path`` names an existing export).
        device: where to run (the ONNX engines here run on the CPU; onnxruntime also on CUDA).
        options: fast paths for the torch backend.
        onnx_path: an ONNX file to run instead of exporting ``model`` (or of the cached int8 model).
        cache_dir: where exports are cached (default: ``~/.cache/deeplab_resnet/onnx``).
        threads: intra-op threads of the ONNX engines (default: the physical cores).
    """
    if name in ("torch", "torch-bf16"):
        if model is None:
            raise DeepLabError(f"the {name} backend needs a model")
        if name == "torch-bf16":
            options = InferenceOptions(fold_bn=True, channels_last=True, dtype="bfloat16")
        return TorchBackend(model, device=device, options=options)
    if name in ("openvino", "openvino-bf16", "openvino-int8") and torch.device(device).type != "cpu":
        raise DeepLabError(f"the {name} backend runs on the CPU: use --device cpu")
    if name in ("onnxruntime", "onnxruntime-int8"):

        def load(path: Path) -> Backend:
            return OnnxRuntimeBackend(path, device=device, threads=threads)
    elif name in ("openvino", "openvino-bf16", "openvino-int8"):

        def load(path: Path) -> Backend:
            return OpenVinoBackend(path, threads=threads, precision="bf16" if name.endswith("bf16") else "f32")
    else:
        raise DeepLabError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    find = _int8_file if name.endswith("int8") else _onnx_file
    path = find(model, onnx_path, cache_dir, name)
    try:
        backend = load(path)
    except DeepLabError:
        if onnx_path is not None or not path.is_file() or onnx_file_parses(path):
            raise  # the user's own file, or an engine that cannot run a whole file here: nothing to remake
        # A cached file that does not parse was damaged after it was written (they are written whole):
        # the float32 export is made again; the int8 model needs its calibration images.
        path.unlink(missing_ok=True)
        if name.endswith("int8"):
            raise DeepLabError(
                f"{path}: the cached int8 model was damaged and is removed; make it again with 'deeplab quantize'"
            ) from None
        backend = load(find(model, onnx_path, cache_dir, name))
    backend.name = name
    return backend


def describe_engine(network: object) -> dict[str, str]:
    """``backend`` and ``precision`` (fp32, bf16, fp16 or int8) of what runs the network: a model
    itself (eager PyTorch, float32) or a backend of :func:`make_backend` / ``choose_backend``."""
    name = getattr(network, "name", None)
    if name is None:
        return {"backend": "torch", "precision": "fp32"}
    choice = getattr(network, "choice", None)
    suffix = name.rsplit("-", 1)[-1]  # the ONNX engines' names say int8 or bf16
    hint = getattr(network, "precision", "fp32")  # PyTorch's fast paths may run bf16 or fp16 autocast
    precision = suffix if suffix in ("int8", "bf16") else hint if hint in ("bf16", "fp16") else "fp32"
    return {"backend": name, "precision": choice.precision if choice is not None else precision}
