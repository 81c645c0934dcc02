"""Read a ``.caffemodel`` (a serialized Caffe ``NetParameter``) without Caffe.

Both layouts are understood: the current one (``NetParameter.layer`` = field 100 of
``LayerParameter``: name 1, type 2 as a string, blobs 7) and the old V1 one
(``NetParameter.layers`` = field 2 of ``V1LayerParameter``: name 4, type 5 as an enum,
blobs 6). ``BlobProto``: num/channels/height/width 1-4 (legacy 4-D shape), data 5 (packed
float), shape 7 (``BlobShape.dim`` 1, packed int64), double_data 8. See docs/original.md §3.

The float data come back as zero-copy views of the file's bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DeepLabError
from .protowire import WireError, fields, iter_fields, one, packed_numbers, packed_varints, read_varint, signed64

# The V1 LayerType enum values a DeepLab model holds weights in (others are named by number).
V1_TYPES = {4: "Convolution", 14: "InnerProduct"}


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


def _blob(msg: memoryview) -> np.ndarray:
    f = fields(msg)
    if 7 in f:
        dims = tuple(signed64(d) for d in packed_varints(fields(one(f, 7)).get(1, [])))  # type: ignore[arg-type]
    else:
        dims = tuple(int(one(f, k, 1)) for k in (1, 2, 3, 4))  # type: ignore[arg-type]
    data = packed_numbers(f[5], "<f4") if 5 in f else packed_numbers(f.get(8, []), "<f8").astype(np.float32)
    if data.size != math.prod(dims):
        raise DeepLabError(f"a blob holds {data.size} values but its shape {dims} needs {math.prod(dims)}")
    return data.reshape(dims)


def read_caffemodel(path: str | Path) -> list[CaffeLayer]:
    """The layers of a caffemodel that carry blobs, in file order (both formats)."""
    path = Path(path)
    buf = memoryview(path.read_bytes())
    layers: list[CaffeLayer] = []
    try:
        for number, wire, value in iter_fields(buf):
            if wire != 2 or number not in (2, 100):
                continue  # net name, inputs, state, ... carry no weights
            f = fields(value)  # type: ignore[arg-type]
            if number == 100:
                name, kind, blobs = one(f, 1, b""), bytes(one(f, 2, b"")).decode(), f.get(7, [])  # type: ignore[arg-type]
            else:
                if 1 in f:
                    raise DeepLabError(f"{path}: V0 layer definitions (pre-2014 Caffe) are not supported")
                code = int(one(f, 5, 0))  # type: ignore[arg-type]
                name, kind, blobs = one(f, 4, b""), V1_TYPES.get(code, f"V1 type {code}"), f.get(6, [])
            if blobs:
                layers.append(CaffeLayer(bytes(name).decode(), kind, [_blob(b) for _, b in blobs]))  # type: ignore[arg-type]
    except (WireError, UnicodeDecodeError, KeyError) as exc:
        raise DeepLabError(f"{path}: not a readable caffemodel (truncated or corrupt: {exc})") from exc
    if not layers:
        raise DeepLabError(f"{path}: no layers with weights found (is this a .caffemodel? a .prototxt has none)")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DeepLabError(f"{path}: layer {dup!r} appears twice")
    return layers


def looks_like_caffemodel(path: str | Path) -> bool:
    """By name (``.caffemodel``), or by content: a NetParameter starting with its layers
    (field 100 or 2), possibly after the net's name (field 1)."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix == ".caffemodel":
        return True
    if p.suffix in (".meta", ".pb", ".index", ".onnx"):  # other protobufs that start alike
        return False
    try:
        with open(p, "rb") as f:
            head = memoryview(f.read(4096))
        key, pos = read_varint(head, 0, len(head))
        if key == (100 << 3 | 2):
            return True
        if key == (1 << 3 | 2):  # the name; the layers must follow
            length, pos = read_varint(head, pos, len(head))
            key, _ = read_varint(head, pos + length, len(head))
            return key in (2 << 3 | 2, 100 << 3 | 2)
    except (OSError, WireError):
        return False
    return False
