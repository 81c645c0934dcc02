"""Reader of TensorFlow's immutable sorted-table files (the LevelDB table format).

Both checkpoint formats use it: a V1 checkpoint *is* one such table (keys → serialized
``SavedTensorSlices``), a V2 checkpoint's ``.index`` is one (names → ``BundleEntryProto``).

Layout: data blocks, a meta-index block, an index block, and a 48-byte footer holding the
two block handles and the magic number. Every block is followed by a 1-byte compression
type and a masked CRC-32C of block + type. Block entries share key prefixes with their
predecessor. TensorFlow writes these tables uncompressed; a Snappy-compressed block is
reported as unsupported rather than misread.
"""

from __future__ import annotations

from collections.abc import Iterator

from .crc32c import crc32c, unmask
from .protowire import WireError, read_varint

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
_TRAILER = 5


class TableError(ValueError):
    """The bytes are not a readable table (truncated, corrupt or unsupported)."""


def is_table(buf: memoryview) -> bool:
    return len(buf) >= FOOTER_SIZE and int.from_bytes(buf[-8:], "little") == TABLE_MAGIC


def _handle(buf: memoryview, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return offset, size, pos


def _block(buf: memoryview, offset: int, size: int, verify: bool) -> memoryview:
    if offset + size + _TRAILER > len(buf) - FOOTER_SIZE + 1 or size < 4:
        raise TableError("a block lies outside the file (truncated?)")
    contents = buf[offset : offset + size]
    kind = buf[offset + size]
    if verify:
        stored = unmask(int.from_bytes(buf[offset + size + 1 : offset + size + 5], "little"))
        if crc32c(buf[offset : offset + size + 1]) != stored:
            raise TableError(f"checksum mismatch in the block at byte {offset} (the file is corrupt)")
    if kind == 1:
        raise TableError("Snappy-compressed table blocks are not supported (re-save the checkpoint uncompressed)")
    if kind != 0:
        raise TableError(f"unknown block compression type {kind}")
    return contents


def _entries(block: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    num_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 * (num_restarts + 1)
    if end < 0:
        raise TableError("block restart array is larger than the block")
    pos = 0
    key = b""
    while pos < end:
        shared, pos = read_varint(block, pos, end)
        unshared, pos = read_varint(block, pos, end)
        value_len, pos = read_varint(block, pos, end)
        if shared > len(key) or pos + unshared + value_len > end:
            raise TableError("malformed block entry")
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def iter_table(buf: memoryview, *, verify: bool = True) -> Iterator[tuple[bytes, memoryview]]:
    """Yield every ``(key, value)`` of a table in key order; values are views into ``buf``.

    Args:
        buf: the whole file.
        verify: check every block's CRC-32C (detects corruption, ~1 s per 200 MB).
    """
    if not is_table(buf):
        raise TableError("not a TensorFlow table file (bad magic number; truncated?)")
    try:
        footer_start = len(buf) - FOOTER_SIZE
        _, _, pos = _handle(buf, footer_start, len(buf) - 8)
        index_offset, index_size, _ = _handle(buf, pos, len(buf) - 8)
        index = _block(buf, index_offset, index_size, verify)
        for _, handle in _entries(index):
            offset, size, _ = _handle(handle, 0, len(handle))
            yield from _entries(_block(buf, offset, size, verify))
    except WireError as exc:
        raise TableError(f"malformed table ({exc})") from exc
