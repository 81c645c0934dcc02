"""The two numeric conventions of the original releases (docs/original.md §1): ``caffe`` and ``tf``."""

from __future__ import annotations

from typing import Literal

Convention = Literal["caffe", "tf"]
CONVENTIONS: tuple[str, ...] = ("caffe", "tf")


def check_convention(convention: str) -> Convention:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be 'caffe' or 'tf', got {convention!r}")
    return convention  # type: ignore[return-value]
