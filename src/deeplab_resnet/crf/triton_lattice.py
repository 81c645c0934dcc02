"""Our dense CRF on the GPU: the permutohedral lattice's splat, blur and slice as Triton kernels.

The model of :mod:`.meanfield_rules`, on the lattices of :mod:`.permutohedral` (built there in
torch, once per batch, and shared by every iteration and every label). What runs per iteration is
Triton, in one format: a fixed-width sparse matrix (:class:`Ell`, "ELLPACK") applied to a
``rows x labels`` matrix, ``out[r] = sum_k weight[r, k] * x[index[r, k]]``: a gather, with no
atomics, so results are deterministic.

- **splat** (points -> vertices): each vertex sums its (point, corner) entries, which
  :func:`.permutohedral.build_lattice` already sorts by vertex. Runs are uneven (a flat colour
  region sends a thousand pixels to one bilateral vertex), so a run longer than
  :data:`SPLAT_WIDTH` is cut into segments whose sums are written after the points' values in
  one workspace (:class:`Splat`; again for runs of many segments), and the last launch sums every
  vertex's run from points and segment sums alike: short runs, most of them, are read once.
- **blur**: one ``[1/2, 1, 1/2]`` pass per lattice direction over the precomputed neighbours.
- **slice + Potts + unary + softmax**: one fused kernel per iteration reads both lattices'
  blurred values at each pixel's simplex corners, adds ``-U``, takes the softmax over labels in
  registers and writes the next ``Q`` (only the labels that are filtered, except at the end).

The normalisation ``n`` (and the kernel weight and ``alpha`` for the slice) are folded into the
splat and slice weights once. A batch is one lattice per kind, keyed by image (no blur crosses
from one image to another), so images of different sizes share every launch. The same proven label pruning as the other kernels applies (over the whole batch).

Cost model (to check a GPU measurement against a roofline). Per iteration, in units of one row of
``C`` float32 labels (``4 C`` bytes; 84 for VOC's 21), for ``P`` pixels and a lattice of ``M``
vertices with ``d + 1`` corners: splat reads ``P (d+1)`` rows and writes ``M``, the blur reads
``3 M`` and writes ``M`` per direction, the fused step reads ``-U`` (``P``) and ``P (d+1)`` rows per
lattice and writes ``Q`` (``P``). Measured lattice sizes on a 500x281 VOC image (deeplab-resnet
preset): bilateral ``d`` = 5, ``M`` = 0.61 P; position ``d`` = 2, ``M`` = 1.16 P. That is ~50 P rows,
0.79 GB per 500x375 image and iteration when no gather hits the cache, and ~22 P rows (0.35 GB)
when every row is read once (neighbouring pixels share corners and splat runs follow pixel order,
so many gathers hit L2). At an H100's ~3 TB/s: 0.12-0.26 ms per image and iteration, 1.2-2.6 ms
for 10, plus the lattice construction (torch: sorts and searches, once per batch) and the index
tables (8 bytes per slot, ~10% more). The 5 ms per image target at batch >= 8 leaves room for
gathers reaching only part of the peak; ``benchmarks/crf_roofline.py`` measures it (per-iteration and
setup time apart). Launches: ``(d_b + 1) + (d_g + 1) + 1 + splat levels`` (~14) per iteration,
each over the whole batch.

``triton`` is optional (extra ``[gpu-crf]``): this module imports without it, and the kernels are
compiled on first use. With ``TRITON_INTERPRET=1`` set before that first use, Triton's interpreter
runs them on CPU tensors (slowly): that is how the tests check them without a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from dataclasses import dataclass

import torch

from . import permutohedral
from .meanfield_rules import UNARY_CLIP, labels_worth_filtering, may_prune, potts_gain, symmetric_norm
from .params import CRFParams

# Slots per splat row: a run of a vertex's entries longer than this is summed in segments first.
SPLAT_WIDTH = 8
# Rows per program (GPU); the interpreter runs one Python step per program, so it gets larger blocks.
BLOCK_ROWS = 64
BLOCK_ROWS_INTERPRETED = 1024
INSTALL_HINT = 'the Triton CRF kernel needs the triton package: pip install "deeplab_resnet[gpu-crf]"'


def available() -> bool:
    """Whether ``triton`` is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (None)
        return False


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET=1``): the kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def runs_on(device: torch.device) -> bool:
    """Whether the kernels can run on ``device``: CUDA, or the CPU under the interpreter."""
    return available() and (device.type == "cuda" or (device.type == "cpu" and interpreting()))


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """The kernels ``(ell_gather, meanfield_step)``; ``triton.jit`` chooses the interpreter when it
    decorates, so the kernels are made here, on first use, once per mode."""
    import triton
    import triton.language as tl

    return _ell_gather(triton, tl), _meanfield_step(triton, tl)


def _ell_gather(triton, tl):
    """``out[r, :C] = sum_k weight[r, k] * x[index[r, k], :C]`` (slots with index -1 skipped)."""

    @triton.jit
    def ell_gather(x, index, weight, out, rows, cols, K: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.arange(0, BLOCK_C)
        rmask = r < rows
        cmask = c < cols
        acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
        for k in tl.static_range(K):
            src = tl.load(index + r * K + k, mask=rmask, other=-1)
            w = tl.load(weight + r * K + k, mask=rmask, other=0.0)
            ok = (src >= 0)[:, None] & cmask[None, :]
            v = tl.load(x + src.to(tl.int64)[:, None] * cols + c[None, :], mask=ok, other=0.0)
            acc += w[:, None] * v
        tl.store(out + r.to(tl.int64)[:, None] * cols + c[None, :], acc, mask=rmask[:, None] & cmask[None, :])

    return ell_gather


def _meanfield_step(triton, tl):
    """One mean-field step per pixel: ``Q = softmax(-U + message)``, the message sliced from both
    lattices' blurred values (weights include n, w and alpha) at the filtered labels' columns
    (``slot_of[c]``, -1 for a label not filtered). Writes the filtered labels' ``Q`` (the next
    splat's input), and all of ``Q`` when ``WRITE_ALL``. Without ``HAS_MESSAGE``: ``softmax(-U)``."""

    @triton.jit
    def meanfield_step(
        neg_unary, q, q_active, slot_of, idx_a, w_a, blur_a, idx_b, w_b, blur_b,
        rows, labels, active,
        HAS_MESSAGE: tl.constexpr, WRITE_ALL: tl.constexpr, KA: tl.constexpr, KB: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.arange(0, BLOCK_C)
        rmask = r < rows
        cmask = c < labels
        at = r.to(tl.int64)[:, None] * labels + c[None, :]
        energy = tl.load(neg_unary + at, mask=rmask[:, None] & cmask[None, :], other=0.0)
        slot = tl.load(slot_of + c, mask=cmask, other=-1)
        if HAS_MESSAGE:  # slice both lattices at each pixel's corners (Potts: the message adds to -U)
            ok = rmask[:, None] & (slot >= 0)[None, :]
            for k in tl.static_range(KA):
                v = tl.load(idx_a + r * KA + k, mask=rmask, other=0)
                w = tl.load(w_a + r * KA + k, mask=rmask, other=0.0)
                energy += w[:, None] * tl.load(
                    blur_a + v.to(tl.int64)[:, None] * active + slot[None, :], mask=ok, other=0.0
                )
            for k in tl.static_range(KB):
                v = tl.load(idx_b + r * KB + k, mask=rmask, other=0)
                w = tl.load(w_b + r * KB + k, mask=rmask, other=0.0)
                energy += w[:, None] * tl.load(
                    blur_b + v.to(tl.int64)[:, None] * active + slot[None, :], mask=ok, other=0.0
                )
        energy = tl.where(cmask[None, :], energy, float("-inf"))
        e = tl.exp(energy - tl.max(energy, axis=1)[:, None])
        out = e / tl.sum(e, axis=1)[:, None]
        if WRITE_ALL:
            tl.store(q + at, out, mask=rmask[:, None] & cmask[None, :])
        ok = rmask[:, None] & (slot >= 0)[None, :]
        tl.store(q_active + r.to(tl.int64)[:, None] * active + slot[None, :], out, mask=ok)

    return meanfield_step


def _grid_block(rows: int) -> tuple[tuple[int], int]:
    block = BLOCK_ROWS_INTERPRETED if interpreting() else BLOCK_ROWS
    return (max(1, math.ceil(rows / block)),), block


def _block_cols(cols: int) -> int:
    return max(2, 1 << (cols - 1).bit_length())


@dataclass
class Ell:
    """A fixed-width sparse matrix: ``out[r] = sum_k weight[r, k] * x[index[r, k]]`` (``index`` -1: empty slot).

    Attributes:
        index: ``rows x K`` int32 row indices into the input.
        weight: ``rows x K`` float32.
    """

    index: torch.Tensor
    weight: torch.Tensor

    @property
    def rows(self) -> int:
        return self.index.shape[0]

    @property
    def width(self) -> int:
        return self.index.shape[1]

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Apply to ``x`` (``inputs x C`` float32, contiguous) with the Triton kernel, into ``out``
        (``rows x C``, contiguous) when given."""
        if out is None:
            out = torch.empty(self.rows, x.shape[1], dtype=torch.float32, device=x.device)
        grid, block = _grid_block(self.rows)
        ell_gather = _kernels(interpreting())[0]
        ell_gather[grid](
            x, self.index, self.weight, out, self.rows, x.shape[1], self.width, block, _block_cols(x.shape[1])
        )
        return out


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _ell_rows(src: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor, slots: int) -> tuple[Ell, torch.Tensor]:
    """The runs (``counts[r]`` consecutive entries each) as rows of ``slots`` entries: a run longer
    than ``slots`` takes several consecutive rows. Returns the matrix and the rows of each run."""
    dev = src.device
    per_run = torch.div(counts + slots - 1, slots, rounding_mode="floor")
    first_row = torch.cumsum(per_run, 0) - per_run
    total = src.numel()
    pos = torch.arange(total, device=dev) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts, output_size=total
    )
    row = torch.repeat_interleave(first_row, counts, output_size=total) + torch.div(pos, slots, rounding_mode="floor")
    rows = int(per_run.sum())
    index = torch.full((rows, slots), -1, dtype=torch.int32, device=dev)
    table = torch.zeros(rows, slots, dtype=torch.float32, device=dev)
    index[row, pos % slots] = src.to(torch.int32)
    table[row, pos % slots] = weight.to(torch.float32)
    return Ell(index, table), per_run


@dataclass
class Splat:
    """Sums of runs of weighted input rows, through a workspace.

    The workspace's first ``inputs`` rows are the input; a run longer than the width is first cut
    into segments whose sums (``partial``: each level and the workspace row it writes from) are
    appended to the workspace, level after level, until every run fits in one row of ``final``,
    which reads inputs and segment sums alike. Short runs (most of them) are read once.
    """

    inputs: int
    partial: list[tuple[Ell, int]]
    final: Ell

    @property
    def workspace_rows(self) -> int:
        return self.inputs + sum(level.rows for level, _ in self.partial)

    def run(self, workspace: torch.Tensor) -> torch.Tensor:
        """The run sums, from a workspace whose first ``inputs`` rows hold the input (at least
        :attr:`workspace_rows` rows; the rest is overwritten)."""
        for level, start in self.partial:
            level(workspace, out=workspace[start : start + level.rows])
        return self.final(workspace)

    def scaled(self, factor: torch.Tensor) -> Splat:
        """The same sums with every input row ``i`` multiplied by ``factor[i]``."""
        partial = [(_scale_inputs(level, factor), start) for level, start in self.partial]
        return Splat(self.inputs, partial, _scale_inputs(self.final, factor))


def _scale_inputs(level: Ell, factor: torch.Tensor) -> Ell:
    """``level`` with the weight of every slot that reads input row ``i < len(factor)`` times ``factor[i]``."""
    reads_input = (level.index >= 0) & (level.index < factor.numel())
    at = factor.to(torch.float32)[level.index.clamp(0, factor.numel() - 1).long()]
    return Ell(level.index, level.weight * torch.where(reads_input, at, 1.0))


def splat_from_runs(src: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor, inputs: int, width: int) -> Splat:
    """The :class:`Splat` summing ``weight[e] * x[src[e]]`` over each run of ``counts[r]``
    consecutive entries (sorted by run), for an input of ``inputs`` rows and rows of ``width`` slots."""
    dev = src.device
    run = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts)
    partial, start = [], inputs
    while counts.numel() and int(counts.max()) > width:
        long = counts > width
        take = long[run]
        level, per_run = _ell_rows(src[take], weight[take], counts[long], width)
        partial.append((level, start))
        # the long runs' entries become their segments' sums, in run order (a stable sort keeps it)
        seg_run = torch.repeat_interleave(torch.nonzero(long).reshape(-1), per_run)
        run = torch.cat([run[~take], seg_run])
        order = torch.argsort(run, stable=True)
        src = torch.cat([src[~take], torch.arange(start, start + level.rows, device=dev)])[order]
        weight = torch.cat([weight[~take], torch.ones(level.rows, device=dev)])[order]
        run = run[order]
        counts = counts.masked_scatter(long, per_run)
        start += level.rows
    longest = int(counts.max()) if counts.numel() else 1
    return Splat(inputs, partial, _ell_rows(src, weight, counts, _pow2_at_least(longest))[0])


@dataclass
class TritonLattice:
    """A lattice's splat (levels), blur (one pass per direction) and slice as :class:`Ell` matrices.

    Attributes:
        splat: points -> vertices.
        blur: vertices -> vertices, one per lattice direction, applied in order.
        slice: vertices -> points (``P x (d+1)``: each point's corners, barycentric weight x alpha).
    """

    splat: Splat
    blur: list[Ell]
    slice: Ell

    def splat_values(self, values: torch.Tensor) -> torch.Tensor:
        """Splat ``values`` (``P x C``); see :meth:`splat_workspace` to avoid the copy into a workspace."""
        if not self.splat.partial:
            return self.splat.final(values)
        workspace = self.splat_workspace(values.shape[1], values.device)
        workspace[: self.splat.inputs] = values
        return self.splat.run(workspace)

    def splat_workspace(self, columns: int, device: torch.device) -> torch.Tensor:
        return torch.empty(self.splat.workspace_rows, columns, dtype=torch.float32, device=device)

    def blur_values(self, x: torch.Tensor) -> torch.Tensor:
        for direction in self.blur:
            x = direction(x)
        return x

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """``alpha * slice(blur(splat(values)))`` for ``values`` ``P x C`` (the unnormalised filter)."""
        return self.slice(self.blur_values(self.splat_values(values.to(torch.float32).contiguous())))

    def scaled(self, pre: torch.Tensor, post: torch.Tensor) -> TritonLattice:
        """The same filter with per-point factors before splatting and after slicing."""
        return TritonLattice(
            self.splat.scaled(pre), self.blur, Ell(self.slice.index, self.slice.weight * post.reshape(-1, 1))
        )


def from_lattice(lattice: permutohedral.Lattice) -> TritonLattice:
    """The :class:`Ell` form of a permutohedral lattice (same vertex ids, same operator)."""
    k, m, dev = lattice.dim + 1, lattice.num_vertices, lattice.device
    order = lattice.splat_order
    counts = torch.diff(lattice.splat_offsets, append=torch.tensor([order.numel()], device=dev))
    point = torch.div(order, k, rounding_mode="floor")
    splat = splat_from_runs(point, lattice.weight.reshape(-1)[order], counts, lattice.num_points, SPLAT_WIDTH)
    own = torch.arange(m, device=dev).reshape(m, 1)
    half = torch.tensor([0.5, 1.0, 0.5], device=dev).expand(m, 3)
    blur = []
    for direction in lattice.neighbours:
        index = torch.cat([direction[:, :1], own, direction[:, 1:]], dim=1)
        blur.append(Ell(index.to(torch.int32).contiguous(), torch.where(index >= 0, half, 0.0).contiguous()))
    slice_ = Ell(lattice.vertex.to(torch.int32).contiguous(), (lattice.weight * lattice.alpha).contiguous())
    return TritonLattice(splat, blur, slice_)


@dataclass
class Kernel:
    """One pairwise kernel of a batch: ``Q -> weight * n * K(n * Q)`` (densecrf's symmetric
    normalisation ``n``, as :mod:`.torch_meanfield`) and what its Potts gain needs."""

    lattice: TritonLattice
    plain: TritonLattice
    norm: torch.Tensor
    weight: float

    @functools.cached_property
    def gain(self) -> float:
        """:func:`.meanfield_rules.potts_gain` (a second filtering: only asked for when pruning may apply)."""
        return potts_gain(self.norm, self.plain.filter(self.norm.reshape(-1, 1)), self.weight)


def _kernel(lattice: permutohedral.Lattice, weight: float) -> Kernel:
    plain = from_lattice(lattice)
    ones = torch.ones(lattice.num_points, 1, device=lattice.device)
    norm = symmetric_norm(plain.filter(ones).reshape(-1))
    return Kernel(plain.scaled(norm, norm * weight), plain, norm, weight)


def _batch_lattice(features: list[torch.Tensor]) -> permutohedral.Lattice:
    """One lattice for several images' features: the image index is part of every vertex key, so no
    blur crosses images, and vertices are numbered image after image (points come in that order)."""
    if len(features) == 1:
        return permutohedral.build_lattice(features[0])
    counts = torch.tensor([f.shape[0] for f in features], device=features[0].device)
    image_index = torch.repeat_interleave(torch.arange(len(features), device=counts.device), counts)
    return permutohedral.build_lattice(torch.cat(features), image_index)


@functools.lru_cache(maxsize=4)
def _gaussian(sizes: tuple[tuple[int, int], ...], sxy: float, weight: float, device: str) -> Kernel:
    """The position kernel of a batch depends only on its images' sizes: built once per size list."""
    features = [permutohedral.image_features(h, w, sxy, device=device) for h, w in sizes]
    return _kernel(_batch_lattice(features), weight)


def _bilateral(images: list[torch.Tensor], params: CRFParams) -> Kernel:
    features = []
    for image in images:
        height, width, _ = image.shape
        features.append(permutohedral.image_features(height, width, params.bi_xy, image[None], params.bi_rgb))
    return _kernel(_batch_lattice(features), float(params.bi_w))


def mean_field(
    neg_unary: torch.Tensor, kernels: tuple[Kernel, Kernel], iterations: int, active: torch.Tensor | None
) -> torch.Tensor:
    """``iterations`` mean-field steps from ``softmax(-U)`` (``neg_unary`` is ``-U``, ``P x C``); returns ``Q``.

    ``active``: the labels to filter (an index tensor), or ``None`` for all.
    """
    rows, labels = neg_unary.shape
    dev = neg_unary.device
    active = torch.arange(labels, device=dev) if active is None else active.to(dev)
    if active.numel() == 0:  # no label can get a message that matters: Q stays softmax(-U)
        iterations = 0
    slot = torch.full((labels,), -1, dtype=torch.int32, device=dev)
    slot[active] = torch.arange(active.numel(), dtype=torch.int32, device=dev)
    q = torch.empty(rows, labels, dtype=torch.float32, device=dev)
    a, b = (kernel.lattice for kernel in kernels)
    # the filtered labels' Q is the first rows of the splats' workspace: no copy between them
    workspace_rows = max(a.splat.workspace_rows, b.splat.workspace_rows)
    workspace = torch.empty(workspace_rows, max(1, active.numel()), dtype=torch.float32, device=dev)
    q_active = workspace[:rows]
    blurred = (q_active, q_active)  # read only once there is a message
    step = _kernels(interpreting())[1]
    grid, block = _grid_block(rows)
    for it in range(iterations + 1):
        if it > 0:
            blurred = tuple(k.blur_values(k.splat.run(workspace)) for k in (a, b))
        step[grid](
            neg_unary, q, q_active, slot, a.slice.index, a.slice.weight, blurred[0], b.slice.index, b.slice.weight,
            blurred[1], rows, labels, active.numel(),
            HAS_MESSAGE=it > 0, WRITE_ALL=it == iterations, KA=a.slice.width, KB=b.slice.width,
            BLOCK_R=block, BLOCK_C=_block_cols(labels),
        )  # fmt: skip
    return q


def refine_list(
    images: list[torch.Tensor], probs: list[torch.Tensor], params: CRFParams, *, prune: bool = True
) -> list[torch.Tensor]:
    """Refine several images' probabilities at once (sizes may differ; one lattice per kind for all).

    Args:
        images: ``H x W x 3`` uint8 RGB tensors, on a CUDA device (or the CPU under the interpreter).
        probs: ``C x H x W`` class probabilities of each image (summing to 1 over C), same device;
            every image has the same ``C``.
        params: iterations, kernel weights and standard deviations.
        prune: skip filtering labels that cannot matter (:func:`.meanfield_rules.labels_worth_filtering`,
            over the whole batch); ``False`` filters all.

    Returns:
        ``C x H x W`` float32 refined probabilities, one per image.
    """
    classes = probs[0].shape[0]
    sizes = tuple((int(p.shape[1]), int(p.shape[2])) for p in probs)
    with torch.no_grad():
        neg_unary = torch.cat(
            [torch.log(p.to(torch.float32).clamp(UNARY_CLIP, 1.0)).reshape(classes, -1).t() for p in probs]
        ).contiguous()
        if params.iterations == 0:
            q = torch.softmax(neg_unary, dim=1)
        else:
            dev = neg_unary.device
            gauss = _gaussian(sizes, float(params.pos_xy), float(params.pos_w), str(dev))
            kernels = (gauss, _bilateral(images, params))
            active = None
            if prune and may_prune(params):
                q0_max = torch.softmax(neg_unary, dim=1).amax(dim=0).cpu().numpy()
                chosen = labels_worth_filtering(q0_max, gauss.gain + kernels[1].gain)
                active = None if chosen is None else torch.from_numpy(chosen)
            q = mean_field(neg_unary, kernels, int(params.iterations), active)
    pieces = torch.split(q, [h * w for h, w in sizes])
    return [piece.t().reshape(classes, h, w).contiguous() for piece, (h, w) in zip(pieces, sizes)]


def refine_batch(images: torch.Tensor, probs: torch.Tensor, params: CRFParams) -> torch.Tensor:
    """Refine a batch of same-size images' probabilities (``B x H x W x 3`` uint8 and ``B x C x H x W``)
    on their device; returns ``B x C x H x W`` float32 (as :func:`.torch_meanfield.refine_batch`)."""
    return torch.stack(refine_list(list(images), list(probs), params))
