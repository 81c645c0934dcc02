"""The model description stored inside exported files, written by the exporters and read by the runtimes.

An exported graph maps a preprocessed batch to logits; what those logits mean (the convention, the
classes, the input mean, the architecture) travels with it as JSON under the key
:data:`METADATA_KEY`: an ONNX ``metadata_props`` entry, or ``deeplab_resnet.json`` inside a
TorchScript archive. Its content is :meth:`ModelSpec.to_metadata` plus a note on the tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models.spec import ModelSpec

METADATA_KEY = "deeplab_resnet"
TORCHSCRIPT_FILE = "deeplab_resnet.json"


def export_metadata(spec: ModelSpec) -> dict[str, Any]:
    """What a runtime needs besides the graph: the spec, and the layout of input and output."""
    return {
        **spec.to_metadata(),
        "input": "N x 3 x H x W float32, BGR minus mean_bgr, values 0..255 before the mean",
        "output": "N x C x h x w stride-8 logits",
    }


def metadata_from_session(session) -> dict[str, Any]:
    """The metadata in the ONNX model an onnxruntime ``InferenceSession`` runs (empty if none)."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return json.loads(text) if text else {}


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata :func:`~deeplab_resnet.inference.export.export_onnx` stored in an ONNX file (empty if none)."""
    import onnxruntime as ort  # optional dependency (the [onnx] extra)

    return metadata_from_session(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
