"""Training DeepLab-v2 with the original recipe (docs/original.md §4), in one file, top to bottom.

    config → pre-flight data check → model (restored or from scratch) → optimizer →
    resume → data stream → loop { poly LR; forward; loss; backward (accumulated); step;
    log; image summary; validation; checkpoint } → final weights.

The recipe, and how it maps onto PyTorch:

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
* ``--grad-update-every K`` (Caffe ``iter_size``): K micro-batches of ``--batch-size`` each, one
  update with the average of their gradients. As in Caffe, each micro-batch's loss is a mean over
  its own valid pixels, so this equals one batch of K·batch-size exactly when the micro-batches
  have equal valid-pixel counts (and only approximately otherwise).
* Batch norm is frozen unless ``--is-training``. From scratch (no ``--restore-from``) it is
  trained, because a frozen BN with identity statistics cannot normalise a random network.

Distributed: launched by ``torchrun`` the run uses DDP; ``--batch-size`` is the *global* batch
(split over the processes), the loss is normalised by the global count of valid pixels, and
every process reads its slice of the same global batch, so N processes follow the same
trajectory as one (up to float summation order). Rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write_text
from ..data.datasets import StreamBatchSampler, TrainStream
from ..data.lists import Pair, read_list
from ..data.transforms import TrainTransform, resize_nearest
from ..dataset_info import DatasetInfo, resolve_dataset_info
from ..distributed import DistInfo, dist_from_env, init_distributed
from ..errors import DeepLabError
from ..models.deeplab import DeepLabV2, create_model, init_backbone_from_scratch, model_from_architecture
from ..models.msc import MSC
from . import checkpoint as ckpt

# --------------------------------------------------------------------------------------------
# Configuration: the original flags (same names and defaults) plus ours.
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that defines a run. Field names are the command-line flags with ``_`` for ``-``."""

    data_dir: str = ""
    data_list: str = ""
    batch_size: int = 10
    input_size: str = "321,321"
    learning_rate: float = 2.5e-4
    momentum: float = 0.9
    num_steps: int = 20001
    power: float = 0.9
    random_mirror: bool = False
    random_scale: bool = False
    random_seed: int = 1234
    restore_from: str | None = None
    save_num_images: int = 2
    save_pred_every: int = 1000
    snapshot_dir: str = "./snapshots/"
    weight_decay: float = 5e-4
    num_classes: int | None = None  # the original's 21 unless --dataset says otherwise
    ignore_label: int | None = None  # the original's 255 unless --dataset says otherwise
    not_restore_last: bool = False
    is_training: bool = False
    # Ours.
    grad_update_every: int = 1
    msc: bool = False
    msc_scales: list[float] = field(default_factory=lambda: [1.0, 0.75, 0.5])
    scale_mode: str = "continuous"
    fine_tune: bool = False
    optimizer: str = "sgd"
    model: str = "deeplab_v2_resnet101"
    model_blocks: list[int] | None = None  # from scratch: blocks per stage (reduced-depth variants)
    model_width: int | None = None  # from scratch: res2 bottleneck width
    convention: str | None = None
    dataset: str | None = None
    keep_checkpoints: int = 3
    checkpoint_every: int | None = None
    num_workers: int = 2
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    val_list: str | None = None
    val_data_dir: str | None = None
    val_every: int | None = None
    strict_labels: bool = False
    loss_resolution: str = "logits"  # "logits": the original (stride-8 grid); "image": crop size
    check_data: bool = True
    progress: bool = True
    tensorboard: bool = True
    log_every: int = 10

    @property
    def crop_size(self) -> tuple[int, int]:
        try:
            h, w = (int(v) for v in str(self.input_size).split(","))
        except ValueError as exc:
            raise DeepLabError(f"--input-size must be 'HEIGHT,WIDTH', got {self.input_size!r}") from exc
        if h < 1 or w < 1:
            raise DeepLabError(f"--input-size must be positive, got {self.input_size!r}")
        return h, w

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Settings that may change between a run and its resumption without changing the result.
RUNTIME_KEYS = frozenset(
    {"num_workers", "device", "progress", "tensorboard", "log_every", "check_data", "snapshot_dir"}
)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML mapping of flag names (``batch-size`` or ``batch_size``) to values."""
    path = Path(path)
    if not path.is_file():
        raise DeepLabError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped]

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise DeepLabError(f"{path}: not a valid config file ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise DeepLabError(f"{path}: a config file must be a mapping of flag names to values")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in known:
            raise DeepLabError(f"{path}: unknown setting {key!r}")
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# Pieces of the recipe.
# --------------------------------------------------------------------------------------------


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
    upsample: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = None,
):
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

    Returns ``(loss, per-output mean losses as floats)``.
    """
    if upsample is not None:
        outputs = [upsample(o.float(), tuple(labels.shape[-2:])) for o in outputs]
    targets = [label_targets(labels, o.shape[-2:], num_classes, ignore_label) for o in outputs]
    counts = torch.stack([(t >= 0).sum() for t in targets]).to(torch.float64)
    if world > 1:
        dist.all_reduce(counts)
    total = outputs[0].new_zeros((), dtype=torch.float32)
    parts = []
    for out, target, count in zip(outputs, targets, counts):
        summed = F.cross_entropy(out.float(), target, ignore_index=-100, reduction="sum")
        term = summed * (world / max(float(count), 1.0))
        total = total + term
        parts.append(term.detach())
    return total, parts


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
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum)
    if cfg.optimizer == "adam":  # the original's fine_tune.py
        return torch.optim.Adam(groups, lr=cfg.learning_rate)
    raise DeepLabError(f"--optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")


def preflight_check(pairs: list[Pair], num_classes: int, ignore_label: int, strict: bool, log) -> None:
    """Open every pair before training: unreadable/missing files, size mismatches and colour
    masks are errors naming the file; label values outside the classes are a warning with
    counts (an error with ``strict``)."""
    from ..data.check import check_pair

    errors: list[str] = []
    bad_files: list[tuple[str, int, list[int]]] = []
    for pair in pairs:
        result = check_pair(pair)
        errors += result.errors
        n_bad = result.out_of_range(num_classes, ignore_label)
        if n_bad:
            hist = result.histogram
            values = [v for v in range(num_classes, 256) if hist[v] and v != ignore_label]  # type: ignore[index]
            bad_files.append((str(pair.label), n_bad, values))
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise DeepLabError(f"{len(errors)} problem(s) in the training list: " + "; ".join(errors[:5]) + more)
    if bad_files:
        total = sum(n for _, n, _ in bad_files)
        first = "; ".join(f"{p}: {n} px with values {vals}" for p, n, vals in bad_files[:3])
        msg = (
            f"{len(bad_files)} label file(s) have {total} pixel(s) outside [0, {num_classes}) other than the "
            f"ignore label {ignore_label} (they are ignored in the loss): {first}"
        )
        if strict:
            raise DeepLabError(msg + " (--strict-labels)")
        log("warning: " + msg)


# --------------------------------------------------------------------------------------------
# Model construction.
# --------------------------------------------------------------------------------------------


def resolve_dataset(cfg: TrainConfig, from_weights: DatasetInfo | None) -> DatasetInfo:
    """``--dataset``, the weights' dataset, ``--num-classes`` and ``--ignore-label``, combined as every command does."""
    return resolve_dataset_info(
        cfg.dataset, from_weights=from_weights, num_classes=cfg.num_classes, ignore_label=cfg.ignore_label
    )


def build_model(cfg: TrainConfig, log) -> tuple[DeepLabV2, dict[str, Any]]:
    """The network, restored from ``--restore-from`` or initialised from scratch."""
    frozen = not cfg.is_training
    if cfg.restore_from:
        from ..weights import load_state, read_weights

        state, meta = read_weights(cfg.restore_from)
        dataset = resolve_dataset(cfg, meta.dataset)
        if dataset.num_classes != meta.num_classes and not cfg.not_restore_last:
            raise DeepLabError(
                f"{cfg.restore_from}: the weights have {meta.num_classes} classes but {dataset.num_classes} "
                "were asked for (use --not-restore-last to start a new classifier)"
            )
        convention = cfg.convention or meta.convention
        model = model_from_architecture(meta.architecture, convention=convention, dataset=dataset, frozen_bn=frozen)
        load_state(model, state, skip_classifier=cfg.not_restore_last, source=cfg.restore_from)
        how = f"restored from {cfg.restore_from}" + (" (new classifier)" if cfg.not_restore_last else "")
    else:
        dataset = resolve_dataset(cfg, None)
        shape: dict[str, Any] = {}
        if cfg.model_blocks:
            shape["blocks"] = tuple(int(b) for b in cfg.model_blocks)
        if cfg.model_width:
            shape["width"] = int(cfg.model_width)
        try:
            model = create_model(
                cfg.model, dataset=dataset, convention=cfg.convention or "caffe", frozen_bn=frozen, **shape
            )
        except ValueError as exc:
            raise DeepLabError(f"--model: {exc}") from exc
        init_backbone_from_scratch(model)
        if frozen:
            model.set_bn_frozen(False)
            log(
                "no --restore-from: training from scratch (Kaiming-initialised convs, identity BN statistics, "
                "zero-gamma residual branches); batch norm is trained, as with --is-training, because frozen "
                "BN cannot normalise a random network"
            )
        how = "from scratch"
    info = {"architecture": model.architecture, "convention": model.convention, "dataset": model.dataset.to_dict()}
    return model, {"how": how, **info}


def model_from_checkpoint(state: dict[str, Any]) -> DeepLabV2:
    """Rebuild the network a checkpoint was saved from (same architecture, convention, classes)."""
    dataset = DatasetInfo.from_dict(state["model_info"]["dataset"])
    return model_from_architecture(
        state["model_info"]["architecture"], convention=state["model_info"]["convention"], dataset=dataset
    )


# --------------------------------------------------------------------------------------------
# Monitoring.
# --------------------------------------------------------------------------------------------


class Monitor:
    """Progress bar (tqdm when installed), TensorBoard (when installed), and a JSON-lines log."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, start: int, enabled: bool):
        self.enabled = enabled
        self.cfg = cfg
        self.bar = None
        self.writer = None
        self.log_path = run_dir / "metrics.jsonl"
        if not enabled:
            return
        if cfg.progress:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=cfg.num_steps, initial=start, unit="step", dynamic_ncols=True)
            except ImportError:
                pass
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
            self.bar.write(msg, file=sys.stderr)
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
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", samples_s=f"{samples_per_s:.2f}", refresh=False)
            self.bar.update(1)
        elif step % self.cfg.log_every == 0 or step == self.cfg.num_steps - 1:
            eta = (self.cfg.num_steps - step - 1) * self.cfg.batch_size * self.cfg.grad_update_every / samples_per_s
            self.print(
                f"step {step}/{self.cfg.num_steps}  loss {loss:.4f}  lr {lr:.3g}  {samples_per_s:.2f} samples/s  "
                f"ETA {eta / 60:.0f} min"
            )

    def image(self, step: int, grid: np.ndarray) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image("images", grid, step, dataformats="HWC")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def summary_grid(x: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, model: DeepLabV2, n: int) -> np.ndarray:
    """The original's image summary: rows of image | ground truth | prediction, in the palette."""
    from ..images import colorize
    from ..preprocess import from_input

    rows = []
    size = (x.shape[-2], x.shape[-1])
    preds = model.upsample(logits[:n].detach().float(), size).argmax(1).cpu().numpy()
    for i in range(min(n, x.shape[0])):
        image = from_input(x[i], model.mean_bgr)
        gt = colorize(labels[i].cpu().numpy().astype(np.uint8), model.dataset)
        pred = colorize(preds[i].astype(np.uint8), model.dataset)
        rows.append(np.concatenate([image, gt, pred], axis=1))
    return np.concatenate(rows, axis=0)


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def setup_distributed(device: str) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, NCCL on CUDA)."""
    info = dist_from_env()
    init_distributed(info, device)
    return info


def resolve_device(name: str, ddp: DistInfo) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeepLabError(f"--device {name}: CUDA is not available on this machine")
        if ddp.world_size > 1:
            name = f"cuda:{ddp.local_rank}"
    return name


def train(cfg: TrainConfig, resume: str | None = None) -> Path:
    """Run (or resume) training; returns the path of the final weight file.

    Args:
        cfg: the run's settings (see :class:`TrainConfig`).
        resume: ``"latest"`` (the newest checkpoint in ``cfg.snapshot_dir``), a checkpoint path,
            or ``None`` to start fresh.
    """
    base_device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else cfg.device
    ddp = setup_distributed(base_device)
    device = resolve_device(cfg.device, ddp)
    run_dir = Path(cfg.snapshot_dir)

    def log(msg: str) -> None:
        if ddp.main:
            print(msg, file=sys.stderr, flush=True)

    # Resume: the saved config defines the run; only runtime settings may change.
    state = None
    if resume:
        path = ckpt.latest_checkpoint(run_dir) if resume == "latest" else Path(resume)
        if path is None:
            raise DeepLabError(f"--resume: no checkpoint in {run_dir}")
        state = ckpt.load_checkpoint(path)
        saved, defaults = state["config"], TrainConfig().to_dict()
        for key, value in cfg.to_dict().items():  # tell about settings given now that the run overrides
            if key not in RUNTIME_KEYS and key in saved and value not in (saved[key], defaults[key]):
                log(f"note: {key} = {saved[key]!r} from the checkpoint (not {value!r})")
        runtime = {k: v for k, v in cfg.to_dict().items() if k in RUNTIME_KEYS}
        cfg = TrainConfig(**{**saved, **runtime})
        log(f"resuming from {path} at step {state['step']}")
    if cfg.batch_size % ddp.world_size:
        raise DeepLabError(f"--batch-size {cfg.batch_size} (global) is not divisible by {ddp.world_size} processes")
    for name in ("num_steps", "batch_size", "grad_update_every"):
        if getattr(cfg, name) < 1:
            raise DeepLabError(f"--{name.replace('_', '-')} must be at least 1")
    cfg.crop_size  # noqa: B018  (validates --input-size now, not after the data check)
    if cfg.scale_mode not in ("continuous", "discrete") or cfg.optimizer not in ("sgd", "adam"):
        raise DeepLabError("--scale-mode must be continuous/discrete and --optimizer sgd/adam")
    if cfg.loss_resolution not in ("logits", "image"):
        raise DeepLabError(f"--loss-resolution must be 'logits' or 'image', got {cfg.loss_resolution!r}")

    torch.manual_seed(cfg.random_seed)
    np.random.seed(cfg.random_seed % 2**32)

    # Model: from the checkpoint, from --restore-from, or from scratch.
    if state is not None:
        model = model_from_checkpoint(state)
        model.set_bn_frozen(not state["bn_trained"])
        model.load_state_dict(state["model"])
        model_info = state["model_info"]
    else:
        model, model_info = build_model(cfg, log)
    bn_trained = any(p.requires_grad for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    if cfg.fine_tune:  # the original's fine_tune.py: only the classifier learns
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        model.set_bn_frozen(True)
        bn_trained = False
    num_classes, ignore_label = model.num_classes, model.dataset.ignore_label
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        start = int(state["step"])

    # Data: check the whole list first, then the endless, position-seeded stream.
    pairs = read_list(cfg.data_dir, cfg.data_list)
    if cfg.check_data and state is None and ddp.main:
        t0 = time.perf_counter()
        preflight_check(pairs, num_classes, ignore_label, cfg.strict_labels, log)
        log(f"checked {len(pairs)} image/label pairs in {time.perf_counter() - t0:.1f} s")
    transform = TrainTransform(
        cfg.crop_size, model.mean_bgr, ignore_label, cfg.random_scale, cfg.random_mirror, cfg.scale_mode,
        model.convention,
    )  # fmt: skip
    stream = TrainStream(pairs, transform, cfg.random_seed)
    sampler = StreamBatchSampler(
        cfg.batch_size, cfg.grad_update_every, start, cfg.num_steps, ddp.rank, ddp.world_size
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        stream, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=device.startswith("cuda"),
        persistent_workers=False, prefetch_factor=4 if cfg.num_workers > 0 else None,
    )  # fmt: skip
    batches = iter(loader)

    # The network as trained: multi-scale wrapper, then DDP around it (one forward per backward).
    net: nn.Module = MSC(model, cfg.msc_scales) if cfg.msc else model
    if ddp.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[ddp.local_rank] if device.startswith("cuda") else None
        )
    net.train()
    upsample = model.upsample if cfg.loss_resolution == "image" else None

    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        log(
            f"training {model.architecture['name']} (blocks {model.architecture['blocks']}, width "
            f"{model.architecture['width']}; {model_info.get('how', 'resumed')}), {num_classes} classes, "
            f"ignore {ignore_label}, {len(pairs)} images, batch {cfg.batch_size} x {cfg.grad_update_every}, "
            f"crop {cfg.crop_size}, steps {start}..{cfg.num_steps}, device {device}, {ddp.world_size} process(es)"
        )
    monitor = Monitor(cfg, run_dir, start, ddp.main)
    val_pairs = read_list(cfg.val_data_dir or cfg.data_dir, cfg.val_list) if cfg.val_list and ddp.main else None
    ckpt_every = cfg.checkpoint_every or cfg.save_pred_every
    val_every = cfg.val_every or cfg.save_pred_every
    amp = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if cfg.amp else contextlib.nullcontext()
    t_start = time.perf_counter()
    last_ckpt: Path | None = ckpt.latest_checkpoint(run_dir) if state is not None else None

    def save(step_done: int) -> Path:
        payload = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "config": cfg.to_dict(),
            "model_info": {k: model_info[k] for k in ("architecture", "convention", "dataset")},
            "bn_trained": bn_trained,
            "rng": ckpt.rng_state(),
            "wall_time": time.perf_counter() - t_start + (state or {}).get("wall_time", 0.0),
        }
        return ckpt.save_checkpoint(run_dir, step_done, payload, keep=cfg.keep_checkpoints)

    try:
        for step in range(start, cfg.num_steps):
            t_step = time.perf_counter()
            lr = poly_lr(cfg.learning_rate, step, cfg.num_steps, cfg.power)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            optimizer.zero_grad(set_to_none=True)
            loss_total = torch.zeros((), dtype=torch.float64)
            for micro in range(cfg.grad_update_every):
                x, labels = next(batches)
                x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                last = micro == cfg.grad_update_every - 1
                sync = contextlib.nullcontext() if (last or ddp.world_size == 1) else net.no_sync()  # type: ignore[operator]
                with sync:
                    with amp:
                        out = net(x)
                    outputs = out if isinstance(out, list) else [out]
                    loss, _ = seg_loss(
                        outputs, labels, num_classes, ignore_label, world=ddp.world_size, upsample=upsample
                    )
                    (loss / cfg.grad_update_every).backward()
                loss_total += loss.detach().double().cpu() / cfg.grad_update_every
            if ddp.world_size > 1:  # every process must agree to stop on a bad loss
                dist.all_reduce(loss_total)
                loss_total /= ddp.world_size
            loss_value = float(loss_total)
            if not math.isfinite(loss_value):
                kept = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                raise DeepLabError(
                    f"the loss became {loss_value} at step {step}; stopped before updating the weights, "
                    f"{kept} (try a lower --learning-rate, or check the labels)"
                )
            optimizer.step()

            samples_per_s = cfg.batch_size * cfg.grad_update_every / (time.perf_counter() - t_step)
            monitor.progress(step, loss_value, lr, samples_per_s)
            if ddp.main and (step % cfg.log_every == 0 or step == cfg.num_steps - 1):
                scalars = {"loss": loss_value, "lr": lr, "samples_per_s": samples_per_s}
                scalars["memory_gb"] = memory_gb(device)
                monitor.record(step, scalars)
            if ddp.main and cfg.save_pred_every > 0 and step % cfg.save_pred_every == 0:
                grid = summary_grid(x, labels, outputs[-1], model, cfg.save_num_images)
                monitor.image(step, grid)
                save_preview(run_dir / "previews" / f"step_{step:08d}.png", grid)
            if val_pairs is not None and (step % val_every == 0 or step == cfg.num_steps - 1):
                miou = validate(model, val_pairs, device, ignore_label)
                net.train()
                wall = time.perf_counter() - t_start + (state or {}).get("wall_time", 0.0)
                monitor.record(step + 1, {"val_miou": miou, "wall_time": wall})
                monitor.print(f"step {step + 1}: val mIoU {miou:.4f} ({wall:.0f} s)")
            if ddp.main and (step % ckpt_every == 0 or step == cfg.num_steps - 1):
                last_ckpt = save(step + 1)
    finally:
        monitor.close()

    final = run_dir / "model.safetensors"
    if ddp.main:
        from ..weights import save_weights

        save_weights(model.cpu(), final, source=f"deeplab train ({cfg.num_steps} steps)")
        log(f"done: final weights in {final}")
    if ddp.world_size > 1:
        dist.barrier()
    return final


def validate(model: DeepLabV2, pairs: list[Pair], device: str, ignore_label: int) -> float:
    """Full-image mIoU on ``pairs`` by the project's evaluation (see ``evaluate.py``)."""
    from ..evaluation.evaluate import evaluate_pairs

    return float(evaluate_pairs(model, pairs, device=device, ignore_label=ignore_label).scores().mean_iou)


def memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except ImportError:  # Windows
        return float("nan")


def save_preview(path: Path, grid: np.ndarray) -> None:
    from PIL import Image

    from ..images import save_png

    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(Image.fromarray(grid), path)
