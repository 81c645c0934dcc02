"""Read the original's intermediate ``.npy`` weight dictionaries without trusting pickle.

The TF re-implementation's ``convert.py`` saved ``{layer: {param: array}}`` with
``np.save``, which pickles the dict. ``np.load(allow_pickle=True)`` would run whatever a
pickle says, i.e. arbitrary code from a downloaded file. Here the pickle goes through an
unpickler that can only build numpy arrays, dtypes, dicts, lists, strings and numbers: any
other callable (``os.system``, ``builtins.eval``, ...) is refused *before* it is called.
Files written by Python 2 (latin-1 byte strings) are read too.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ..errors import DeepLabError

NPY_MAGIC = b"\x93NUMPY"

# (module, name) pairs a pickled dict of numpy arrays needs, and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell a bytes object
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        return super().find_class(module, name)


def is_npy(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(6) == NPY_MAGIC
    except OSError:
        return False


def read_npy_dict(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{layer: {param: array}}`` from an ``np.save``-d dict, loaded without running code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in header:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, dtype = header[version](f)
            if dtype.kind != "O" or shape != ():
                raise DeepLabError(f"{path}: a plain .npy array, not a {{layer: {{param: array}}}} weight dictionary")
            obj = _ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DeepLabError(f"{path}: unsafe or damaged pickle in the .npy file ({exc})") from exc
    except (ValueError, EOFError, OSError, AttributeError, TypeError, IndexError) as exc:
        raise DeepLabError(f"{path}: not a readable .npy weight dictionary ({exc})") from exc
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise DeepLabError(f"{path}: expected a {{layer: {{param: array}}}} dictionary, found {type(obj).__name__}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer, params in obj.items():
        layer = layer.decode("latin1") if isinstance(layer, bytes) else str(layer)
        out[layer] = {}
        for param, value in params.items():
            param = param.decode("latin1") if isinstance(param, bytes) else str(param)
            if not isinstance(value, np.ndarray):
                raise DeepLabError(f"{path}: {layer}/{param} is a {type(value).__name__}, not an array")
            out[layer][param] = value
    return out
