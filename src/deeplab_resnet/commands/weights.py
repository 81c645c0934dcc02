"""``deeplab weights list|download|path``: the registry of known pretrained weights."""

from __future__ import annotations

import argparse

from ..cache import cache_dir
from ..errors import DeepLabError

DESCRIPTION = (
    "The known pretrained weights (the DeepLab-v2 release). 'download NAME' fetches the release zip, "
    "converts the model once and caches it under $XDG_CACHE_HOME/deeplab_resnet (default "
    "~/.cache/deeplab_resnet); afterwards "
    "'--weights NAME' works offline anywhere."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="the known names, what they are, and whether they are cached")
    d = sub.add_parser("download", help="download (or take --from-zip), verify, convert and cache")
    d.add_argument("name", metavar="NAME")
    d.add_argument("--from-zip", default=None, help="use this already-downloaded release zip")
    d.add_argument("--url", default=None, help="download from this mirror instead")
    d.add_argument("--force", action="store_true", help="convert again even if cached")
    path = sub.add_parser("path", help="print the cached file of NAME (error if not downloaded)")
    path.add_argument("name", metavar="NAME")


def run(args: argparse.Namespace) -> int:
    from ..weights.registry import REGISTRY, cached_path, fetch, get_entry

    action = getattr(args, "action", None) or "list"
    if action == "list":
        print(f"cache: {cache_dir()}")
        for entry in REGISTRY.values():
            state = "cached" if cached_path(entry.name).is_file() else "not downloaded"
            print(f"{entry.name:16} {entry.description} [{entry.convention}, {entry.num_classes} classes; {state}]")
            if entry.warning:
                print(f"{'':16} warning: {entry.warning}")
        return 0
    if action == "path":
        get_entry(args.name)
        target = cached_path(args.name)
        if not target.is_file():
            raise DeepLabError(f"{args.name} is not downloaded; run 'deeplab weights download {args.name}'")
        print(target)
        return 0
    target = fetch(args.name, url=args.url, from_zip=args.from_zip, force=args.force)
    entry = get_entry(args.name)
    print(f"{args.name}: {target}")
    print(f"cite: {entry.citation}")
    return 0
