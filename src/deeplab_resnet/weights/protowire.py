"""A minimal reader of the protocol-buffer wire format, enough for weight files.

Weight files are large (a ResNet-101 caffemodel is 176 MB of packed floats). Parsing them
with generated message classes would copy every float into a Python container; walking the
wire format by hand lets us hand back *views* of the packed arrays (``numpy.frombuffer``)
and keeps the reader free of any schema compiler. Field numbers come from the callers.

Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 (3/4, groups, are rejected).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class WireError(ValueError):
    """The bytes are not a well-formed protocol buffer."""


def read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``: (value, position after it)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint too long")


def iter_fields(buf: memoryview, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field number, wire type, value)`` for each field of a message.

    The value is an int for varint/fixed fields, a ``memoryview`` slice for length-delimited
    ones (no copy).
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise WireError("field number 0")
        if wire == 0:
            value, pos = read_varint(buf, pos, end)
        elif wire == 2:
            length, pos = read_varint(buf, pos, end)
            if pos + length > end:
                raise WireError("length-delimited field runs past the end of its message")
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        else:
            raise WireError(f"unsupported wire type {wire}")
        yield field, wire, value


def fields(buf: memoryview) -> dict[int, list[tuple[int, object]]]:
    """All fields of a (small) message grouped by number: ``{field: [(wire, value), ...]}``."""
    out: dict[int, list[tuple[int, object]]] = {}
    for field, wire, value in iter_fields(buf):
        out.setdefault(field, []).append((wire, value))
    return out


def packed_varints(entries: list[tuple[int, object]]) -> list[int]:
    """A repeated integer field, packed (wire type 2) or not (wire type 0), in order."""
    values: list[int] = []
    for wire, value in entries:
        if wire == 0:
            values.append(int(value))  # type: ignore[arg-type]
        elif wire == 2:
            view = value  # type: memoryview
            pos = 0
            while pos < len(view):  # type: ignore[arg-type]
                v, pos = read_varint(view, pos, len(view))  # type: ignore[arg-type]
                values.append(v)
        else:
            raise WireError(f"integer field with wire type {wire}")
    return values


def signed64(value: int) -> int:
    """A varint read as an int64 (negative numbers are 10-byte two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def packed_numbers(entries: list[tuple[int, object]], dtype: str) -> np.ndarray:
    """A repeated fixed-width field (float ``<f4``, double ``<f8``) as one array.

    A single packed run is returned as a zero-copy view; unpacked or split runs are joined.
    """
    dt = np.dtype(dtype)
    parts = []
    for wire, value in entries:
        if wire == 2:
            if len(value) % dt.itemsize:  # type: ignore[arg-type]
                raise WireError(f"packed {dt} field of {len(value)} bytes")  # type: ignore[arg-type]
            parts.append(np.frombuffer(value, dtype=dt))  # type: ignore[arg-type]
        elif (wire == 5 and dt.itemsize == 4) or (wire == 1 and dt.itemsize == 8):
            raw = int(value).to_bytes(dt.itemsize, "little")  # type: ignore[arg-type]
            parts.append(np.frombuffer(raw, dtype=dt))
        else:
            raise WireError(f"{dt} field with wire type {wire}")
    if not parts:
        return np.zeros(0, dt)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def one(entries: dict[int, list[tuple[int, object]]], field: int, default: object = None) -> object:
    """The last value of a singular field (protobuf's "last one wins"), or ``default``."""
    values = entries.get(field)
    return values[-1][1] if values else default
