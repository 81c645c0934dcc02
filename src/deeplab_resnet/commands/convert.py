"""``deeplab convert SRC DST``: original Caffe / TensorFlow weights → the native format."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Convert an original weight file to a deeplab_resnet .safetensors file: a DeepLab-v2 .caffemodel "
    "(convention caffe), a DeepLab-ResNet-TensorFlow checkpoint, V1 (deeplab_resnet.ckpt) or V2 "
    "(model.ckpt-STEP prefix, .index or directory), or its .npy weight dictionary (convention tf). "
    "Every tensor is checked; nothing is written on error."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="original weight file (or V2 checkpoint prefix)")
    p.add_argument("dst", metavar="DST", help="output .safetensors file")
    p.add_argument(
        "--not-restore-last", action="store_true",
        help="do not convert the classifier; start a new one with --num-classes classes",
    )  # fmt: skip
    p.add_argument("--num-classes", type=int, default=None, help="class count (default: the file's)")
    p.add_argument("--dataset", default=None, help="class names/palette to store (voc12, camvid or a JSON/YAML file)")
    p.add_argument("--ignore-label", type=int, default=None, help="ignore label to store (default: the dataset's)")


def run(args: argparse.Namespace) -> int:
    from ..weights.convert import convert

    report = convert(
        args.src, args.dst, not_restore_last=args.not_restore_last, num_classes=args.num_classes,
        dataset=args.dataset, ignore_label=args.ignore_label,
    )  # fmt: skip
    print(f"{args.src} → {args.dst}: {report.summary()}")
    return 0
