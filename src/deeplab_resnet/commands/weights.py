"""``deeplab weights list|download|path|save-pretrained|push-to-hub``: the registry of known pretrained
weights, and model folders for the Hugging Face Hub."""

from __future__ import annotations

import argparse

from ..cache import cache_dir
from ..errors import DeepLabError

DESCRIPTION = (
    "The known pretrained weights (the DeepLab-v2 release). 'download NAME' fetches the release zip, "
    "converts the model once and caches it under $XDG_CACHE_HOME/deeplab_resnet (default "
    "~/.cache/deeplab_resnet); afterwards "
    "'--weights NAME' works offline anywhere. 'save-pretrained' and 'push-to-hub' write weights as a "
    "Hugging Face Hub model folder (model.safetensors, config.json, README.md model card), which "
    "'--weights hf://OWNER/REPO[@REVISION]' reads in every command."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="the known names, what they are, and whether they are cached")
    d = sub.add_parser("download", help="download (or take --from-zip), verify, convert and cache")
    d.add_argument("name", metavar="NAME")
    d.add_argument("--from-zip", default=None, help="use this already-downloaded release zip")
    d.add_argument(
        "--url", default=None, help="download from this mirror instead (default: $DEEPLAB_RESNET_RELEASE_URL if set)"
    )
    d.add_argument("--force", action="store_true", help="convert again even if cached")
    path = sub.add_parser("path", help="print the cached file of NAME (error if not downloaded)")
    path.add_argument("name", metavar="NAME")
    save = sub.add_parser("save-pretrained", help="write weights as a Hub model folder (weights, config, card)")
    save.add_argument("folder", metavar="DIR")
    _add_hub_arguments(save)
    save.add_argument(
        "--repo-id", default=None, metavar="OWNER/REPO", help="the Hub repository it is for (for the card)"
    )
    save.add_argument("--force", action="store_true", help="replace the files of an earlier save in DIR")
    push = sub.add_parser(
        "push-to-hub", help="upload weights as a Hub model repository (token: HF_TOKEN or huggingface-cli login)"
    )
    push.add_argument("repo_id", metavar="OWNER/REPO")
    _add_hub_arguments(push)
    push.add_argument("--private", action="store_true", help="create the repository private")


def _add_hub_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="weights as every command takes them (file, name, hf://...)")
    p.add_argument("--report", default=None, help="report.json of 'deeplab evaluate' on these weights (for the card)")
    p.add_argument("--license", default=None, help="the weights' license, as a Hub license id (e.g. mit)")
    p.add_argument("--hub-dataset", action="append", default=[], metavar="ID", help="a Hub dataset id for the card")
    p.add_argument("--tag", action="append", default=[], help="an extra Hub tag for the card")


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
    if action in ("save-pretrained", "push-to-hub"):
        return _run_hub(args)
    target = fetch(args.name, url=args.url, from_zip=args.from_zip, force=args.force)
    entry = get_entry(args.name)
    print(f"{args.name}: {target}")
    print(f"cite: {entry.citation}")
    return 0


def _run_hub(args: argparse.Namespace) -> int:
    from ..weights.pretrained import push_to_hub, save_pretrained

    card = {"report": args.report, "license": args.license, "datasets": args.hub_dataset, "tags": args.tag}
    if args.action == "save-pretrained":
        for path in save_pretrained(args.weights, args.folder, repo_id=args.repo_id, overwrite=args.force, **card):
            print(path)
        return 0
    print(push_to_hub(args.weights, args.repo_id, private=args.private or None, **card))
    return 0
