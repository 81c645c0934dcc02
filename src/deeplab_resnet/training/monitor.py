"""What a run shows while it trains: progress, scalars (JSON lines, TensorBoard), image summaries."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..images import colorize, save_image
from ..models.deeplab import DeepLabV2
from ..preprocess import from_input
from ..progress import Progress
from .config import TrainConfig


class Monitor:
    """Progress line, TensorBoard (when installed), and a JSON-lines log.

    Only the main process (``enabled``) shows or writes anything.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, start: int, enabled: bool):
        self.enabled = enabled
        self.cfg = cfg
        self.bar = None
        self.writer = None
        self.log_path = run_dir / "metrics.jsonl"
        if not enabled:
            return
        if cfg.progress:  # hidden off a terminal: the log_every lines below are the log then
            bar = Progress("training", cfg.num_steps, unit="steps", initial=start)
            self.bar = bar if bar.visible else None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                self.print("TensorBoard is not installed: no event files (pip install 'deeplab_resnet[train]')")

    def print(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def record(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def progress(self, step: int, loss: float, lr: float, samples_per_s: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1, note=f"loss {loss:.4f}, lr {lr:.3g}, {samples_per_s:.2f} samples/s")
        elif step % self.cfg.log_every == 0 or step == self.cfg.num_steps - 1:
            eta = (self.cfg.num_steps - step - 1) * self.cfg.batch_size * self.cfg.grad_update_every / samples_per_s
            self.print(
                f"step {step}/{self.cfg.num_steps}  loss {loss:.4f}  lr {lr:.3g}  {samples_per_s:.2f} samples/s  "
                f"ETA {eta / 60:.0f} min"
            )

    def image(self, step: int, grid: np.ndarray, path: Path) -> None:
        """Show ``grid`` in TensorBoard and save it as the PNG ``path``."""
        if not self.enabled:
            return
        if self.writer is not None:
            self.writer.add_image("images", grid, step, dataformats="HWC")
        save_preview(path, grid)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def summary_grid(x: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, model: DeepLabV2, n: int) -> np.ndarray:
    """The original's image summary: rows of image | ground truth | prediction, in the palette."""
    rows = []
    size = (x.shape[-2], x.shape[-1])
    preds = model.upsample(logits[:n].detach().float(), size).argmax(1).cpu().numpy()
    for i in range(min(n, x.shape[0])):
        image = from_input(x[i], model.mean_bgr)
        gt = colorize(labels[i].cpu().numpy().astype(np.uint8), model.dataset)
        pred = colorize(preds[i].astype(np.uint8), model.dataset)
        rows.append(np.concatenate([image, gt, pred], axis=1))
    return np.concatenate(rows, axis=0)


def save_preview(path: Path, grid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(Image.fromarray(grid), path)
