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


def _compose(a: list[int], b: list[int]) -> list[int]:
    """The matrix of ``a(b(x))``."""
    return [_apply(a, col) for col in b]


_ZERO1 = [_zero_byte(1 << bit) for bit in range(32)]


def _zeros_operator(n: int) -> list[int]:
    """The register map of feeding ``n`` zero bytes (linear over GF(2)), by squaring."""
    result = [1 << bit for bit in range(32)]
    power = _ZERO1
    while n:
        if n & 1:
            result = _compose(power, result)
        n >>= 1
        if n:
            power = _compose(power, power)
    return result


def _apply_vec(matrix: list[int], regs: np.ndarray) -> np.ndarray:
    out = np.zeros_like(regs)
    for bit in range(32):
        out ^= np.where((regs >> np.uint32(bit)) & np.uint32(1), np.uint32(matrix[bit]), np.uint32(0))
    return out


_CHUNK = 1024
_CHUNKS = 16384  # a 16 MiB piece at a time keeps the temporary copy small


def _piece_register(piece: np.ndarray) -> int:
    """The CRC register of ``piece`` (length _CHUNK * k) started from 0, no final xor."""
    k = len(piece) // _CHUNK
    cols = piece.reshape(k, _CHUNK).T.copy()  # column j holds byte j of every chunk
    regs = np.zeros(k, dtype=np.uint32)
    for j in range(_CHUNK):
        regs = _TABLE[(regs ^ cols[j]) & np.uint32(0xFF)] ^ (regs >> np.uint32(8))
    # Combine pairwise: reg(A||B) = Z^len(B) reg(A) ^ reg(B); pad to a power of two in front
    # with zero registers (zero bytes fed to a zero register leave it zero).
    size = 1 << (k - 1).bit_length()
    regs = np.concatenate([np.zeros(size - k, dtype=np.uint32), regs])
    length = _CHUNK
    while len(regs) > 1:
        shift = _zeros_operator(length)
        regs = _apply_vec(shift, regs[0::2]) ^ regs[1::2]
        length *= 2
    return int(regs[0])


def crc32c(data: bytes | memoryview | np.ndarray, crc: int = 0) -> int:
    """The CRC-32C of ``data`` (continuing from a previous ``crc`` if given)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    reg = crc ^ 0xFFFFFFFF
    pos = 0
    step = _CHUNK * _CHUNKS
    while len(buf) - pos >= _CHUNK * 16:  # vectorise only when there is enough to share
        n = min(step, (len(buf) - pos) // _CHUNK * _CHUNK)
        reg = _apply(_zeros_operator(n), reg) ^ _piece_register(buf[pos : pos + n])
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
