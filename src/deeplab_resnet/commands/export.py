"""``deeplab export``: a model as ONNX (dynamic H/W), TorchScript or a ``torch.export`` program."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DeepLabError
from .common import add_model_arguments

DESCRIPTION = (
    "Export a model: ONNX with dynamic batch/height/width (run it with onnxruntime, or with "
    "'--backend onnxruntime' in segment/evaluate), TorchScript (traced, any size) or a torch.export "
    "program (.pt2). The graph maps a preprocessed batch (BGR minus the mean) to stride-8 logits. "
    "The export is checked against PyTorch at an odd and an even size unless --no-verify."
)
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "torch.export": ".pt2"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--format", default="onnx", choices=tuple(SUFFIXES), help="(default: %(default)s)")
    p.add_argument("-o", "--output", default=None, help="file to write (default: model name + format suffix)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    p.add_argument("--fold-bn", action="store_true", help="fold batch norm into the convs (ONNX only)")
    p.add_argument("--no-verify", action="store_true", help="skip the check against PyTorch")


def run(args: argparse.Namespace) -> int:
    from ..inference.export import export_model
    from ..inference.verify import verify_export
    from .common import load_model_from_args

    model = load_model_from_args(args, "cpu")
    default_name = Path(str(args.weights)).stem if args.weights else "deeplab"
    out = Path(args.output or f"{default_name}{SUFFIXES[args.format]}")
    kwargs = {"opset": args.opset, "fold_bn": args.fold_bn} if args.format == "onnx" else {}
    if args.fold_bn and args.format != "onnx":
        raise DeepLabError("--fold-bn applies to --format onnx only")
    export_model(model, out, args.format, **kwargs)
    print(f"wrote {out} ({args.format}, {out.stat().st_size / 2**20:.1f} MiB)")
    if not args.no_verify:
        worst = 0.0
        for row in verify_export(model, out, args.format, sizes=((64, 64), (65, 49))):
            worst = max(worst, row["rel_l2"])
            h, w = row["size"]
            print(f"  {h}x{w}: rel-L2 {row['rel_l2']:.1e} vs PyTorch, argmax agreement {row['argmax_agreement']:.2%}")
        if worst > 1e-4:
            raise DeepLabError(f"{out}: the export disagrees with PyTorch (rel-L2 {worst:.1e} > 1e-4)")
    return 0
