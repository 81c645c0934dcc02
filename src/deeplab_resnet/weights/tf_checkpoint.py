"""Read TensorFlow checkpoints without TensorFlow: the legacy V1 file and the V2 bundle.

* **V1** (``tf.train.Saver(write_version=V1)``, the TF re-implementation's
  ``deeplab_resnet.ckpt``): one table file. The empty key holds a ``SavedTensorSlices`` whose
  ``meta`` lists every tensor (name, shape, dtype); every other key holds one slice of one
  tensor as a ``SavedSlice`` (name, extent, ``TensorProto`` with the values).
* **V2** (``model.ckpt-STEP.index`` + ``.data-00000-of-00001``): the ``.index`` table maps
  each name to a ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC-32C);
  the values are raw little-endian bytes in the data shard.

Protocol-buffer field numbers (from TensorFlow's ``.proto`` files) are named below. Arrays
come back in TensorFlow's layout (convolution weights HWIO); nothing is transposed here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import DeepLabError
from .crc32c import crc32c, unmask
from .protowire import WireError, fields, one, packed_numbers, packed_varints, signed64
from .tf_table import TABLE_MAGIC, TableError, iter_table

# DataType enum → numpy dtype (types a weight checkpoint may hold).
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 19: "<f2"}

# SavedTensorSlices: meta 1, data 2. SavedTensorSliceMeta: tensor 1. SavedSliceMeta: name 1,
# shape 2, type 3. SavedSlice: name 1, slice 2, data 3. TensorSliceProto: extent 1 (start 1,
# length 2). TensorShapeProto: dim 2 (size 1), unknown_rank 3. TensorProto: dtype 1,
# tensor_content 4, float_val 5, double_val 6, int_val 7, int64_val 10, bool_val 11, half_val 13.
# BundleHeaderProto: num_shards 1, endianness 2. BundleEntryProto: dtype 1, shape 2,
# shard_id 3, offset 4, size 5, crc32c 6, slices 7.

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def _shape(msg: memoryview) -> tuple[int, ...]:
    f = fields(msg)
    if one(f, 3, 0):
        raise DeepLabError("a tensor of unknown rank in the checkpoint")
    return tuple(signed64(int(one(fields(d), 1, 0))) for _, d in f.get(2, []))  # type: ignore[arg-type]


def _dtype(code: int, name: str) -> np.dtype:
    if code not in DTYPES:
        raise DeepLabError(f"tensor {name!r} has TensorFlow dtype {code}, which weight files do not use")
    return np.dtype(DTYPES[code])


def _extent(slice_msg: memoryview | None, shape: tuple[int, ...]) -> tuple[slice, ...]:
    if slice_msg is None:
        return tuple(slice(0, n) for n in shape)
    extents = fields(slice_msg).get(1, [])
    if not extents:
        return tuple(slice(0, n) for n in shape)
    if len(extents) != len(shape):
        raise DeepLabError("a tensor slice does not match its tensor's rank")
    out = []
    for (_, e), n in zip(extents, shape):
        ef = fields(e)  # type: ignore[arg-type]
        start = int(one(ef, 1, 0))  # type: ignore[arg-type]
        length = int(one(ef, 2, n - start))  # type: ignore[arg-type]
        if start < 0 or start + length > n:
            raise DeepLabError("a tensor slice lies outside its tensor")
        out.append(slice(start, start + length))
    return tuple(out)


def _tensor_values(proto: memoryview, dtype: np.dtype, count: int, name: str) -> np.ndarray:
    f = fields(proto)
    content = one(f, 4)
    if content is not None and len(content):  # type: ignore[arg-type]
        values = np.frombuffer(content, dtype=dtype)  # type: ignore[arg-type]
    elif dtype == np.float32:
        values = packed_numbers(f.get(5, []), "<f4")
    elif dtype == np.float64:
        values = packed_numbers(f.get(6, []), "<f8")
    elif dtype.kind in "iu?":
        raw = packed_varints(f.get(10 if dtype.itemsize == 8 else (11 if dtype.kind == "?" else 7), []))
        values = np.array([signed64(v) for v in raw], dtype=dtype)
    else:
        raise DeepLabError(f"tensor {name!r}: unsupported value encoding in a V1 checkpoint")
    if values.size == 1 and count > 1:  # TensorProto may store a constant once
        values = np.full(count, values[0], dtype=dtype)
    if values.size != count:
        raise DeepLabError(f"tensor {name!r} holds {values.size} values where its slice needs {count}")
    return values


def read_v1(path: str | Path, *, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a V1 checkpoint file, by name, in TensorFlow's layout."""
    path = Path(path)
    buf = memoryview(path.read_bytes())
    try:
        metas: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        arrays: dict[str, np.ndarray] = {}
        filled: dict[str, int] = {}
        for key, value in iter_table(buf, verify=verify):
            saved = fields(value)
            if key == b"":
                meta = one(saved, 1)
                for _, t in fields(meta).get(1, []):  # type: ignore[arg-type]
                    tf_ = fields(t)  # type: ignore[arg-type]
                    name = bytes(one(tf_, 1, b"")).decode()  # type: ignore[arg-type]
                    metas[name] = (_shape(one(tf_, 2, b"")), _dtype(int(one(tf_, 3, 0)), name))  # type: ignore[arg-type]
                continue
            data = one(saved, 2)
            if data is None:
                continue
            sf = fields(data)  # type: ignore[arg-type]
            name = bytes(one(sf, 1, b"")).decode()  # type: ignore[arg-type]
            if name not in metas:
                raise DeepLabError(
                    f"{path}: tensor {name!r} has data but no entry in the checkpoint's table of contents"
                )
            shape, dtype = metas[name]
            region = _extent(one(sf, 2), shape)  # type: ignore[arg-type]
            count = math.prod(s.stop - s.start for s in region)
            values = _tensor_values(one(sf, 3, b""), dtype, count, name)  # type: ignore[arg-type]
            if count == math.prod(shape):
                arrays[name] = values.reshape(shape)
            else:
                arrays.setdefault(name, np.zeros(shape, dtype=dtype))[region] = values.reshape(
                    [s.stop - s.start for s in region]
                )
            filled[name] = filled.get(name, 0) + count
    except (TableError, WireError, UnicodeDecodeError) as exc:
        raise DeepLabError(f"{path}: not a readable TensorFlow V1 checkpoint ({exc})") from exc
    if not metas:
        raise DeepLabError(f"{path}: a TensorFlow table, but not a V1 checkpoint (no tensor list)")
    for name, (shape, _) in metas.items():
        if filled.get(name, 0) != math.prod(shape):
            raise DeepLabError(f"{path}: tensor {name!r} is incomplete in the checkpoint (truncated file?)")
    return arrays


def v2_prefix(spec: str | Path) -> Path | None:
    """The checkpoint prefix a user's argument means, if it names a V2 checkpoint.

    Accepts the prefix itself (``model.ckpt-20000``, as the original scripts took it), the
    ``.index``, a ``.data-*`` or ``.meta`` file, or a directory with a ``checkpoint`` file.
    """
    p = Path(spec)
    if p.is_dir():
        state = p / "checkpoint"
        if not state.is_file():
            return None
        m = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(errors="replace"), re.M)
        if not m:
            return None
        target = Path(m.group(1))
        p = target if target.is_absolute() else p / target
    text = str(p)
    for suffix in (".index", ".meta"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    text = _DATA_SUFFIX.sub("", text)
    prefix = Path(text)
    index = Path(text + ".index")
    return prefix if index.is_file() else None


def read_v2(prefix: str | Path, *, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a V2 checkpoint (``prefix.index`` + data shards), by name."""
    prefix = Path(prefix)
    index_path = Path(str(prefix) + ".index")
    try:
        index = memoryview(index_path.read_bytes())
        entries: list[tuple[str, dict]] = []
        num_shards = None
        for key, value in iter_table(index, verify=verify):
            f = fields(value)
            if key == b"":
                num_shards = int(one(f, 1, 1))  # type: ignore[arg-type]
                if one(f, 2, 0):
                    raise DeepLabError(f"{index_path}: big-endian checkpoints are not supported")
                continue
            entries.append((key.decode(), f))
    except (TableError, WireError, UnicodeDecodeError) as exc:
        raise DeepLabError(f"{index_path}: not a readable TensorFlow V2 checkpoint index ({exc})") from exc
    if num_shards is None:
        raise DeepLabError(f"{index_path}: a TensorFlow table, but not a checkpoint index (no header)")
    shards: dict[int, memoryview] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, f in entries:
        if f.get(7):
            raise DeepLabError(f"{index_path}: tensor {name!r} is partitioned; partitioned variables are not supported")
        dtype = _dtype(int(one(f, 1, 0)), name)  # type: ignore[arg-type]
        shape = _shape(one(f, 2, b""))  # type: ignore[arg-type]
        shard, offset, size = (int(one(f, k, 0)) for k in (3, 4, 5))  # type: ignore[arg-type]
        if shard not in shards:
            data_path = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
            if not data_path.is_file():
                raise DeepLabError(f"checkpoint data file missing: {data_path}")
            shards[shard] = memoryview(data_path.read_bytes())
        buf = shards[shard]
        if size != math.prod(shape) * dtype.itemsize:
            raise DeepLabError(f"{index_path}: tensor {name!r} has {size} bytes for shape {shape}")
        if offset + size > len(buf):
            raise DeepLabError(f"{prefix}: tensor {name!r} lies past the end of its data file (truncated?)")
        raw = buf[offset : offset + size]
        stored = one(f, 6)
        if verify and stored is not None and crc32c(raw) != unmask(int(stored)):  # type: ignore[arg-type]
            raise DeepLabError(f"{prefix}: checksum mismatch in tensor {name!r} (the data file is corrupt)")
        arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return arrays


def is_v1(path: str | Path) -> bool:
    """A table file that is not a V2 index: the legacy single-file checkpoint."""
    p = Path(path)
    if not p.is_file() or p.suffix == ".index":
        return False
    try:
        with open(p, "rb") as f:
            f.seek(0, 2)
            if f.tell() < 48:
                return False
            f.seek(-8, 2)
            return int.from_bytes(f.read(8), "little") == TABLE_MAGIC
    except OSError:
        return False
