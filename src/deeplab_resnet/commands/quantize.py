"""``deeplab quantize``: calibrate and cache the int8 model of some weights for the int8 backends."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DeepLabError
from .common import add_model_arguments, expand_inputs, int_at_least, load_model_from_args

DESCRIPTION = (
    "Make the int8 model of some weights (static quantization: int8 weights per channel, activation "
    "ranges from --calibration images seen as the test protocol sees them) and cache it beside the "
    "float32 ONNX export. --backend onnxruntime-int8 / openvino-int8 run it. With --check, measure "
    "how many pixels' labels int8 keeps against float32 on other images: --backend auto picks int8 "
    "for deeplab segment only when that check is within 99.5%. Calibrate and check on images you "
    "will not score."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument(
        "--calibration", required=True, nargs="+", metavar="LIST_OR_DIR",
        help="calibration images: a list file (.txt), a directory, globs or image files",
    )  # fmt: skip
    p.add_argument("--data-dir", default=None, help="base directory of the paths in list files (default: the list's)")
    p.add_argument(
        "--images", type=int_at_least(1), default=20,
        help="use the first N calibration images (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--check", nargs="+", metavar="LIST_OR_DIR", default=None,
        help="held-out images (none of the calibration ones) on which to measure int8's agreement with float32",
    )  # fmt: skip
    p.add_argument(
        "--check-images", type=int_at_least(1), default=10,
        help="use the first N check images (default: %(default)s)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..inference.int8_check import check_int8, read_check, summary
    from ..inference.quantize import quantize_model

    if args.device not in ("auto", "cpu"):
        raise DeepLabError(f"--device {args.device}: quantization runs on the CPU; leave --device out")
    paths = _images(expand_inputs(args.calibration, args.data_dir), args.images)
    check = _images(expand_inputs(args.check, args.data_dir), args.check_images) if args.check else []
    _refuse_overlap(paths, check)
    model = load_model_from_args(args, "cpu")
    path = quantize_model(model, paths, images=args.images)
    print(f"int8 model ({len(paths)} calibration image{'' if len(paths) == 1 else 's'}): {path}")
    record = check_int8(model, path, check) if check else read_check(path)
    if record is None:
        print("not checked: --backend auto will not choose it (add --check IMAGES to measure its agreement)")
        return 0
    if record["engines"]:
        print(summary(record))
    print(_auto_verdict(record))
    return 0


def _auto_verdict(record: dict) -> str:
    """What ``--backend auto`` will do with this check record, and why."""
    from ..inference import cpu_features
    from ..inference.int8_check import engines_within_bar

    within = engines_within_bar(record)
    if within:
        return f"--backend auto will use {within[0]} for deeplab segment"
    if record["vnni"] is not cpu_features.has_vnni():
        measured, here = ("with", "without") if record["vnni"] else ("without", "with")
        return (
            f"--backend auto will keep float32: the check ran on a CPU {measured} VNNI, this one is {here} "
            "(int8 rounds differently there); run --check here"
        )
    if not record["engines"]:
        return "--backend auto will keep float32: the check record holds no measurement it can use; run --check"
    return "--backend auto will keep float32: int8 is below the bar for these weights on this CPU"


def _images(paths: list[Path], limit: int) -> list[Path]:
    """The first ``limit`` of ``paths`` that are images; other files (a README in a folder of
    photos) are reported and skipped, as ``deeplab segment`` does."""
    from ..images import DamagedImageError, NotAnImageError, open_image

    images = []
    for path in paths:
        if len(images) == limit:
            break
        try:
            open_image(path).close()
        except (NotAnImageError, DamagedImageError) as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        images.append(path)
    if paths and not images:
        raise DeepLabError(f"no images among {len(paths)} file(s), e.g. {paths[0]}")
    return images


def _refuse_overlap(calibration: list[Path], check: list[Path]) -> None:
    """Before any work: no check image is a calibration image, by any path, link or copy (the same content)."""
    from ..inference.quantize import shared_image

    shared = shared_image(calibration, check)
    if shared is not None:
        raise DeepLabError(
            f"{shared[0]}: the same image as the calibration image {shared[1]}; check on images not calibrated on"
        )
