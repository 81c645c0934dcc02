"""``deeplab export``: not implemented yet (see the project's open issues)."""

from __future__ import annotations

import argparse

from ..errors import DeepLabError


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise DeepLabError("'deeplab export' is not implemented yet")
