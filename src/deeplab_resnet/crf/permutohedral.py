"""Permutohedral lattice (Adams, Baek & Davis 2010): approximate Gaussian filtering in O(N).

A point set with features ``f`` (``P x d``, already divided by the standard deviations) is
embedded in a ``d``-dimensional permutohedral lattice; filtering is *splat* (each point spreads
its value onto the ``d + 1`` vertices of its enclosing simplex with barycentric weights), *blur*
(a ``[1/2, 1, 1/2]`` pass along each of the ``d + 1`` lattice directions) and *slice* (each point
reads back the same barycentric mix), times the constant ``alpha = 1 / (1 + 2**-d)``.

The construction follows Krähenbühl's ``densecrf`` (the code inside ``pydensecrf``) step for step
in float32 — elevation, rounding to the nearest remainder-0 point (ties to even), ranking,
barycentric weights, vertex keys, blur neighbours and blur order — so the filter is the same
linear operator as ``pydensecrf``'s, up to float summation order. Like that code it is *not*
normalised: the result includes the point itself and approximates
``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` only up to the lattice's known approximation (see
``tests/test_permutohedral.py``).

Everything is vectorised: vertex keys are packed into int64 (mixed radix; a row-wise ``unique``
when they do not fit) and deduplicated with one sort, vertices are renumbered in the order points
first touch them (memory locality), blur neighbours are found with ``searchsorted``, and the three
stages are weighted row gathers (``F.embedding_bag``: FBGEMM on CPU, a fused kernel on CUDA),
prepared once per lattice and reused for every call (every mean-field iteration, all labels at
once as columns). On CPU numpy does the sort and the searches (several times faster there).
Several images can share one lattice: the image index is part of the key, so no blur ever
crosses from one image to another.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

# Largest product of key-digit ranges that still packs into a non-negative int64.
_PACK_LIMIT = 2**62


@dataclass
class Lattice:
    """A permutohedral lattice over ``num_points`` points with ``dim``-dimensional features.

    Attributes:
        dim: feature dimension ``d``.
        num_points: number of points ``P`` (pixels of all images).
        num_vertices: number of lattice vertices ``M`` touched by the points.
        vertex: ``P x (d+1)`` int64, the vertices of each point's simplex.
        weight: ``P x (d+1)`` float32, the barycentric weights (they sum to 1 per point).
        splat_order: the ``P * (d+1)`` (point, corner) pairs of ``vertex`` sorted by vertex.
        splat_offsets: length ``M``, where each vertex's run starts in ``splat_order``.
        neighbours: ``(d+1) x M x 2`` int64, the two blur neighbours of each vertex along each
            lattice direction; ``-1`` where the neighbour is absent.
        alpha: the slicing constant ``1 / (1 + 2**-d)``.
    """

    dim: int
    num_points: int
    num_vertices: int
    vertex: torch.Tensor
    weight: torch.Tensor
    splat_order: torch.Tensor
    splat_offsets: torch.Tensor
    neighbours: torch.Tensor
    alpha: float
    _plain: LatticeOperator | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.vertex.device

    def operator(self, pre: torch.Tensor | None = None, post: torch.Tensor | None = None) -> LatticeOperator:
        """The linear map ``v -> post * alpha * slice(blur(splat(pre * v)))`` with the scales folded in.

        Args:
            pre: optional per-point factor (length ``P``) applied before splatting.
            post: optional per-point factor (length ``P``) applied after slicing.
        """
        if self._plain is None:
            self._plain = LatticeOperator(self)
        return self._plain if pre is None and post is None else self._plain.scaled(pre, post)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Filter ``values`` (``P x C`` or length ``P``) through the lattice, unnormalised.

        This is ``Permutohedral::compute`` of densecrf: the point itself is included.
        """
        return self.operator()(values)


class LatticeOperator:
    """Splat, blur and slice as weighted row gathers, prepared once and applied to many value sets.

    Each stage is ``F.embedding_bag(mode="sum", per_sample_weights=...)``: output row ``i`` is a
    weighted sum of a few rows of the input, i.e. a sparse matrix times a dense ``rows x C``
    matrix in one pass (FBGEMM's kernel on CPU, a fused kernel on CUDA), with no scatter.
    """

    def __init__(self, lattice: Lattice) -> None:
        k, m, p = lattice.dim + 1, lattice.num_vertices, lattice.num_points
        dev = lattice.device
        splat_w = lattice.weight
        slice_w = lattice.weight * lattice.alpha
        order = lattice.splat_order
        # Splat: vertex v sums (weight * value) over its (point, corner) run in splat_order.
        self.splat = _bags(
            torch.div(order, k, rounding_mode="floor"),
            torch.cat([lattice.splat_offsets, torch.tensor([order.numel()], device=dev)]),
            _take(splat_w.reshape(-1), order),
        )
        # Blur: new[v] = 1/2 v[n1] + v + 1/2 v[n2], absent neighbours left out of the bag.
        own = torch.arange(m, device=dev).reshape(1, m, 1)
        nb = lattice.neighbours
        idx = torch.cat([nb[:, :, :1], own.expand(k, m, 1), nb[:, :, 1:]], dim=2)
        present = idx >= 0
        sel = _flatnonzero(present)
        wt = _take(torch.tensor([0.5, 1.0, 0.5], device=dev).repeat(k * m), sel)
        flat = _take(idx.reshape(-1), sel)  # direction by direction, vertex by vertex
        counts = present.sum(dim=2)
        offsets = torch.zeros(k, m + 1, dtype=torch.int64, device=dev)
        torch.cumsum(counts, dim=1, out=offsets[:, 1:])
        self.blur = []
        start = 0
        for j, total in enumerate(offsets[:, -1].tolist()):
            self.blur.append(_bags(flat[start : start + total], offsets[j], wt[start : start + total]))
            start += total
        self.corners = k
        self.slice = _bags(lattice.vertex.reshape(-1), torch.arange(0, p * k + 1, k, device=dev), slice_w.reshape(-1))
        self._splat_point = self.splat[0]  # the point of each splat entry

    def scaled(self, pre: torch.Tensor | None, post: torch.Tensor | None) -> LatticeOperator:
        """The same operator with per-point factors before splatting and after slicing (shares the blur)."""
        new = copy.copy(self)
        if pre is not None:
            index, offsets, weight = self.splat
            new.splat = (index, offsets, weight * pre.to(weight).reshape(-1)[self._splat_point])
        if post is not None:
            index, offsets, weight = self.slice
            per_point = weight.reshape(-1, self.corners) * post.to(weight).reshape(-1, 1)
            new.slice = (index, offsets, per_point.reshape(-1))
        return new

    def splat_values(self, values: torch.Tensor) -> torch.Tensor:
        return _apply(self.splat, values)

    def blur_values(self, x: torch.Tensor) -> torch.Tensor:
        for bags in self.blur:
            x = _apply(bags, x)
        return x

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        vector = values.dim() == 1
        x = values.reshape(values.shape[0], -1).to(torch.float32).contiguous()
        x = _apply(self.slice, self.blur_values(self.splat_values(x)))
        return x.reshape(-1) if vector else x


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along the first dimension (a plain gather; faster than advanced indexing)."""
    return torch.index_select(x, 0, index)


def _flatnonzero(mask: torch.Tensor) -> torch.Tensor:
    """Positions of the true entries of the flattened ``mask`` (numpy's is much faster on CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask.reshape(-1)).reshape(-1)


def _bags(index: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor):
    """A sparse matrix in CSR form as embedding-bag arguments (offsets include the last one)."""
    return index.contiguous(), offsets.contiguous(), weight.to(torch.float32).contiguous()


def _apply(bags, x: torch.Tensor) -> torch.Tensor:
    """``out[b] = sum_{e in bag b} weight[e] * x[index[e]]``."""
    index, offsets, weight = bags
    return F.embedding_bag(index, x, offsets, mode="sum", per_sample_weights=weight, include_last_offset=True)


def _scale_factors(d: int) -> torch.Tensor:
    # densecrf: inv_std_dev = sqrt(2/3)(d+1) as float; scale_i = 1/sqrt((i+2)(i+1)) * inv_std_dev,
    # evaluated in double and stored as float.
    inv_std_dev = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
    return torch.tensor([1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev for i in range(d)], dtype=torch.float32)


def _simplex(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per point: remainder-0 corner ``rem0`` and ``rank`` (both ``P x (d+1)``), barycentric weights.

    Float32 operations in densecrf's order, so that the simplex and the weights are the same.
    Worked coordinate-major (``(d+1) x P``) so that every step is a contiguous vector operation.
    """
    p, d = features.shape
    dev = features.device
    f = features.to(torch.float32).t().contiguous()
    cf = f * _scale_factors(d).to(dev).reshape(-1, 1)
    elevated = torch.empty(d + 1, p, dtype=torch.float32, device=dev)
    sm = torch.zeros(p, dtype=torch.float32, device=dev)
    for j in range(d, 0, -1):
        torch.sub(sm, cf[j - 1], alpha=j, out=elevated[j])
        sm += cf[j - 1]
    elevated[0] = sm

    down = torch.tensor(1.0 / (d + 1), dtype=torch.float32, device=dev)
    v = torch.round(elevated * down)  # nearest, ties to even, as SSE's cvtps2dq
    rem0 = v * (d + 1)
    diff = elevated - rem0

    # densecrf's pairwise loop: for i < j, diff_i < diff_j ranks i later, else j
    rank = v.sum(dim=0, dtype=torch.int64).expand(d + 1, p).clone()
    for i in range(d):
        for j in range(i + 1, d + 1):
            less = diff[i] < diff[j]
            rank[i] += less
            rank[j] += ~less
    wrap = (rank < 0).to(torch.int64) - (rank > d).to(torch.int64)
    rank += wrap * (d + 1)
    rem0 = rem0.to(torch.int64) + wrap * (d + 1)

    # densecrf adds +v_i at position d - rank_i and -v_i at the next one; every position gets
    # one of each, so with u[d - rank_i] = v_i the weights are u[k] - u[k-1] (the same floats).
    vals = (elevated - rem0.to(torch.float32)) * down
    u = torch.empty_like(vals).scatter_(0, d - rank, vals)
    bary = torch.empty_like(vals)
    torch.sub(u[1:], u[:-1], out=bary[1:])
    bary[0] = u[0] + (1 - u[d])
    return rem0.t().contiguous(), rank.t().contiguous(), bary.t().contiguous()


def _vertex_keys(rem0: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Integer keys (first ``d`` coordinates) of the ``d + 1`` simplex vertices: ``P x (d+1) x d``."""
    d = rank.shape[1] - 1
    r = torch.arange(d + 1, device=rank.device).reshape(1, -1, 1)  # vertex (remainder) index
    rk = rank[:, None, :d]
    # canonical simplex: coordinate with rank k of vertex r is r, or r - (d+1) when k > d - r
    return rem0[:, None, :d] + r - (d + 1) * (rk > d - r).to(torch.int64)


def _packed_vertex_keys(rem0: torch.Tensor, rank: torch.Tensor, lo: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """``sum_i (key_i - lo_i) * stride_i`` of every vertex (``P x (d+1)``) without the ``P x (d+1) x d`` keys.

    Vertex ``r``'s key is ``rem0 + r`` minus ``d + 1`` on the coordinates ranked in the top ``r``;
    so its packed value is ``base + r * sum(stride)`` minus ``d + 1`` times the strides of those.
    """
    p, k = rank.shape
    d = k - 1
    base = ((rem0[:, :d] - lo) * stride).sum(dim=1, keepdim=True)
    by_rank = torch.zeros(p, k, dtype=torch.int64, device=rank.device)
    by_rank.scatter_(1, rank[:, :d], stride.expand(p, d))  # stride of the coordinate of each rank
    top = torch.zeros_like(by_rank)
    torch.cumsum(by_rank.flip(1)[:, :d], dim=1, out=top[:, 1:])  # strides of the r highest ranks
    r = torch.arange(k, device=rank.device)
    return base + r * stride.sum() - (d + 1) * top


def build_lattice(features: torch.Tensor, image_index: torch.Tensor | None = None, *, pack: bool = True) -> Lattice:
    """Build the lattice of ``features`` (``P x d``, float, already scaled by 1/std).

    Args:
        features: one row of lattice coordinates per point.
        image_index: optional per-point image id (length ``P``) when several images share one
            lattice; vertices of different images never meet.
        pack: pack keys into one int64 when they fit (fast); ``False`` forces the general path
            (row-wise unique of explicit keys), used by the tests.
    """
    if features.dim() != 2 or features.shape[1] < 1:
        raise ValueError(f"features must be P x d with d >= 1, got {tuple(features.shape)}")
    p, d = features.shape
    dev = features.device
    rem0, rank, bary = _simplex(features)
    # Vertex keys lie within d+1 of rem0 and blur neighbours another d+1 away.
    lo = rem0[:, :d].amin(dim=0) - 2 * (d + 1)
    span = (rem0[:, :d].amax(dim=0) - lo + 2 * (d + 1) + 1).tolist()
    images = 1 if image_index is None else int(image_index.max()) + 1
    # Blur steps: along direction j < d, n1 = key - 1 except coordinate j gets + d; n2 the opposite.
    # Direction d (the coordinate that is not stored) shifts every stored coordinate by -1 / +1.
    steps = -torch.ones(d + 1, d, dtype=torch.int64, device=dev)
    steps[torch.arange(d), torch.arange(d)] = d
    if pack and math.prod(span) * images < _PACK_LIMIT:
        stride = _strides(span, dev)
        packed = _packed_vertex_keys(rem0, rank, lo, stride)
        if image_index is not None:
            packed += image_index.to(device=dev, dtype=torch.int64).reshape(-1, 1) * math.prod(span)
        m, vertex, order, offsets, uniq = _sort_keys(packed.reshape(-1))
        new_id, vertex, order, offsets = _renumber(vertex, order, offsets)
        neighbours = _neighbours_packed(uniq, new_id, (steps * stride).sum(dim=1))
    else:
        keys = _vertex_keys(rem0, rank).reshape(-1, d)
        if image_index is not None:
            img = image_index.to(device=dev, dtype=torch.int64).repeat_interleave(d + 1).reshape(-1, 1)
            keys = torch.cat([keys, img], dim=1)
            steps = torch.cat([steps, torch.zeros(d + 1, 1, dtype=torch.int64, device=dev)], dim=1)
        m, vertex, order, offsets, uniq = _sort_rows(keys)
        new_id, vertex, order, offsets = _renumber(vertex, order, offsets)
        neighbours = _neighbours_rows(uniq, new_id, steps)
    alpha = float(torch.tensor(1.0 / (1.0 + 2.0 ** (-d)), dtype=torch.float32))
    return Lattice(d, p, m, vertex.reshape(p, d + 1), bary, order, offsets, neighbours, alpha)


def _renumber(vertex: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor):
    """Number vertices in the order of the first point that touches them (instead of key order).

    Splat and slice then read memory almost sequentially, which is what makes them fast on CPU.
    Runs in ``order`` are sorted by position, so a run's first entry is its first point.
    Returns the map old id -> new id and the renumbered ``vertex``, ``order`` and ``offsets``.
    """
    dev = vertex.device
    m = offsets.numel()
    first = _take(order, offsets)  # distinct (point, corner) positions
    mark = torch.zeros(vertex.numel(), dtype=torch.int64, device=dev)
    mark[first] = 1
    new_id = _take(torch.cumsum(mark, 0), first) - 1
    old_of_new = torch.empty_like(new_id)
    old_of_new[new_id] = torch.arange(m, device=dev)
    counts = torch.diff(offsets, append=torch.tensor([order.numel()], device=dev))
    counts_new = _take(counts, old_of_new)
    offsets_new = torch.cumsum(counts_new, 0) - counts_new
    shift = torch.repeat_interleave(_take(offsets, old_of_new) - offsets_new, counts_new, output_size=order.numel())
    order_new = _take(order, torch.arange(order.numel(), device=dev) + shift)
    return new_id, _take(new_id, vertex), order_new, offsets_new


def _strides(span: list[int], device) -> torch.Tensor:
    strides = [1] * len(span)
    for i in range(len(span) - 2, -1, -1):
        strides[i] = strides[i + 1] * span[i + 1]
    return torch.tensor(strides, dtype=torch.int64, device=device)


def _sort(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted keys and the permutation. On CPU numpy's vectorised sort is several times faster
    than torch's; sorting ``key << b | position`` gives both at once when it fits in 63 bits."""
    if packed.device.type != "cpu":
        return torch.sort(packed)
    n = packed.numel()
    bits = max(1, (n - 1).bit_length())
    a = packed.numpy()
    if n and int(a.max()) < 2 ** (62 - bits):
        both = np.sort((a << bits) | np.arange(n, dtype=np.int64))
        return torch.from_numpy(both >> bits), torch.from_numpy(both & ((1 << bits) - 1))
    order = np.argsort(a, kind="stable")  # runs must stay in position order (_renumber)
    return torch.from_numpy(a[order]), torch.from_numpy(order)


def _sort_keys(packed: torch.Tensor):
    """One sort gives vertex ids, the splat order and each vertex's run in it."""
    sorted_keys, order = _sort(packed)
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    torch.ne(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    ids = torch.cumsum(first, 0) - 1
    vertex = torch.empty_like(ids)
    vertex[order] = ids
    offsets = _flatnonzero(first)
    return offsets.numel(), vertex, order, offsets, _take(sorted_keys, offsets)


def _sort_rows(keys: torch.Tensor):
    """The same for unpacked keys (rows), through a row-wise unique."""
    uniq, vertex = torch.unique(keys, dim=0, sorted=True, return_inverse=True)
    order = torch.argsort(vertex, stable=True)
    counts = torch.bincount(vertex, minlength=uniq.shape[0])
    offsets = torch.cumsum(counts, 0) - counts
    return uniq.shape[0], vertex, order, offsets, uniq


def _neighbours_packed(uniq: torch.Tensor, new_id: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``(d+1) x M x 2`` blur neighbours (new ids, ``-1`` absent) of vertices in new-id order.

    ``uniq`` are the sorted packed keys (old ids), ``shift`` the packed offset of each direction.
    Only ``key + shift`` is searched, in key order (sorted queries: cache-friendly binary
    searches); the other neighbour follows by symmetry (``u = n1(v)`` exactly when ``v = n2(u)``).
    """
    if uniq.device.type == "cpu":  # numpy's searchsorted and indexing are much faster on CPU
        return torch.from_numpy(_neighbours_numpy(uniq.numpy(), new_id.numpy(), shift.numpy()))
    m, k = uniq.numel(), shift.numel()
    query = uniq[None, :] + shift[:, None]
    pos = torch.searchsorted(uniq, query).clamp_(max=m - 1)
    found = uniq[pos] == query
    n1 = torch.where(found, pos, -1)
    n2 = torch.full_like(n1, -1)
    rows = torch.arange(k, device=uniq.device).reshape(-1, 1).expand(k, m)
    src = torch.arange(m, device=uniq.device).expand(k, m)
    n2[rows[found], pos[found]] = src[found]
    both = torch.stack([n1, n2], dim=2)
    mapped = torch.where(both >= 0, new_id[both.clamp(min=0)], -1)
    old_of_new = torch.empty_like(new_id)
    old_of_new[new_id] = torch.arange(m, device=uniq.device)
    return mapped[:, old_of_new]


def _neighbours_numpy(u: np.ndarray, ids: np.ndarray, shift: np.ndarray) -> np.ndarray:
    m, k = u.size, shift.size
    both = np.full((k, m, 2), -1, dtype=np.int64)
    for j in range(k):
        query = u + shift[j]
        pos = np.minimum(np.searchsorted(u, query), m - 1)
        hit = np.flatnonzero(u[pos] == query)
        target = pos[hit]
        both[j, hit, 0] = ids[target]
        both[j, target, 1] = ids[hit]
    old_of_new = np.empty_like(ids)
    old_of_new[ids] = np.arange(m)
    return np.take(both, old_of_new, axis=1)


def _neighbours_rows(uniq: torch.Tensor, new_id: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The same for row keys: look the shifted rows up with a second unique."""
    m = uniq.shape[0]
    old_of_new = torch.empty_like(new_id)
    old_of_new[new_id] = torch.arange(m, device=uniq.device)
    keys = uniq[old_of_new]
    query = torch.stack([keys[None] + steps[:, None], keys[None] - steps[:, None]], dim=2)  # (d+1) x M x 2 x w
    allkeys = torch.cat([keys, query.reshape(-1, keys.shape[1])], dim=0)
    _, inv = torch.unique(allkeys, dim=0, sorted=True, return_inverse=True)
    lookup = torch.full((int(inv.max()) + 1,), -1, dtype=torch.int64, device=uniq.device)
    lookup[inv[:m]] = torch.arange(m, device=uniq.device)
    return lookup[inv[m:]].reshape(query.shape[:3])


def image_features(
    height: int,
    width: int,
    sxy: float,
    image: torch.Tensor | None = None,
    srgb: float | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``pydensecrf``'s DenseCRF2D features: ``(x/sxy, y/sxy)`` or ``(x/sxy, y/sxy, r/srgb, g/srgb, b/srgb)``.

    Args:
        height, width: image size.
        sxy: position standard deviation (pixels).
        image: optional ``... x H x W x 3`` uint8 RGB tensor (any leading batch shape) for the bilateral
            features.
        srgb: colour standard deviation (needed with ``image``).
        device: where to build the features (defaults to the image's device).

    Returns:
        ``(B*H*W) x d`` float32 features, rows in (image, y, x) order.
    """
    dev = image.device if image is not None else device
    sxy32 = torch.tensor(sxy, dtype=torch.float32, device=dev)
    ys = torch.arange(height, dtype=torch.float32, device=dev) / sxy32
    xs = torch.arange(width, dtype=torch.float32, device=dev) / sxy32
    pos = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # (y, x) order, cols x, y
    if image is None:
        return pos
    if srgb is None:
        raise ValueError("srgb is needed with an image")
    rgb = image.reshape(-1, height * width, 3).to(torch.float32) / torch.tensor(srgb, dtype=torch.float32, device=dev)
    batch = rgb.shape[0]
    return torch.cat([pos.expand(batch, -1, -1), rgb], dim=2).reshape(-1, 5)
