"""Fast inference paths for DeepLab-v2, each an option checked against the float32 eager model.

>>> from deeplab_resnet.inference.optimize import InferenceOptions, FastInference
>>> fast = FastInference(model, InferenceOptions(fold_bn=True, channels_last=True), device="cpu")
>>> logits = fast.logits(batch)            # the same N x C x h x w logits as model(batch)

Options (see :class:`InferenceOptions`): folding frozen batch norm into the preceding conv
(exact up to rounding, :mod:`.fold`), ``channels_last`` memory layout, bf16/fp16 autocast,
``torch.compile`` with an on-disk cache, CUDA graphs for fixed-size inputs, cuDNN autotuning, and
pinned-memory asynchronous host-to-device copies. :mod:`.agreement` measures a path against the
reference (logit relative L2 error and argmax agreement).
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..cache import cache_dir as user_cache_dir
from ..errors import DeepLabError
from .fold import fold_batchnorm

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class InferenceOptions:
    """Which fast paths to use. All off is the float32 eager reference.

    Args:
        fold_bn: fold every batch norm into the conv before it (inference only; exact up to
            rounding because BN uses fixed statistics at inference).
        channels_last: NHWC memory layout for weights and inputs (faster convs in oneDNN/cuDNN).
        dtype: ``float32``, or ``bfloat16`` / ``float16`` autocast (logits returned as float32).
        compile: ``torch.compile`` the network (inductor, weights frozen as constants); compiled
            code is cached on disk in ``compile_cache_dir`` so a second process starts fast.
            Compiles once per input size: meant for fixed sizes. Sets inductor's global
            ``freezing`` flag for the process.
        compile_cache_dir: inductor's cache directory (default ``~/.cache/deeplab_resnet/inductor``).
        cuda_graphs: replay a captured CUDA graph per input shape (CUDA only; fixed sizes).
        cudnn_benchmark: let cuDNN pick the fastest algorithm per shape (CUDA only).
        pinned: copy CPU batches to the GPU from pinned memory, asynchronously (CUDA only).
    """

    fold_bn: bool = False
    channels_last: bool = False
    dtype: str = "float32"
    compile: bool = False
    compile_cache_dir: str | None = None
    cuda_graphs: bool = False
    cudnn_benchmark: bool = False
    pinned: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise DeepLabError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def describe(self) -> str:
        """A short name such as ``fold+cl+bf16``; ``eager-fp32`` when nothing is on."""
        parts = [
            name for name, on in (
                ("fold", self.fold_bn), ("cl", self.channels_last), ("compile", self.compile),
                ("graphs", self.cuda_graphs), ("cudnn-bench", self.cudnn_benchmark), ("pinned", self.pinned),
            ) if on
        ]  # fmt: skip
        if self.dtype != "float32":
            parts.append({"bfloat16": "bf16", "float16": "fp16"}[self.dtype])
        return "+".join(parts) if parts else "eager-fp32"

    def as_dict(self) -> dict:
        return asdict(self)


REFERENCE = InferenceOptions()


def default_options(device: str | torch.device) -> InferenceOptions:
    """Good defaults per device (see README "Speed and export").

    CPU: BN folding + channels_last (fp32: the CPUs we target lack fast bf16; compile is opt-in
    because its first run takes minutes). CUDA: folding, channels_last, bf16 autocast and
    cuDNN autotuning, with pinned copies; CUDA graphs and compile are opt-in (fixed sizes only
    benefit, and compile takes minutes the first time).
    """
    if torch.device(device).type == "cuda":
        return InferenceOptions(fold_bn=True, channels_last=True, dtype="bfloat16", cudnn_benchmark=True, pinned=True)
    return InferenceOptions(fold_bn=True, channels_last=True)


def parse_options(text: str, device: str | torch.device = "cpu") -> InferenceOptions:
    """Options from a ``+``-separated list: ``eager``, ``default`` or any of
    ``fold``, ``cl``, ``bf16``, ``fp16``, ``compile``, ``graphs``, ``cudnn-bench``, ``pinned``.
    """
    text = text.strip()
    if text in ("", "eager", "eager-fp32", "reference"):
        return REFERENCE
    if text == "default":
        return default_options(device)
    flags: dict = {}
    for part in text.split("+"):
        key = part.strip()
        if key == "fold":
            flags["fold_bn"] = True
        elif key in ("cl", "channels_last"):
            flags["channels_last"] = True
        elif key in ("bf16", "bfloat16"):
            flags["dtype"] = "bfloat16"
        elif key in ("fp16", "float16"):
            flags["dtype"] = "float16"
        elif key == "compile":
            flags["compile"] = True
        elif key in ("graphs", "cuda_graphs"):
            flags["cuda_graphs"] = True
        elif key in ("cudnn-bench", "cudnn_benchmark"):
            flags["cudnn_benchmark"] = True
        elif key == "pinned":
            flags["pinned"] = True
        else:
            raise DeepLabError(
                f"unknown fast-path option {key!r} in {text!r}; use eager, default or a '+' list of "
                "fold, cl, bf16, fp16, compile, graphs, cudnn-bench, pinned"
            )
    return InferenceOptions(**flags)


def to_device(batch: torch.Tensor, device: torch.device, *, pinned: bool = False) -> torch.Tensor:
    """Copy a CPU batch to ``device``; with ``pinned`` through page-locked memory, asynchronously."""
    if batch.device == device:
        return batch
    if pinned and device.type == "cuda" and batch.device.type == "cpu":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


class FastInference:
    """A DeepLab-v2 model prepared with :class:`InferenceOptions`; :meth:`logits` runs it.

    The wrapped model is a copy when BN is folded or the layout changes, so the caller's model
    is left as it was.

    Args:
        model: a :class:`~deeplab_resnet.models.DeepLabV2` (or any module mapping N x 3 x H x W
            to logits).
        options: the fast paths to use.
        device: where to run.
    """

    def __init__(self, model: nn.Module, options: InferenceOptions = REFERENCE, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.options = options
        if self.device.type != "cuda" and (options.cuda_graphs or options.cudnn_benchmark):
            raise DeepLabError(f"CUDA graphs and cuDNN autotuning need a CUDA device, not {self.device}")
        if options.cuda_graphs and options.compile:
            raise DeepLabError("use either compile or CUDA graphs (compile with mode='reduce-overhead' uses graphs)")
        net = model
        if options.fold_bn:
            net = fold_batchnorm(net)
        elif options.channels_last:
            net = copy.deepcopy(net)
        net = net.to(self.device).eval()
        if options.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if options.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.net = net
        self._forward = self._compile(net) if options.compile else net
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def _compile(self, net: nn.Module):
        cache = Path(self.options.compile_cache_dir or user_cache_dir("inductor"))
        cache.mkdir(parents=True, exist_ok=True)
        # Inductor reads its cache location from the environment; FX graph and autotune caches
        # then persist across processes, so only the first run pays the full compile time.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
        import torch._inductor.config as inductor_config

        # Freezing turns the (inference-only) weights into constants: lets inductor fold and
        # prepack them for oneDNN on CPU.
        inductor_config.freezing = True
        inductor_config.fx_graph_cache = True
        return torch.compile(net, dynamic=False)

    def _autocast(self):
        if self.options.dtype == "float32":
            return contextlib.nullcontext()
        # Autocast's cast-weight cache must be off while a CUDA graph is captured (PyTorch docs).
        return torch.autocast(
            self.device.type, dtype=DTYPES[self.options.dtype], cache_enabled=not self.options.cuda_graphs
        )

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self._forward(x)

    def _graph_run(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        if key not in self._graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up outside the graph (cuDNN picks algorithms)
                for _ in range(2):
                    self._run(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._run(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits ``N x C x h x w`` of a preprocessed batch ``N x 3 x H x W`` (on any device)."""
        x = to_device(batch, self.device, pinned=self.options.pinned)
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self._graph_run(x) if self.options.cuda_graphs else self._run(x)
        return out.float().contiguous()

    __call__ = logits
