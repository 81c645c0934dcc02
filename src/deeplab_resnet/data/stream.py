"""The training data stream: list-file pairs, shuffled per epoch, augmented, in a fixed order.

Every sample of a run has a *position* ``p = 0, 1, 2, ...`` in one endless stream. Position
``p`` is image ``perm(epoch)[p % n]`` with ``epoch = p // n``, and its augmentation draws from
``numpy.random.default_rng([seed, p])``. So what a sample looks like depends only on the seed
and its position, never on which worker process or which rank loads it, or on how many there
are. That makes resuming exact without saving any worker's RNG state (the step number fixes
every worker's stream), and it makes a DDP run see the same global batches as one process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..images import load_pair
from .lists import Pair
from .transforms import TrainTransform


@lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` pairs in ``epoch`` (a fresh shuffle per epoch, from the seed)."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


class TrainStream(Dataset):
    """Indexed by stream position (see the module docstring); returns ``(image, label)`` tensors.

    Args:
        pairs: labelled list entries.
        transform: the augmentation.
        seed: the run's ``--random-seed``.
        shuffle: shuffle each epoch (the original shuffles); otherwise list order.
    """

    def __init__(self, pairs: Sequence[Pair], transform: TrainTransform, seed: int, shuffle: bool = True):
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs = list(pairs)
        self.transform = transform
        self.seed = int(seed)
        self.shuffle = shuffle

    def __len__(self) -> int:  # the stream is endless; this only satisfies Dataset users
        return len(self.pairs)

    def pair_at(self, position: int) -> Pair:
        n = len(self.pairs)
        epoch, offset = divmod(int(position), n)
        index = int(epoch_permutation(self.seed, epoch, n)[offset]) if self.shuffle else offset
        return self.pairs[index]

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pair_at(position)
        image, label = load_pair(pair)
        rng = np.random.default_rng([self.seed, int(position)])
        return self.transform(image, label, rng)


class StreamBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each micro-batch, from ``start_step`` to ``num_steps``.

    Micro-batch ``m`` of step ``s`` holds positions ``[(s * accum + m) * B, ... + B)`` of the
    stream (``B`` the global batch); rank ``r`` of ``world`` takes the ``r``-th contiguous slice.
    """

    def __init__(self, global_batch: int, accum: int, start_step: int, num_steps: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world} processes")
        self.global_batch, self.accum = global_batch, accum
        self.start_step, self.num_steps = start_step, num_steps
        self.rank, self.world = rank, world
        self.local = global_batch // world

    def __len__(self) -> int:
        return max(self.num_steps - self.start_step, 0) * self.accum

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.num_steps):
            for micro in range(self.accum):
                base = (step * self.accum + micro) * self.global_batch + self.rank * self.local
                yield list(range(base, base + self.local))
