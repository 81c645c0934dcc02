"""Overfit the 20 training images of voc_fixture and score them with the project's evaluation.

The images (bilinear) and labels (nearest) are resized to --side x --side pixels (aspect ratio
not kept), written to a temporary directory, and trained on whole (the crop is the whole image:
no padding, random crop, scale or mirror), from scratch with a reduced-depth model (BN trained).
Then train mIoU is computed by ``evaluate_pairs`` on the same small images.

With ``--loss-resolution logits`` (the original recipe: the loss on the stride-8 grid) train
mIoU stays near 0.58 at 97x97 while that loss falls to ~0.01: 13x13 logits trained at their cell
centres do not place the boundaries at full resolution. ``--loss-resolution image`` (the loss on
logits upsampled by ``model.upsample``) trains what the evaluation scores. Measured 2026-11-24,
shared 2-core CPU (BENCHMARKS.md)::

    export OMP_NUM_THREADS=1 PYTHONPATH=src
    python benchmarks/train_overfit.py --side 129 --width 16 --steps 500 --lr 3e-3 --loss-resolution image
    # train mIoU 0.906, pixel accuracy 0.983, 228 s of training; the same numbers on a rerun
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
VOC = REPO.parent / "shared" / "data" / "voc_fixture"


def shrink_list(src: Path, list_name: str, dst: Path, side: int) -> Path:
    from deeplab_resnet.data.lists import read_list

    lines = []
    for pair in read_list(src, src / list_name):
        image, label = Image.open(pair.image), Image.open(pair.label)
        size = (side, side)  # square: the training crop is the whole image, no padding
        (dst / "img").mkdir(parents=True, exist_ok=True)
        (dst / "lab").mkdir(parents=True, exist_ok=True)
        image.convert("RGB").resize(size, Image.BILINEAR).save(dst / "img" / f"{pair.name}.png")
        small = label.resize(size, Image.NEAREST)  # stays palette mode: indices kept
        small.save(dst / "lab" / f"{pair.name}.png")
        lines.append(f"/img/{pair.name}.png /lab/{pair.name}.png")
    (dst / "list.txt").write_text("\n".join(lines) + "\n")
    return dst / "list.txt"


def overfit(
    workdir: Path, *, side: int, steps: int, steps2: int, width: int, lr: float, seed: int, batch: int,
    loss_resolution: str = "logits",
) -> dict:  # fmt: skip
    from deeplab_resnet.data.lists import read_list
    from deeplab_resnet.evaluation.evaluate import evaluate_pairs
    from deeplab_resnet.training.config import TrainConfig
    from deeplab_resnet.training.loop import train
    from deeplab_resnet.weights import load_model

    data = workdir / "data"
    list_path = shrink_list(VOC, "list_train.txt", data, side)
    crop = side
    cfg = TrainConfig(
        data_dir=str(data), data_list=str(list_path), model="deeplab_v2_resnet_tiny", model_width=width,
        input_size=f"{crop},{crop}", batch_size=batch, num_steps=steps, optimizer="adam", learning_rate=lr,
        random_seed=seed, save_pred_every=10**9, checkpoint_every=10**9, snapshot_dir=str(workdir / "run"),
        num_workers=0, progress=False, tensorboard=False, log_every=25, loss_resolution=loss_resolution,
    )  # fmt: skip
    t0 = time.perf_counter()
    weights = train(cfg)
    if steps2 > 0:  # phase 2: the original's default, frozen BN, from the phase-1 weights
        weights = train(
            dataclasses.replace(
                cfg, restore_from=str(weights), num_steps=steps2, learning_rate=lr / 3,
                snapshot_dir=str(workdir / "run2"),
            )
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    model = load_model(weights)
    scores = evaluate_pairs(model, read_list(data, list_path)).scores()
    digest = float(sum(v.double().abs().sum() for v in model.state_dict().values() if v.is_floating_point()))
    return {"train_miou": scores.mean_iou, "pixel_accuracy": scores.pixel_accuracy, "seconds": seconds,
            "weights_digest": digest}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=97, help="images are resized to SIDE x SIDE")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--steps2", type=int, default=0, help="phase 2 steps (frozen BN, LR/3); 0: none")
    p.add_argument("--width", type=int, default=16, help="res2 width of the 1-1-1-1 block model")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--loss-resolution", choices=("logits", "image"), default="logits")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = overfit(Path(tmp), side=args.side, steps=args.steps, steps2=args.steps2, width=args.width, lr=args.lr, seed=args.seed,
                         batch=args.batch, loss_resolution=args.loss_resolution)  # fmt: skip
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
    print("train mIoU >= 0.9:", bool(np.isfinite(result["train_miou"]) and result["train_miou"] >= 0.9))


if __name__ == "__main__":
    main()
