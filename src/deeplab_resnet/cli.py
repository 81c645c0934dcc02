"""``deeplab``: the command-line front door. Each subcommand lives in ``commands/<name>.py``
with ``add_arguments(parser)`` and ``run(args) -> exit status``; heavy imports happen in ``run``
so that ``deeplab --help`` is instant.

Every failure ends here as one line on stderr and a documented exit status (``errors.py``):
0 done, 1 done but some inputs skipped, 2 bad usage or input, 3 the system refused a read or
write, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import (
    EXIT_IO,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    DeepLabError,
    Terminated,
    describe_os_error,
    install_signal_handlers,
)

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
    ("serve", "serve", "serve a web page and JSON API that segment uploaded photos"),
    ("quantize", "quantize", "calibrate and cache the int8 model of some weights; --check measures its accuracy"),
)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the full usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
        return EXIT_USAGE
    install_signal_handlers()
    status = _run(args)
    if getattr(args, "exit_at_once", False):
        # A thread is still inside native code that cannot be interrupted (a network pass):
        # ending the interpreter normally would tear its libraries down under it and abort.
        with contextlib.suppress(OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
    return status


def _run(args: argparse.Namespace) -> int:
    """The command's exit status, each kind of failure said in one line (see the README's table)."""
    try:
        status = int(args._run(args) or 0)
        _flush_stdout()
        return status
    except DeepLabError as exc:
        return _fail(args, f"error: {exc}", EXIT_USAGE)
    except BrokenPipeError:
        # The reader went away (e.g. `deeplab ... | head`): not an error worth a traceback.
        sys.stderr.close()
        return 0
    except OSError as exc:
        if exc.filename is None and _stdout_broken():
            exc = OSError(exc.errno, exc.strerror, "standard output")
        return _fail(args, f"error: {describe_os_error(exc)}", EXIT_IO)
    except Terminated:
        return _fail(args, "stopped by SIGTERM", EXIT_SIGTERM)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", EXIT_SIGINT)
    except MemoryError:
        return _fail(args, "error: out of memory (try a smaller --max-size or batch)", EXIT_USAGE)


def _flush_stdout() -> None:
    """Flush now, so that a full or closed output (``> /dev/full``) is one line, not a traceback at exit."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        _stdout_broken()
        raise OSError(exc.errno, exc.strerror, "standard output") from exc


def _stdout_broken() -> bool:
    """Whether stdout can no longer be written; if so, what is left in its buffer goes to /dev/null
    so that Python's own flush at exit does not print a traceback."""
    try:
        sys.stdout.flush()
        return False
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return True


def _fail(args: argparse.Namespace, message: str, status: int) -> int:
    try:
        print(f"deeplab {args.command}: {message}", file=sys.stderr)
    except OSError:  # stderr itself is gone: the status still says what happened
        pass
    return status


if __name__ == "__main__":
    sys.exit(main())
