"""CRC-32C (Castagnoli), as TensorFlow's checkpoint and table formats use it, in numpy.

No compiled dependency: the data is cut into many equal chunks whose CRC registers are
advanced together, one byte column at a time (vectorised across chunks), then combined with
the GF(2) "advance over n zero bytes" operator. About 1 s per 200 MB on one core.
"""

from __future__ import annotations

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _zero_byte(reg: int) -> int:
    return _TABLE_LIST[reg & 0xFF] ^ (reg >> 8)


def _apply(matrix: list[int], reg: int) -> int:
    out = 0
    for bit in range(32):
        if reg >> bit & 1:
            out ^= matrix[bit]
    return out


# _POWERS[k] is the register map (a GF(2) matrix, as its 32 columns) of feeding 2**k zero bytes.
_POWERS: list[list[int]] = [[_zero_byte(1 << bit) for bit in range(32)]]


def _power(k: int) -> list[int]:
    while len(_POWERS) <= k:
        last = _POWERS[-1]
        _POWERS.append([_apply(last, col) for col in last])
    return _POWERS[k]


def _shift(reg: int, n: int) -> int:
    """The register after feeding ``n`` zero bytes."""
    k = 0
    while n:
        if n & 1:
            reg = _apply(_power(k), reg)
        n >>= 1
        k += 1
    return reg


_BYTE_TABLES: dict[int, np.ndarray] = {}


def _apply_vec(k: int, regs: np.ndarray) -> np.ndarray:
    """``_power(k)`` applied to every register: four 256-entry lookups instead of 32 bit tests."""
    if k not in _BYTE_TABLES:
        cols = np.array(_power(k), dtype=np.uint32)
        x = np.arange(256, dtype=np.uint32)
        tables = np.zeros((4, 256), dtype=np.uint32)
        for b in range(4):
            for bit in range(8):
                tables[b] ^= np.where((x >> np.uint32(bit)) & np.uint32(1), cols[8 * b + bit], np.uint32(0))
        _BYTE_TABLES[k] = tables
    t = _BYTE_TABLES[k]
    as_bytes = regs.view(np.uint8).reshape(-1, 4)  # little-endian: byte b is bits 8b..8b+7
    return t[0][as_bytes[:, 0]] ^ t[1][as_bytes[:, 1]] ^ t[2][as_bytes[:, 2]] ^ t[3][as_bytes[:, 3]]


_CHUNK_LOG2 = 8  # short chunks: few (overhead-bound) loop steps, many lanes per step
_CHUNK = 1 << _CHUNK_LOG2
_CHUNKS = 65536  # a 16 MiB piece at a time keeps the temporary copy small


def _piece_register(piece: np.ndarray) -> int:
    """The CRC register of ``piece`` (length _CHUNK * k) started from 0, no final xor."""
    k = len(piece) // _CHUNK
    cols = piece.reshape(k, _CHUNK).T.copy()  # row j holds byte j of every chunk
    regs = np.zeros(k, dtype=np.uint32)
    for j in range(_CHUNK):
        regs = _TABLE[(regs ^ cols[j]) & np.uint32(0xFF)] ^ (regs >> np.uint32(8))
    # Combine pairwise: reg(A||B) = Z^len(B) reg(A) ^ reg(B); pad to a power of two in front
    # with zero registers (zero bytes fed to a zero register leave it zero).
    size = 1 << (k - 1).bit_length()
    regs = np.concatenate([np.zeros(size - k, dtype=np.uint32), regs])
    level = _CHUNK_LOG2
    while len(regs) > 1:
        regs = _apply_vec(level, np.ascontiguousarray(regs[0::2])) ^ regs[1::2]
        level += 1
    return int(regs[0])


def crc32c(data: bytes | memoryview | np.ndarray, crc: int = 0) -> int:
    """The CRC-32C of ``data`` (continuing from a previous ``crc`` if given)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    reg = crc ^ 0xFFFFFFFF
    pos = 0
    step = _CHUNK * _CHUNKS
    while len(buf) - pos >= _CHUNK * 16:  # vectorise only when there is enough to share
        n = min(step, (len(buf) - pos) // _CHUNK * _CHUNK)
        reg = _shift(reg, n) ^ _piece_register(buf[pos : pos + n])
        pos += n
    for byte in buf[pos:].tobytes():
        reg = _TABLE_LIST[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    return reg ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Undo LevelDB/TensorFlow's CRC masking (stored CRCs are rotated and offset)."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF
