"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse

from ..errors import DeepLabError


def add_model_arguments(p: argparse.ArgumentParser, *, weights_required: bool = False) -> None:
    p.add_argument(
        "--weights", required=weights_required, default=None if weights_required else "voc12",
        help="weight file (.safetensors, or an original .caffemodel/.ckpt) or a registered name "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--num-classes", type=int, default=None, help="expected class count (checked against the weights)")
    p.add_argument("--dataset", default=None, help="dataset description (voc12, camvid or a JSON/YAML file)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeepLabError(f"--device {name}: CUDA is not available on this machine")
    return name


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise DeepLabError(f"--scales must be numbers separated by commas, got {text!r}") from exc
    if not scales or any(s <= 0 for s in scales):
        raise DeepLabError(f"--scales must be positive numbers, got {text!r}")
    return scales


def load_model_from_args(args: argparse.Namespace, device: str):
    from ..weights import load_model

    return load_model(
        args.weights, num_classes=args.num_classes, dataset=args.dataset,
        ignore_label=getattr(args, "ignore_label", None), device=device,
    )  # fmt: skip
