"""Exporting a DeepLab-v2 model to ONNX (dynamic H/W), TorchScript and ``torch.export``.

The exported graph maps a preprocessed batch (``N x 3 x H x W``, BGR − mean, float32) to the
stride-8 logits, exactly as ``model(x)``. Any batch size and image size work.

The TF convention pads conv1 and pool1 ``SAME``, and that padding depends on whether the input
size is odd or even. A trace records the padding of the example's size as constants, which
would be wrong for the other parity; :func:`exportable` replaces those two layers by ones that
compute the padding in the graph (pad symmetrically, then drop the first row/column when the
size is even), so one exported graph is right for both parities.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from ..atomic import atomic_path, atomic_write_bytes
from ..errors import DeepLabError, missing_extra
from ..models.deeplab import DeepLabV2
from ..models.layers import Conv, MaxPool
from .fold import fold_batchnorm
from .metadata import METADATA_KEY, TORCHSCRIPT_FILE, export_metadata

FORMATS = ("onnx", "torchscript", "torch.export")
DEFAULT_OPSET = 17


def _drop_first_if_even(x: torch.Tensor, dim: int, padded_by: int) -> torch.Tensor:
    """``x`` was padded by ``padded_by`` on both sides of ``dim``; for an even original size drop
    the first entry. Written with shape arithmetic and ``index_select`` so a trace keeps it dynamic.
    """
    size = x.shape[dim] - 2 * padded_by  # a tensor while tracing, an int otherwise
    start = 1 - size % 2
    index = torch.arange(start, size + 2 * padded_by, device=x.device)
    return torch.index_select(x, dim, index)


class ParitySame(nn.Module):
    """TF ``SAME`` padding for stride 2 and an odd window, valid for any input size in a trace.

    For stride 2 and odd effective window ``k``, ``SAME`` pads ``(k-1)/2`` on both sides when the
    size is odd and one less before when it is even: pad symmetrically, then drop the first row.
    """

    def __init__(self, window: int, value: float = 0.0):
        super().__init__()
        if window % 2 != 1:
            raise ValueError(f"ParitySame needs an odd window, got {window}")
        self.pad = (window - 1) // 2
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        x = F.pad(x, (p, p, p, p), value=self.value)
        x = _drop_first_if_even(x, -2, p)
        return _drop_first_if_even(x, -1, p)


class ExportConv(nn.Module):
    """A TF-convention strided conv with its ``SAME`` padding done by :class:`ParitySame`."""

    def __init__(self, conv: Conv):
        super().__init__()
        k, s, d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
        if s != 2 or conv.kernel_size[0] != conv.kernel_size[1]:
            raise DeepLabError(f"cannot export SAME padding for kernel {conv.kernel_size} stride {conv.stride}")
        self.same = ParitySame((k - 1) * d + 1)
        self.conv = conv
        conv.dynamic_same = False  # padding is done here; the wrapped conv is padding=0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.same(x))


class ExportMaxPool(nn.Module):
    """TF-convention pool1 (3x3 stride 2 ``SAME``; padded cells never win)."""

    def __init__(self):
        super().__init__()
        self.same = ParitySame(3, value=float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.same(x), 3, 2)


def exportable(model: DeepLabV2, *, fold_bn: bool = False) -> nn.Module:
    """A copy of ``model`` in eval mode whose graph does not depend on the example's size.

    Args:
        model: the network to export.
        fold_bn: fold batch norm into the convs first (exact up to rounding).
    """
    model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model)
    model = model.cpu().float().eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv) and child.dynamic_same:
                setattr(parent, name, ExportConv(child))
            elif isinstance(child, MaxPool) and child.convention == "tf":
                setattr(parent, name, ExportMaxPool())
    return model


def example_batch(size: Sequence[int], batch: int = 1) -> torch.Tensor:
    """A fixed random input of ``size`` (H, W) at the scale of real inputs (BGR − mean): what is traced."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *size, generator=g) * 50


def export_onnx(
    model: DeepLabV2, path: str | Path, *, opset: int = DEFAULT_OPSET, fold_bn: bool = False,
    example_size: Sequence[int] = (65, 65),
) -> Path:  # fmt: skip
    """Write ``model`` as ONNX with dynamic batch, height and width (atomically).

    Args:
        model: the network; its spec is stored in the file (:mod:`.metadata`).
        path: the ``.onnx`` file to write.
        opset: ONNX opset version.
        fold_bn: fold batch norm into the convs before exporting.
        example_size: the (H, W) traced; the graph works for any size.
    """
    try:
        import onnx
    except ImportError as exc:
        raise missing_extra(exc, "ONNX export needs the 'onnx' package: pip install 'deeplab_resnet[onnx]'") from exc
    net = exportable(model, fold_bn=fold_bn)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: it needs no onnxscript, and traced sizes stay symbolic.
        torch.onnx.export(
            net, (example_batch(example_size),), str(tmp), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["logits"], do_constant_folding=True,
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                          "logits": {0: "batch", 2: "logit_height", 3: "logit_width"}},
        )  # fmt: skip
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(export_metadata(model.spec))
        onnx.save(proto, str(tmp))
    return path


def export_torchscript(model: DeepLabV2, path: str | Path, *, example_size: Sequence[int] = (65, 65)) -> Path:
    """Write a traced TorchScript module (any input size; load with ``torch.jit.load``)."""
    net = exportable(model)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(net, (example_batch(example_size),), check_trace=False)
        buffer = io.BytesIO()  # in memory first: torch aborts the process on a full disk
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_FILE: json.dumps(export_metadata(model.spec))})
    atomic_write_bytes(path, buffer.getbuffer())
    return path


def export_program(model: DeepLabV2, path: str | Path, *, example_size: Sequence[int] = (65, 65)) -> Path:
    """Write a ``torch.export`` program (``.pt2``) with dynamic batch, height and width."""
    net = exportable(model)
    height = width = Dim.AUTO  # AUTO: sizes the network constrains (caffe ceil-mode pool1) are allowed to specialise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(
            # batch 2: torch.export specialises a size of 1 to a constant.
            net,
            (example_batch(example_size, batch=2),),
            dynamic_shapes=({0: Dim.AUTO, 2: height, 3: width},),
        )
    path = Path(path)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(path, buffer.getbuffer())
    return path


def export_model(model: DeepLabV2, path: str | Path, fmt: str = "onnx", **kwargs) -> Path:
    """Export in ``fmt`` (``onnx``, ``torchscript`` or ``torch.export``)."""
    if fmt == "onnx":
        return export_onnx(model, path, **kwargs)
    if fmt == "torchscript":
        return export_torchscript(model, path, **kwargs)
    if fmt == "torch.export":
        return export_program(model, path, **kwargs)
    raise DeepLabError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")


def onnx_file_parses(path: str | Path) -> bool:
    """Whether ``path`` is a whole ONNX file (a cached one damaged after it was written is not)."""
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx raises protobuf's DecodeError and others for a damaged file
        return False
    return True
