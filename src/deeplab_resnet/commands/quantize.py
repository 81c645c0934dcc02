"""``deeplab quantize``: calibrate and cache the int8 model of some weights for the int8 backends."""

from __future__ import annotations

import argparse

from ..errors import DeepLabError
from .common import add_model_arguments, expand_inputs, int_at_least, load_model_from_args

DESCRIPTION = (
    "Make the int8 model of some weights (static quantization: int8 weights per channel, activation "
    "ranges from --calibration images seen as the test protocol sees them) and cache it beside the "
    "float32 ONNX export. --backend onnxruntime-int8 / openvino-int8 run it, and --backend auto picks "
    "it for deeplab segment on CPUs with VNNI/AMX. Calibrate on images you will not score."
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


def run(args: argparse.Namespace) -> int:
    from ..inference.quantize import quantize_model

    if args.device not in ("auto", "cpu"):
        raise DeepLabError(f"--device {args.device}: quantization runs on the CPU; leave --device out")
    paths = expand_inputs(args.calibration, args.data_dir)
    model = load_model_from_args(args, "cpu")
    path = quantize_model(model, paths, images=args.images)
    print(f"int8 model ({min(len(paths), args.images)} calibration images): {path}")
    return 0
