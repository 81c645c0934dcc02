"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..devices import resolve_device as resolve_device  # one rule for every command
from ..errors import DeepLabError

if TYPE_CHECKING:  # the real import waits for the command to run: 'deeplab --help' stays instant
    from ..dataset_info import DatasetInfo


def add_model_arguments(p: argparse.ArgumentParser, *, weights_required: bool = False) -> None:
    p.add_argument(
        "--weights", required=weights_required, default=None if weights_required else "voc12",
        help="weight file (.safetensors, or an original .caffemodel/.ckpt) or a registered name "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--num-classes", type=int, default=None, help="expected class count (checked against the weights)")
    p.add_argument("--dataset", default=None, help="dataset description (voc12, camvid or a JSON/YAML file)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise DeepLabError(f"--scales must be numbers separated by commas, got {text!r}") from exc
    if not scales or any(s <= 0 for s in scales):
        raise DeepLabError(f"--scales must be positive numbers, got {text!r}")
    return scales


def load_model_from_args(args: argparse.Namespace, device: str):
    from ..weights import load_model

    return load_model(
        args.weights, num_classes=args.num_classes, dataset=args.dataset,
        ignore_label=getattr(args, "ignore_label", None), device=device,
    )  # fmt: skip


def dataset_from_args(args: argparse.Namespace) -> DatasetInfo:
    """The dataset that ``--dataset``, ``--num-classes`` and ``--ignore-label`` describe, for commands
    that read no weights (``evaluate --predictions``, ``data check``): the rule of
    :func:`~deeplab_resnet.dataset_info.resolve_dataset_info`, as every command applies it."""
    from ..dataset_info import resolve_dataset_info

    return resolve_dataset_info(args.dataset, num_classes=args.num_classes, ignore_label=args.ignore_label)


def int_at_least(minimum: int):
    """An argparse ``type``: an integer >= ``minimum`` (a bad value is argparse's one-line usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def float_between(low: float, high: float):
    """An argparse ``type``: a finite number in ``[low, high]`` (so ``nan`` and ``inf`` are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:  # also false for nan
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, got {text}")
        return value

    return parse
