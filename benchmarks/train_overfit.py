"""Overfit the 20 training images of voc_fixture and score them with the project's evaluation.

The images (bilinear) and labels (nearest) are shrunk so that the longer side is --side pixels,
written to a temporary directory, and trained on whole (the crop covers every image: no random
crop, scale or mirror), from scratch with a reduced-depth model. Then train mIoU is computed by
``evaluate_pairs`` on the same shrunk images at full size.

    PYTHONPATH=src python benchmarks/train_overfit.py --steps 300
"""

from __future__ import annotations

import argparse
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
        scale = side / max(image.size)
        size = (max(round(image.width * scale), 1), max(round(image.height * scale), 1))
        (dst / "img").mkdir(parents=True, exist_ok=True)
        (dst / "lab").mkdir(parents=True, exist_ok=True)
        image.convert("RGB").resize(size, Image.BILINEAR).save(dst / "img" / f"{pair.name}.png")
        small = label.resize(size, Image.NEAREST)  # stays palette mode: indices kept
        small.save(dst / "lab" / f"{pair.name}.png")
        lines.append(f"/img/{pair.name}.png /lab/{pair.name}.png")
    (dst / "list.txt").write_text("\n".join(lines) + "\n")
    return dst / "list.txt"


def overfit(workdir: Path, *, side: int, steps: int, width: int, lr: float, seed: int, batch: int) -> dict:
    import torch

    from deeplab_resnet.data.lists import read_list
    from deeplab_resnet.evaluate import evaluate_pairs
    from deeplab_resnet.train import TrainConfig, train
    from deeplab_resnet.weights import load_model

    data = workdir / "data"
    list_path = shrink_list(VOC, "list_train.txt", data, side)
    crop = side + 1
    cfg = TrainConfig(
        data_dir=str(data), data_list=str(list_path), model="deeplab_v2_resnet_tiny", model_width=width,
        input_size=f"{crop},{crop}", batch_size=batch, num_steps=steps, optimizer="adam", learning_rate=lr,
        random_seed=seed, save_pred_every=10**9, checkpoint_every=10**9, snapshot_dir=str(workdir / "run"),
        num_workers=0, progress=False, tensorboard=False, log_every=25,
    )  # fmt: skip
    t0 = time.perf_counter()
    weights = train(cfg)
    seconds = time.perf_counter() - t0
    model = load_model(weights)
    scores = evaluate_pairs(model, read_list(data, list_path)).scores()
    digest = float(sum(v.double().abs().sum() for v in model.state_dict().values() if v.is_floating_point()))
    torch.set_num_threads(torch.get_num_threads())
    return {"train_miou": scores.mean_iou, "pixel_accuracy": scores.pixel_accuracy, "seconds": seconds,
            "weights_digest": digest}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=128, help="longer image side after shrinking")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=int, default=16, help="res2 width of the 1-1-1-1 block model")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = overfit(Path(tmp), side=args.side, steps=args.steps, width=args.width, lr=args.lr, seed=args.seed,
                         batch=args.batch)  # fmt: skip
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
    print("per class IoU not shown; train mIoU >= 0.9:", result["train_miou"] >= 0.9, np.isfinite(result["train_miou"]))


if __name__ == "__main__":
    main()
