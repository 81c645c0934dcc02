"""Where this process stands in a ``torchrun`` job, shared by training and evaluation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch.distributed as dist

from .errors import DeepLabError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """This rank's share: every ``world_size``-th item from ``rank``."""
        return list(items[self.rank :: self.world_size])


def dist_from_env() -> DistInfo:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as ``torchrun`` sets them."""
    try:
        return DistInfo(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )
    except ValueError as exc:
        raise DeepLabError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from exc


def init_distributed(info: DistInfo, device: str) -> None:
    """Join the process group: NCCL on CUDA, gloo on CPU."""
    if info.active and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
