"""The original training recipe (docs/original.md §4) as PyTorch pieces, and one training step.

* SGD, momentum 0.9 (torch's SGD with ``dampening=0`` is TF's MomentumOptimizer: ``v = m v + g``,
  ``w -= lr v``). Poly LR ``lr · (1 − step/num_steps)^power`` set before every step.
* Learning-rate multipliers: backbone 1x, classifier weights 10x, classifier biases 20x.
* Weight decay: the original adds ``wd · ½‖w‖²`` over the conv weights (backbone and classifier)
  to the loss. Its gradient is ``wd · w``, which is exactly what torch's SGD adds to the
  gradient with ``weight_decay=wd`` (before momentum, as the loss term would). So the conv-weight
  groups get ``weight_decay=wd`` and biases and BN parameters get 0 — the same optimisation, with
  the L2 term left out of the reported loss.
* Loss: softmax cross-entropy on the stride-8 logits against the labels resized to the logit
  grid by TF1 ``resize_nearest_neighbor`` (``src = floor(dst · in/out)``, see
  ``data/transforms.py``), averaged over the valid pixels of the (global) batch; the ignore label
  and any label ≥ num_classes do not count. With ``--msc``: the sum of the four such losses
  (each scale, and the max-fused logits), labels resized to each output's grid.
  ``--loss-resolution image`` (ours, not the original's) instead upsamples every output to the
  crop size with the model's own test-time resize (``model.upsample``) and takes the
  cross-entropy against the full-resolution labels: the logits are then trained for what the
  evaluation scores (boundaries between logit cells), at the cost of a crop-sized softmax.
* ``--class-weights FILE`` (ours): each pixel's cross-entropy times the weight of its label
  (``data/tools/class_weights.py``: median frequency or ENet's inverse log frequency), still
  divided by the number of valid pixels (not by the sum of their weights), so the weights scale
  the gradient of their classes as written.
* ``--ohem-keep F`` / ``--ohem-min-kept N`` (ours): online hard-example mining, per loss term
  (each MSC output on its own) and per micro-batch of each process: of the ``n`` valid pixels,
  only the ``k = min(n, max(N, ceil(F · n)))`` with the largest (weighted) loss count, and the
  term is their mean (the kept count summed over processes, as above). ``F = 1`` (the default)
  keeps every pixel: the original loss.
* ``--grad-update-every K`` (Caffe ``iter_size``): K micro-batches of ``--batch-size`` each, one
  update with the average of their gradients. As in Caffe, each micro-batch's loss is a mean over
  its own valid pixels, so this equals one batch of K·batch-size exactly when the micro-batches
  have equal valid-pixel counts (and only approximately otherwise).

:func:`train_step` is the one training step: the training loop, the benchmark suite and
``benchmarks/train_step.py`` all call it, so that what is timed is what trains.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data.transforms import resize_nearest
from ..errors import DeepLabError
from ..models.deeplab import DeepLabV2
from .config import TrainConfig

Upsample = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]


def poly_lr(base_lr: float, step: int, num_steps: int, power: float) -> float:
    """The original's schedule: ``base_lr · (1 − step/num_steps)^power``."""
    return base_lr * (1.0 - step / num_steps) ** power


def label_targets(labels: torch.Tensor, size: tuple[int, int], num_classes: int, ignore_label: int) -> torch.Tensor:
    """Labels on the logit grid (TF nearest neighbour), with every pixel not to be learnt set to -100."""
    y = resize_nearest(labels, size)
    valid = (y >= 0) & (y < num_classes) & (y != ignore_label)
    return torch.where(valid, y, torch.full_like(y, -100))


def seg_loss(
    outputs: list[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    ignore_label: int,
    *,
    world: int = 1,
    upsample: Upsample | None = None,
    class_weights: torch.Tensor | None = None,
    ohem_keep: float = 1.0,
    ohem_min_kept: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sum over ``outputs`` of the mean cross-entropy over valid pixels of the global batch.

    Each output's summed loss is divided by its valid-pixel count over all processes (times
    ``world``, since DDP averages gradients over processes), so that the gradient equals that
    of one process holding the whole batch.

    Args:
        outputs: logits ``(N, C, h, w)``, one per loss term.
        labels: ``(N, H, W)`` integer labels at crop resolution.
        num_classes: labels in ``[0, num_classes)`` count; others are ignored.
        ignore_label: this label is ignored too.
        world: number of DDP processes.
        upsample: ``None`` (the original): labels are resized to each output's grid by nearest
            neighbour. Otherwise ``upsample(logits, (H, W))`` (e.g. ``model.upsample``) brings
            each output to the labels' size and the loss is taken at full resolution.
        class_weights: ``(num_classes,)`` weight of each class's pixels (``None``: all 1).
        ohem_keep, ohem_min_kept: hard-example mining (see the module docstring); ``1.0`` keeps all.

    Returns ``(loss, per-output mean losses)``.
    """
    if upsample is not None:
        outputs = [upsample(o.float(), tuple(labels.shape[-2:])) for o in outputs]
    targets = [label_targets(labels, o.shape[-2:], num_classes, ignore_label) for o in outputs]
    valid = [int((t >= 0).sum()) for t in targets]
    kept = [ohem_kept_count(n, ohem_keep, ohem_min_kept) for n in valid]
    counts = torch.tensor(kept, dtype=torch.float64, device=labels.device)
    if world > 1:
        dist.all_reduce(counts)
    weight = None if class_weights is None else class_weights.to(device=labels.device, dtype=torch.float32)
    total = outputs[0].new_zeros((), dtype=torch.float32)
    parts = []
    for out, target, n, k, count in zip(outputs, targets, valid, kept, counts):
        summed = _summed_loss(out.float(), target, weight, k if k < n else None)
        term = summed * (world / max(float(count), 1.0))
        total = total + term
        parts.append(term.detach())
    return total, parts


def ohem_kept_count(valid: int, keep: float, min_kept: int) -> int:
    """Pixels kept by hard-example mining out of ``valid``: ``min(valid, max(min_kept, ceil(keep · valid)))``."""
    if keep >= 1.0:
        return valid
    # Rounded first so that e.g. 0.3 · 10 = 3.0000000000000004 keeps 3 pixels, not 4.
    return min(valid, max(min_kept, 1, math.ceil(round(keep * valid, 6))))


def _summed_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, kept: int | None
) -> torch.Tensor:
    """The (weighted) cross-entropy summed over the ``kept`` valid pixels of largest loss, or over
    all valid pixels when ``kept`` is ``None`` (then by the one reduction the original uses)."""
    if kept is None:
        return F.cross_entropy(logits, target, weight=weight, ignore_index=-100, reduction="sum")
    per_pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=-100, reduction="none")
    return per_pixel[target >= 0].topk(kept, sorted=False).values.sum()


def param_groups(model: DeepLabV2, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Backbone convs 1x (decayed), BN 1x (not decayed), classifier weights 10x (decayed), biases 20x."""
    cls_w, cls_b = model.classifier_parameters()
    groups = [
        {"name": "classifier_weights", "params": cls_w, "lr_mult": 10.0, "weight_decay": cfg.weight_decay},
        {"name": "classifier_biases", "params": cls_b, "lr_mult": 20.0, "weight_decay": 0.0},
    ]
    if not cfg.fine_tune:
        convs, norms = [], []
        for m in model.backbone.modules():
            if isinstance(m, nn.Conv2d):
                convs.append(m.weight)
            elif isinstance(m, nn.BatchNorm2d) and m.weight.requires_grad:
                norms += [m.weight, m.bias]
        groups.insert(0, {"name": "backbone_convs", "params": convs, "lr_mult": 1.0, "weight_decay": cfg.weight_decay})
        if norms:
            groups.insert(1, {"name": "backbone_bn", "params": norms, "lr_mult": 1.0, "weight_decay": 0.0})
    return groups


def build_optimizer(model: DeepLabV2, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the original's train.py) or Adam (its fine_tune.py) over :func:`param_groups`."""
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum)
    return torch.optim.Adam(groups, lr=cfg.learning_rate)  # TrainConfig admits only these two


class NonFiniteLoss(DeepLabError):
    """The loss was NaN or infinite; the weights were not updated."""

    def __init__(self, loss: float):
        super().__init__(f"the loss became {loss}")
        self.loss = loss


@dataclass
class StepResult:
    """One step's loss (mean over micro-batches and processes) and its last micro-batch, which
    the image summary shows."""

    loss: float
    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor


# Over 60 lines only through its keyword arguments and their documentation; the step itself is
# the ~30 lines at the end, kept in one piece so that it reads top to bottom.
def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    lr: float,
    num_classes: int,
    ignore_label: int,
    accumulate: int = 1,
    world: int = 1,
    upsample: Upsample | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    class_weights: torch.Tensor | None = None,
    ohem_keep: float = 1.0,
    ohem_min_kept: int = 0,
) -> StepResult:
    """One update: set each group's LR (``lr · lr_mult``), take ``accumulate`` micro-batches
    from ``batches`` (forward, :func:`seg_loss`, backward), then step the optimizer.

    Args:
        net: the network as trained (the model, or :class:`MSC` around it, or DDP around that).
        optimizer: from :func:`build_optimizer`.
        batches: ``(images, labels)`` pairs; moved to the network's device here.
        lr: the base learning rate of this step (see :func:`poly_lr`).
        num_classes, ignore_label: which labels count in the loss.
        accumulate: micro-batches per update (``--grad-update-every``).
        world: DDP processes; with DDP only the last micro-batch synchronises gradients.
        upsample: ``--loss-resolution image``: the model's test-time upsampling (see :func:`seg_loss`).
        amp_dtype: autocast the forward pass to this dtype (``None``: full precision).
        channels_last: feed the images in channels_last memory format.
        class_weights, ohem_keep, ohem_min_kept: the loss options of :func:`seg_loss`.

    Raises :class:`NonFiniteLoss` (before updating anything) when the loss is not finite; with
    DDP every process sees the same mean loss, so all of them stop together.
    """
    device = next(net.parameters()).device
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    loss_total = torch.zeros((), dtype=torch.float64)
    for micro in range(accumulate):
        x, labels = next(batches)
        x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        last = micro == accumulate - 1
        sync = contextlib.nullcontext() if (last or world == 1) else net.no_sync()  # type: ignore[operator]
        with sync:
            with autocast:
                out = net(x)
            outputs = out if isinstance(out, list) else [out]
            loss, _ = seg_loss(
                outputs, labels, num_classes, ignore_label, world=world, upsample=upsample,
                class_weights=class_weights, ohem_keep=ohem_keep, ohem_min_kept=ohem_min_kept,
            )  # fmt: skip
            (loss / accumulate).backward()
        loss_total += loss.detach().double().cpu() / accumulate
    loss_value = _mean_over_processes(loss_total, device, world)
    if not math.isfinite(loss_value):
        raise NonFiniteLoss(loss_value)
    optimizer.step()
    return StepResult(loss_value, x, labels, outputs[-1])


def _mean_over_processes(loss: torch.Tensor, device: torch.device, world: int) -> float:
    """The mean of ``loss`` over the DDP processes (``loss`` itself without DDP)."""
    if world > 1:
        loss = loss.to(device)  # NCCL reduces device tensors only
        dist.all_reduce(loss)
        loss /= world
    return float(loss)
