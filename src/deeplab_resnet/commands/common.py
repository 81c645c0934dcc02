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


# Larger input scales than this are a typo, not a test-time augmentation: a scale of s costs s^2
# times the memory and time (--scales 20 on a 500x375 photo needs about 70 GB).
MAX_SCALE = 4.0


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise DeepLabError(f"--scales must be numbers separated by commas, got {text!r}") from exc
    if not scales or not all(0 < s <= MAX_SCALE for s in scales):  # also refuses nan
        raise DeepLabError(f"--scales must be numbers above 0 and at most {MAX_SCALE:g}, got {text!r}")
    return scales


# The authors' Caffe test pads to 513 (crop_size of their data layer); protocol.AUTHORS_PAD_SIZE,
# copied so that building the parser imports nothing heavy.
AUTHORS_PAD_SIZE = 513


def add_protocol_arguments(p: argparse.ArgumentParser) -> None:
    """``--pad-size`` / ``--native-size``: the test protocol (shared by segment and evaluate)."""
    g = p.add_argument_group(
        "test protocol",
        "Caffe-convention weights run by default as the authors tested them: the image padded "
        f"bottom/right with the mean colour to {AUTHORS_PAD_SIZE}x{AUTHORS_PAD_SIZE} (a longer side to the "
        "next 8k+1), the network (and --scales) on that, the logits upsampled by Interp zoom 8 "
        "(corner-aligned) and cropped to the image. TF-convention weights run by default as the "
        "TF code did: at the image's own size, logits resized straight to it. --flip mirrors the "
        "image before padding; --tile windows always run at their own size (docs/original.md §5).",
    )
    g.add_argument(
        "--pad-size", type=int, default=None, metavar="N",
        help=f"pad to N x N (N = 8k+1) as the authors' Caffe test did (default: {AUTHORS_PAD_SIZE} for "
        "caffe-convention weights)",
    )  # fmt: skip
    g.add_argument(
        "--native-size", action="store_true",
        help="run the network at the image's own size, no padding (default for tf-convention weights)",
    )  # fmt: skip


def check_protocol_args(args: argparse.Namespace) -> None:
    """Reject a bad ``--pad-size`` (or both options) before anything is loaded or written."""
    if args.native_size and args.pad_size is not None:
        raise DeepLabError("--pad-size and --native-size exclude each other")
    if args.pad_size is not None:
        from ..inference.protocol import check_pad_size

        check_pad_size(args.pad_size)


def pad_size_from_args(args: argparse.Namespace, convention: str) -> int | None:
    """The pad size asked for: ``None`` runs at the native size; the weights' convention decides by default."""
    from ..inference.protocol import check_pad_size, default_pad_size

    check_protocol_args(args)
    if args.native_size:
        return None
    if args.pad_size is not None:
        return check_pad_size(args.pad_size)
    return default_pad_size(convention)


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
