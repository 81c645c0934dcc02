"""Make the README's docs/images/serve_page.png: the browser test's screenshot, with a realistic model.

Saves a calibrated-BN ResNet-101 (``bench.realistic.realistic_model``: random weights, batch norms
set on fixture images, tf convention so that photos run at their own size) to a weights file, runs
``tests/test_serve_browser.py``'s first test with it (``DEEPLAB_SERVE_WEIGHTS``,
``DEEPLAB_SCREENSHOT``), then stores the screenshot as a palette PNG of under ~300 KB whose first
entries are the VOC colours and the page's flat colours, so that the legend's swatches stay exact.

    PYTHONPATH=src python benchmarks/serve_screenshot.py docs/images/serve_page.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from deeplab_resnet import save_weights
from deeplab_resnet.atomic import atomic_write
from deeplab_resnet.bench.realistic import image_batch, realistic_model
from deeplab_resnet.dataset_info import voc_palette
from deeplab_resnet.models import create_model

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "voc_fixture" / "JPEGImages"
PAGE_COLOURS = [(250, 250, 250), (255, 255, 255), (34, 34, 34), (0, 0, 238)]  # background, text, link


def realistic_weights(path: Path) -> Path:
    paths = sorted(PHOTOS.glob("*.jpg"))
    mean = create_model("deeplab_v2_resnet101", num_classes=21, convention="tf").mean_bgr
    calibration = [image_batch(paths, 241, 4, mean, offset=4 * i) for i in range(2)]
    model = realistic_model("deeplab_v2_resnet101", convention="tf", calibration=calibration)
    save_weights(model, path, source="realistic_model (random weights, calibrated batch norms)")
    return path


def screenshot(weights: Path, out: Path) -> None:
    env = {**os.environ, "DEEPLAB_SERVE_WEIGHTS": str(weights), "DEEPLAB_SCREENSHOT": str(out)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_serve_browser.py",
        "-k",
        "choosing",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    subprocess.run(cmd, cwd=REPO, env=env, check=True)


def small_png(shot: Path, out: Path) -> None:
    """``shot`` in 256 colours: the fixed ones exact, the rest (the photos) by median cut."""
    rgb = Image.open(shot).convert("RGB")
    fixed = voc_palette(21) + PAGE_COLOURS
    learned = rgb.quantize(256 - len(fixed), method=Image.Quantize.MEDIANCUT).getpalette()[: 3 * (256 - len(fixed))]
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for colour in fixed for v in colour] + learned)
    small = rgb.quantize(palette=palette, dither=Image.Dither.NONE)
    atomic_write(out, lambda tmp: small.save(tmp, format="PNG", optimize=True))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="where to write the PNG, e.g. docs/images/serve_page.png")
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        weights = realistic_weights(Path(tmp) / "realistic.safetensors")
        screenshot(weights, Path(tmp) / "shot.png")
        small_png(Path(tmp) / "shot.png", args.out)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
