"""``deeplab``: the command-line front door. Each subcommand lives in ``commands/<name>.py``
with ``add_arguments(parser)`` and ``run(args) -> exit status``; heavy imports happen in ``run``
so that ``deeplab --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import DeepLabError

# (name, module under deeplab_resnet.commands, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("segment", "segment", "segment images and write label PNGs and overlays"),
    ("evaluate", "evaluate", "score a model (or prediction PNGs) on a labelled list: mIoU and more"),
    ("train", "train", "train or fine-tune with the original recipe"),
    ("convert", "convert", "convert original Caffe / TensorFlow weights to the native format"),
    ("weights", "weights", "list and download the known pretrained weights"),
    ("data", "data", "prepare, convert and check datasets"),
    ("benchmark", "benchmark", "time inference, training, data loading and the CRF"),
    ("export", "export", "export a model to ONNX or TorchScript"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deeplab",
        description="DeepLab-v2 (DeepLab-ResNet) semantic segmentation on PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"deeplab_resnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f".commands.{module_name}", __package__)
        p = sub.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", help_text))
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except DeepLabError as exc:
        print(f"deeplab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `deeplab ... | head`): not an error worth a traceback.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"deeplab {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"deeplab {args.command}: error: out of memory (try a smaller --max-size or batch)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
