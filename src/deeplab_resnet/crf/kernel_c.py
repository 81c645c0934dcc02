"""The C kernel of our dense CRF (``dense_crf.c``): compiled on first use, loaded with ctypes.

This module is the kernel's loader and its Python face: :func:`library` compiles and loads it,
:class:`CLattice` builds and applies its permutohedral lattice, :func:`mean_field` runs its fused
iterations. :mod:`.c_meanfield` puts them together into a CRF.

The C file is plain C99 with optional OpenMP and needs no Python, numpy or torch headers, so any C
compiler builds it in about a second. It is compiled once per machine into
``$XDG_CACHE_HOME/deeplab_resnet/kernels/`` (the file name carries a hash of the source, the flags
and the CPU, so an edit or another machine sharing the home directory gets its own build), written
atomically, and loaded with :mod:`ctypes`, which releases the GIL during the calls.

When no compiler works, :func:`library` returns ``None`` and the CRF runs on the pure-PyTorch
lattice instead (slower on CPU, the same results up to rounding; a warning says so once). Set
``DEEPLAB_CRF_C_KERNEL=0`` to force that path (the older name ``DEEPLAB_CRF_NATIVE=0`` works too),
``CC`` to choose the compiler.

Arguments are not validated here beyond what keeps the C code inside its arrays (shapes and sizes
that must agree with the counts passed to C); :func:`deeplab_resnet.crf.dense_crf` checks the
user's input once, and ``dense_crf.c`` refuses coordinates it cannot place on its lattice.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..cache import cache_dir as user_cache_dir
from .params import MAX_FEATURE

SOURCE = Path(__file__).with_name("dense_crf.c")
# Tried in order; -ffp-contract=off keeps the lattice's float32 arithmetic exactly densecrf's.
_FLAG_SETS = (
    ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"],
    ["-O3", "-ffp-contract=off", "-fopenmp"],
    ["-O3", "-ffp-contract=off"],
)
_BASE_FLAGS = ["-std=c99", "-fPIC", "-shared", "-pthread", "-Wno-unknown-pragmas"]

_f32 = ctypes.POINTER(ctypes.c_float)
_i32 = ctypes.POINTER(ctypes.c_int32)


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``kernels/`` in the package's cache directory."""
    return user_cache_dir("kernels")


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` (may carry arguments, e.g. ``ccache gcc``), else cc or gcc."""
    if os.environ.get("CC"):
        cmd = shlex.split(os.environ["CC"])
        path = shutil.which(cmd[0]) if cmd else None
        return [path, *cmd[1:]] if path else None
    path = shutil.which("cc") or shutil.which("gcc")
    return [path] if path else None


def _target(source: bytes, cc: list[str], flags: list[str], cache: Path) -> Path:
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), " ".join(cc).encode(), _cpu_id().encode()]))
    return cache / f"dense_crf-{key.hexdigest()[:16]}.so"


def _compile(source: bytes, cc: list[str], *, rebuild: bool = False) -> Path | None:
    """Compile ``source`` with the first flag set that works; the library's path or ``None``.

    The library goes to :func:`cache_dir`; when that cannot be written (read-only home, say), to
    a fresh temporary directory, so the kernel still works, just compiled again by each process.
    """
    try:
        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryDirectory(dir=cache)
        probe.cleanup()
    except OSError:
        cache = Path(tempfile.mkdtemp(prefix="deeplab_resnet_kernels_"))
        atexit.register(shutil.rmtree, cache, ignore_errors=True)  # loaded libraries stay mapped
    for flags in _FLAG_SETS:
        target = _target(source, cc, flags, cache)
        if target.exists() and not rebuild:
            return target
        try:
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                src = Path(tmp) / "dense_crf.c"
                src.write_bytes(source)
                out = Path(tmp) / "dense_crf.so"
                cmd = [*cc, *flags, *_BASE_FLAGS, "-o", str(out), str(src), "-lm"]
                done = subprocess.run(cmd, capture_output=True, timeout=120)
                if done.returncode == 0 and out.exists():
                    os.replace(out, target)  # atomic: a concurrent process sees the whole file or none
                    return target
        except (OSError, subprocess.TimeoutExpired):  # no compiler, disk full, ...: try the next flags
            continue
    return None


def _load(path: Path) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(str(path))
    except OSError:  # a damaged or foreign file in the cache
        return None


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernel, compiling it on first use; ``None`` when disabled or no compiler works."""
    if "0" in (os.environ.get("DEEPLAB_CRF_C_KERNEL"), os.environ.get("DEEPLAB_CRF_NATIVE")):
        return None
    cc = _compiler()
    path = _compile(SOURCE.read_bytes(), cc) if cc else None
    lib = _load(path) if path is not None else None
    if lib is None and path is not None:  # the cached file does not load: build it again, once
        path = _compile(SOURCE.read_bytes(), cc, rebuild=True)
        lib = _load(path) if path is not None else None
    if lib is None:
        warnings.warn(
            "deeplab_resnet: could not compile the CPU CRF kernel (no working C compiler; set CC); "
            "using the slower pure-PyTorch CRF",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    lib.dcrf_lattice_new.restype = ctypes.c_void_p
    lib.dcrf_lattice_new.argtypes = [_f32, ctypes.c_int64, ctypes.c_int, _i32, ctypes.c_int, ctypes.c_int]
    lib.dcrf_lattice_free.argtypes = [ctypes.c_void_p]
    lib.dcrf_lattice_vertices.restype = ctypes.c_int64
    lib.dcrf_lattice_vertices.argtypes = [ctypes.c_void_p]
    lib.dcrf_lattice_export.argtypes = [ctypes.c_void_p, _i32, _f32, _i32]
    lib.dcrf_lattice_filter.argtypes = [ctypes.c_void_p, _f32, _f32, ctypes.c_int, ctypes.c_int]
    lib.dcrf_meanfield.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(_f32),
        _f32,
        _f32,
        _f32,
        ctypes.c_int64,
        ctypes.c_int,
        _i32,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
    ]
    return lib


def available() -> bool:
    """Whether the compiled CPU kernel can be used (compiles it on the first call)."""
    return library() is not None


def _threads(threads: int | None) -> int:
    if threads is not None:
        return max(1, int(threads))
    return torch.get_num_threads()


def _build_failure(features: np.ndarray) -> Exception:
    """Why ``dcrf_lattice_new`` refused ``features``: it rejects coordinates it cannot place exactly
    on its float32 grid, else it ran out of memory. Looked at only after a refusal."""
    if not np.isfinite(features).all() or np.abs(features).max() > MAX_FEATURE:
        return ValueError(f"lattice features must be finite and at most {MAX_FEATURE:.0f} in magnitude")
    return MemoryError(
        f"could not build a lattice of {features.shape[0]} points in {features.shape[1]}-D (out of memory)"
    )


def _ptr(a: np.ndarray, kind):
    return a.ctypes.data_as(kind)


class CLattice:
    """A permutohedral lattice built and applied by the C kernel.

    Args:
        features: ``P x d`` float32 lattice coordinates (already divided by the standard deviations).
        image_index: optional per-point image id when several images share one lattice.
        threads: OpenMP threads (default: torch's thread count).
        packed: one-word keys when the coordinates fit (fast); ``False`` forces the general path
            (the same lattice; used by the tests).
    """

    def __init__(
        self,
        features: np.ndarray,
        image_index: np.ndarray | None = None,
        threads: int | None = None,
        *,
        packed: bool = True,
    ):
        lib = library()
        if lib is None:
            raise RuntimeError("the C CRF kernel is not available")
        self._lib = lib
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        if self.features.ndim != 2 or self.features.shape[0] == 0 or not 1 <= self.features.shape[1] <= 14:
            raise ValueError(f"features must be P x d with P >= 1 and 1 <= d <= 14, got {self.features.shape}")
        if self.features.shape[0] * (self.features.shape[1] + 1) > 2**31 - 1:
            raise ValueError(f"too many points for one lattice: {self.features.shape[0]}")
        self.num_points, self.dim = self.features.shape
        img = None if image_index is None else np.ascontiguousarray(image_index, dtype=np.int32)
        if img is not None and (img.shape != (self.num_points,) or (img < 0).any()):
            raise ValueError(f"image_index must hold one non-negative id per point, got shape {img.shape}")
        handle = lib.dcrf_lattice_new(
            _ptr(self.features, _f32),
            self.num_points,
            self.dim,
            None if img is None else _ptr(img, _i32),
            int(packed),
            _threads(threads),
        )
        if not handle:
            raise _build_failure(self.features)
        self.handle = ctypes.c_void_p(handle)
        # read-only once built: filter and mean_field may use it from several threads at once
        self.num_vertices = int(lib.dcrf_lattice_vertices(self.handle))

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle:
            self._lib.dcrf_lattice_free(handle)
            self.handle = None

    def export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(vertex, weight, neighbours)``: ``P x (d+1)`` vertex ids and barycentric weights, and
        ``(d+1) x M x 2`` blur neighbours (``-1`` absent), as :class:`.permutohedral.Lattice` holds them."""
        k = self.dim + 1
        vertex = np.empty((self.num_points, k), np.int32)
        weight = np.empty((self.num_points, k), np.float32)
        nb = np.empty((k, self.num_vertices, 2), np.int32)
        self._lib.dcrf_lattice_export(self.handle, _ptr(vertex, _i32), _ptr(weight, _f32), _ptr(nb, _i32))
        return vertex, weight, nb

    def filter(self, values: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Filter ``values`` (``P x C`` or length ``P``), unnormalised, the point itself included."""
        v = np.ascontiguousarray(values, dtype=np.float32)
        if v.ndim not in (1, 2) or v.shape[0] != self.num_points or v.size == 0:
            raise ValueError(f"values must be P or P x C with P = {self.num_points} and C >= 1, got {v.shape}")
        flat = v.reshape(self.num_points, -1)
        out = np.empty_like(flat)
        rc = self._lib.dcrf_lattice_filter(
            self.handle, _ptr(flat, _f32), _ptr(out, _f32), flat.shape[1], _threads(threads)
        )
        if rc:
            raise MemoryError("out of memory while filtering")
        return out.reshape(v.shape)


def _mean_field_inputs(
    lattices: list[CLattice],
    norms: list[np.ndarray],
    weights: list[float],
    probs: np.ndarray,
    active: np.ndarray | None,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
    """:func:`mean_field`'s arrays as the C kernel reads them (contiguous float32 / int32), checked."""
    pr = np.ascontiguousarray(probs, dtype=np.float32)
    if pr.ndim != 2 or pr.shape[0] == 0:
        raise ValueError(f"probs must be L x P with L >= 1, got {pr.shape}")
    nl, n = pr.shape
    if not len(norms) == len(weights) == len(lattices):
        raise ValueError("mean_field needs one norm and one weight per lattice")
    if any(lat.num_points != n for lat in lattices) or not 0 < len(lattices) <= 8:
        raise ValueError("mean_field needs 1 to 8 lattices over the probabilities' points")
    nrm = [np.ascontiguousarray(x, dtype=np.float32).reshape(n) for x in norms]
    act = None if active is None else np.ascontiguousarray(active, dtype=np.int32).reshape(-1)
    if act is not None and (act.size == 0 or act.min() < 0 or act.max() >= nl or np.unique(act).size != act.size):
        raise ValueError(f"active must be distinct labels in [0, {nl}), got {act}")
    return pr, nrm, act


def mean_field(
    lattices: list[CLattice],
    norms: list[np.ndarray],
    weights: list[float],
    probs: np.ndarray,
    iterations: int,
    active: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Mean-field inference: with ``U = -log(clip(probs, 1e-5, 1))``, ``Q = softmax(-U)``, then
    ``iterations`` times ``Q = softmax(-U + sum_k w_k n_k K_k(n_k Q))``.

    Args:
        lattices: the kernels' lattices (over the same points).
        norms: per kernel, the per-point normalisation ``n_k`` (length ``P``).
        weights: per kernel, the Potts weight ``w_k``.
        probs: ``L x P`` float32 class probabilities (label-major, like a ``C x H x W`` output).
        iterations: mean-field iterations.
        active: labels to filter (the others keep their unary), ``None`` for all.
        threads: OpenMP threads (default: torch's thread count).

    Returns:
        ``L x P`` float32 marginals.
    """
    lib = library()
    if lib is None:
        raise RuntimeError("the C CRF kernel is not available")
    pr, nrm, act = _mean_field_inputs(lattices, norms, weights, probs, active)
    nl, n = pr.shape
    out = np.empty_like(pr)
    handles = (ctypes.c_void_p * len(lattices))(*[lat.handle.value for lat in lattices])
    norm_ptrs = (_f32 * len(nrm))(*[_ptr(x, _f32) for x in nrm])
    w = np.asarray(weights, dtype=np.float32)
    rc = lib.dcrf_meanfield(
        len(lattices),
        handles,
        norm_ptrs,
        _ptr(w, _f32),
        _ptr(pr, _f32),
        _ptr(out, _f32),
        n,
        nl,
        None if act is None else _ptr(act, _i32),
        nl if act is None else act.size,
        int(iterations),
        _threads(threads),
    )
    if rc:
        raise MemoryError("out of memory in mean-field inference")
    return out
