"""Reading an uploaded image: a bounded request body, parsed in memory.

The body is read chunk by chunk and refused as soon as it passes the limit, so a huge (or
endless) upload costs at most the limit in memory. The multipart form is then parsed from memory:
uploads never touch the disk, under the client's name or any other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

try:  # the package's import name since python-multipart 0.0.13
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # older releases
    from multipart.multipart import MultipartParser, parse_options_header


# The parser logs each malformed byte it meets; the client hears of a malformed form in its 400.
for _name in ("python_multipart", "multipart"):
    logging.getLogger(_name).setLevel(logging.ERROR)

# A form is the image and perhaps a few fields a client adds; thousands of parts are an attack on the parser.
MAX_PARTS = 16


class UploadError(Exception):
    """A request the server refuses: ``status`` (an HTTP 4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def read_bounded(
    chunks: AsyncIterator[bytes], declared_length: str | None, limit: int, *, idle_s: float | None = None
) -> bytes:  # fmt: skip
    """The whole body, or 413 once it is known to be over ``limit`` bytes (from Content-Length, or
    while reading), or 408 when nothing arrives for ``idle_s`` seconds.

    A body within the limit is read to its end even when the request will be refused (a full
    queue): an answer sent while the client is still uploading can reach it as a reset connection.
    """
    too_large = UploadError(413, f"the upload is larger than the server's limit of {limit / 1e6:g} MB")
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise too_large
    body = bytearray()
    arriving = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(arriving.__anext__(), idle_s)
        except StopAsyncIteration:
            return bytes(body)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
            raise UploadError(408, f"the upload sent nothing for {idle_s:g} s; send it again") from None
        body += chunk
        if len(body) > limit:
            raise too_large


def form_file(body: bytes, content_type: str | None, field: str) -> tuple[bytes, str]:
    """The content and file name of the form field ``field`` of a multipart/form-data body."""
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(415, f"send the image as a multipart/form-data upload in the field '{field}'")
    parts = _parse_parts(body, boundary)
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name", b"").decode("utf-8", "replace") == field:
            return bytes(data), disposition.get(b"filename", b"").decode("utf-8", "replace")
    raise UploadError(400, f"no form field '{field}': send the image as -F {field}=@photo.jpg")


def _parse_parts(body: bytes, boundary: bytes) -> list[tuple[dict[bytes, bytes], bytearray]]:
    """``(headers, data)`` of every part (header names lower-cased); 400 past :data:`MAX_PARTS`."""
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header = {"field": b"", "value": b""}

    def on_part_begin() -> None:
        if len(parts) == MAX_PARTS:
            raise UploadError(400, f"more than {MAX_PARTS} form fields: send the image alone, in the field 'image'")
        parts.append(({}, bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        parts[-1][0][header["field"].lower()] = header["value"]
        header["field"] = header["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    callbacks = {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data,
    }  # fmt: skip
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # the parser's errors differ between releases; all mean a malformed form
        raise UploadError(400, f"malformed multipart/form-data body ({type(exc).__name__})") from exc
    return parts
