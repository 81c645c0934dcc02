"""A realistic model to time and compare: random weights with the BN statistics of a trained network.

A randomly initialised 101-layer network is chaotic: float32 rounding differences grow to ~1e-3
of its logits, so neither speed-ups nor agreement checks of the fast paths would mean anything.
Calibrating its batch norms on real images gives it the well-conditioned activations of a
trained one.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.lists import read_list
from ..images import read_image
from ..inference.quantize import shared_image
from ..models import create_model
from ..models.layers import BatchNorm
from ..preprocess import to_batch
from ..weights.loading import load_model


def calibrate_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor]) -> nn.Module:
    """Set every BN's running statistics to the batch statistics of ``batches`` (one pass over all).

    Gives a randomly initialised network the kind of BN statistics a trained one has: each BN
    normalises what it actually sees on real images. The model is left frozen, in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, BatchNorm)]
    for bn in bns:
        bn.momentum = 1.0  # running stats := this pass's batch stats
        bn.set_frozen(False)
    model.train()
    with torch.no_grad():
        model(torch.cat(list(batches)))
    for bn in bns:
        bn.momentum = 0.1
        bn.set_frozen(True)
    return model.eval()


def realistic_model(
    name: str = "deeplab_v2_resnet101", *, convention: str = "caffe", num_classes: int = 21,
    calibration: Sequence[torch.Tensor] = (), seed: int = 0,
) -> nn.Module:  # fmt: skip
    """A randomly initialised model with realistic BN parameters (for speed and agreement checks).

    BN scales are drawn from U(0.5, 1.5) and shifts from N(0, 0.1), except the last BN of every
    residual branch, whose scale is U(0.1, 0.3) as in trained ResNets (the branch adds a
    correction to the shortcut); running statistics come from ``calibration`` batches (real
    images). Without that, a random 101-layer network is chaotic: rounding differences of
    float32 grow to ~1e-3 of the logits and no float32 comparison means anything.
    """
    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes, convention=convention)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod_name, m in model.named_modules():
            if isinstance(m, BatchNorm):
                low, high = (0.1, 0.3) if mod_name.endswith("bn_branch2c") else (0.5, 1.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * (high - low) + low)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    if calibration:
        calibrate_batchnorm(model, calibration)
    return model.eval()


def add_benchmark_model_arguments(ap: argparse.ArgumentParser, *, data_dir: Path, score_images: int) -> None:
    """The options of the CPU benchmarks: the model measured (:func:`benchmark_model`), the
    threads, and the images it is calibrated and scored on (:func:`calibration_and_scored`)."""
    ap.add_argument("--model", default="deeplab_v2_resnet101")
    ap.add_argument("--weights", type=Path, default=None,
                    help="a weight file to measure instead of the random-weights realistic model")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=data_dir)
    ap.add_argument("--calibration-list", default="list_train.txt")
    ap.add_argument("--calibration-images", type=int, default=20)
    ap.add_argument("--score-list", default="list_val.txt")
    ap.add_argument("--score-images", type=int, default=score_images)


def calibration_and_scored(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The images of ``--calibration-list`` and the first ``--score-images`` of ``--score-list``,
    which must be other images (a model is not scored on what it was calibrated on)."""
    train = [p.image for p in read_list(args.data_dir, args.data_dir / args.calibration_list)]
    scored = [p.image for p in read_list(args.data_dir, args.data_dir / args.score_list)][: args.score_images]
    shared = shared_image(train, scored)
    if shared is not None:
        raise SystemExit(f"{shared[0]} is also a calibration image ({shared[1]}): score on other images")
    return train, scored


def benchmark_model(args, calibration_paths: Sequence[str | Path]) -> nn.Module:
    """The model a CPU benchmark measures: ``args.weights`` when given (e.g. trained weights, to
    judge reduced precision for real), else :func:`realistic_model` of ``args.model`` with its BN
    calibrated on four of ``calibration_paths`` at 321x321."""
    if getattr(args, "weights", None):
        return load_model(args.weights).eval()
    batch = image_batch([str(p) for p in calibration_paths], 321, 4, (104.008, 116.669, 122.675))
    return realistic_model(args.model, calibration=[batch])


def image_batch(
    paths: Sequence[str | Path], size: int, batch: int, mean_bgr: Sequence[float], *, offset: int = 0
) -> torch.Tensor:
    """``batch`` real images (cycling through ``paths`` from ``offset``) resized to ``size x size``."""
    if not paths:
        g = torch.Generator().manual_seed(offset)
        return torch.randn(batch, 3, size, size, generator=g) * 50
    images = []
    for i in range(batch):
        rgb = read_image(paths[(offset + i) % len(paths)])
        images.append(np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR)))
    return to_batch(images, mean_bgr)
