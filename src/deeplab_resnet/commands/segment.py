"""``deeplab segment``: label PNGs and overlays for images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DeepLabError
from .common import add_model_arguments, load_model_from_args, parse_scales, resolve_device

DESCRIPTION = (
    "Segment images: for each input writes NAME.png (palette PNG of class indices, VOC colours) "
    "and NAME_overlay.jpg (the image blended with the colour mask) into --output-dir."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or directories of images")
    add_model_arguments(p)
    p.add_argument("-o", "--output-dir", default="segmentation", help="where to write results (default: %(default)s)")
    p.add_argument("--scales", default="1", help="input scales, e.g. 1,0.75,0.5 for multi-scale (default: 1)")
    p.add_argument(
        "--max-size", type=int, default=2000,
        help="the network sees images whose longer side exceeds this shrunk to it; outputs stay full "
        "size (0 = always full resolution; default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the mask (default: %(default)s)")
    p.add_argument(
        "--backend", default="torch", choices=("torch", "onnxruntime"),
        help="run the network with PyTorch or onnxruntime (exported once per weights; default: %(default)s)",
    )  # fmt: skip


def expand_inputs(inputs: list[str]) -> list[Path]:
    from ..images import IMAGE_SUFFIXES

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DeepLabError(f"{path}: no images found in this directory")
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        else:
            raise DeepLabError(f"file not found: {path}")
    return paths


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..images import label_image, overlay, read_image, save_png
    from ..segment import Segmenter

    paths = expand_inputs(args.inputs)
    device = resolve_device(args.device)
    model = load_model_from_args(args, device)
    segmenter = Segmenter(model, device=device, scales=parse_scales(args.scales), max_size=args.max_size or None)
    if args.backend != "torch":
        from ..runtime import attach_backend, make_backend

        attach_backend(segmenter, make_backend(args.backend, model, device=device))
    out_dir = Path(args.output_dir)
    failures = 0
    for path in paths:
        try:
            rgb = read_image(path)
        except DeepLabError as exc:
            if len(paths) == 1:
                raise
            print(f"skipped: {exc}", file=sys.stderr)
            failures += 1
            continue
        result = segmenter(rgb)
        save_png(label_image(result.labels, result.dataset), out_dir / f"{path.stem}.png")
        blend = overlay(rgb, result.labels, result.dataset, alpha=args.alpha)
        save_png(Image.fromarray(blend), out_dir / f"{path.stem}_overlay.jpg")
        classes = ", ".join(f"{k} {v}" for k, v in sorted(result.class_pixels().items(), key=lambda kv: -kv[1]))
        print(f"{path}: {classes}")
    print(f"wrote {len(paths) - failures} result(s) to {out_dir}" + (f"; {failures} failed" if failures else ""))
    return 1 if failures else 0
