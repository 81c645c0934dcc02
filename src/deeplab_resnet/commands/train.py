"""``deeplab train``: train or fine-tune with the original recipe (flags as the original's train.py).

The settings' flags are generated from :class:`TrainConfig`'s fields (name, type, help, range), so
they cannot drift from it; their values are checked by the same function as a config file's.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..errors import DeepLabError
from ..training.config import (
    MORE,
    ORIGINAL,
    TrainConfig,
    config_from_sources,
    field_metavar,
    field_type,
    fields,
    flag_name,
    load_config_file,
    parse_flag,
)

DESCRIPTION = """\
Train DeepLab-v2 with the original recipe: SGD momentum 0.9, poly learning rate, classifier
10x/20x, weight decay on conv weights, random scale/mirror/crop. The original's flags keep their
names and defaults; --config FILE (JSON/YAML) supplies any of them, flags given on the command
line win. Without --restore-from the network is trained from scratch (Kaiming init, batch norm
trained). A run folder (--snapshot-dir) holds one run: continue it with --resume, or move it
aside with --overwrite. Multi-GPU / multi-node: torchrun --nproc_per_node N -m deeplab_resnet
train ... (--batch-size is the global batch)."""


def help_text(f: dataclasses.Field) -> str:
    kind, _, _ = field_type(f.name)
    if f.default is dataclasses.MISSING:
        default = ",".join(str(v) for v in f.default_factory())  # type: ignore[misc]
    elif kind is bool:
        default = "on" if f.default else "off"
    else:
        default = f.default
    text = f.metadata["help"]
    return text if default is None or "default:" in text else f"{text} (default: {default})"


def add_setting(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    """One flag for the field ``f``. Its default is not set here (``SUPPRESS``): only the flags
    given appear in the parsed namespace, so that they, and only they, override ``--config``."""
    kind, _, _ = field_type(f.name)
    common = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text(f)}
    if kind is bool:
        group.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, **common)
    else:
        group.add_argument(flag_name(f.name), metavar=field_metavar(f.name), **common)


def add_arguments(p: argparse.ArgumentParser) -> None:
    groups = {ORIGINAL: p.add_argument_group(ORIGINAL), MORE: p.add_argument_group(MORE)}
    for f in fields():
        add_setting(groups[f.metadata["group"]], f)
    o = p.add_argument_group("run")
    o.add_argument("--config", default=None, help="JSON/YAML file of settings (flag names as keys)")
    o.add_argument(
        "--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
        help="continue exactly from CHECKPOINT (default: the newest in --snapshot-dir)",
    )  # fmt: skip
    o.add_argument(
        "--overwrite", action="store_true",
        help="start a new run in a --snapshot-dir that holds another run, after moving that run aside to "
        "DIR.old-DATE-TIME (nothing is deleted)",
    )  # fmt: skip


def given_settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line, converted and checked."""
    names = {f.name for f in fields()}
    given = {}
    for name, value in vars(args).items():
        if name in names:
            value = value if isinstance(value, bool) else parse_flag(name, value)
            given[name] = value
    return given


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < ``--config`` file < flags given on the command line."""
    file_values = load_config_file(args.config) if args.config else {}
    cfg = config_from_sources(file_values, given_settings(args))
    if not args.resume and (not cfg.data_dir or not cfg.data_list):
        raise DeepLabError("--data-dir and --data-list are required (on the command line or in --config)")
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..training.loop import train  # torch: imported once the command runs, not for --help

    train(resolve_config(args), resume=args.resume, overwrite=args.overwrite)
    return 0
