"""Training DeepLab-v2 with the original recipe (docs/original.md §4), top to bottom.

    config → resume → model (restored or from scratch) → optimizer → pre-flight data check →
    data stream → run folder → loop { :func:`recipe.train_step`; log; image summary;
    validation; checkpoint } → final weights.

The recipe itself (poly LR, learning-rate multipliers, weight decay, the loss, gradient
accumulation) is in ``recipe.py``; the settings in ``config.py``; progress, scalars and image
summaries in ``monitor.py``; checkpoints in ``checkpoint.py``; who owns a run folder in
``run_dir.py``.

Batch norm is frozen unless ``--is-training``. From scratch (no ``--restore-from``) it is
trained, because a frozen BN with identity statistics cannot normalise a random network.

Distributed: launched by ``torchrun`` the run uses DDP; ``--batch-size`` is the *global* batch
(split over the processes), the loss is normalised by the global count of valid pixels, and
every process reads its slice of the same global batch, so N processes follow the same
trajectory as one (up to float summation order). Rank 0 logs and writes files.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..atomic import atomic_write_text
from ..data.check import check_pair
from ..data.lists import Pair, read_list
from ..data.stream import StreamBatchSampler, TrainStream
from ..data.tools.class_weights import read_class_weights
from ..data.transforms import TrainTransform
from ..dataset_info import DatasetInfo, resolve_dataset_info
from ..devices import peak_memory_mb, resolve_device
from ..distributed import DistInfo, dist_from_env, init_distributed
from ..errors import DeepLabError, deferred_interrupts
from ..evaluation.evaluate import evaluate_pairs
from ..models.deeplab import DeepLabV2, create_model, init_backbone_from_scratch, model_from_architecture
from ..models.msc import MSC
from ..weights import load_model, save_weights
from . import checkpoint as ckpt
from .config import RUNTIME_KEYS, TrainConfig
from .monitor import Monitor, summary_grid
from .recipe import NonFiniteLoss, build_optimizer, poly_lr, train_step
from .run_dir import check_run_dir, claim_run_dir, new_run_id

Log = Callable[[str], None]


def train(cfg: TrainConfig, resume: str | None = None, *, overwrite: bool = False) -> Path:
    """Run (or resume) training; returns the path of the final weight file.

    Args:
        cfg: the run's settings (see :class:`TrainConfig`).
        resume: ``"latest"`` (the newest checkpoint in ``cfg.snapshot_dir``), a checkpoint path,
            or ``None`` to start fresh.
        overwrite: a fresh run may take a ``snapshot_dir`` that holds another run, which is moved
            aside (see ``run_dir.py``); without it that is an error.
    """
    ddp = dist_from_env()
    device = resolve_device(cfg.device, local_rank=ddp.local_rank if ddp.active else None)
    init_distributed(ddp, device)
    log = main_process_log(ddp)
    state = None
    if resume:
        state, cfg = resume_state(cfg, resume, log)
    if cfg.batch_size % ddp.world_size:
        raise DeepLabError(f"--batch-size {cfg.batch_size} (global) is not divisible by {ddp.world_size} processes")
    run_id = (state or {}).get("run_id") or new_run_id()
    on_main_then_agree(  # before any work: a folder taken by another run is refused at once
        ddp, lambda: check_run_dir(cfg.snapshot_dir, run_id, resuming=state is not None, overwrite=overwrite)
    )
    torch.manual_seed(cfg.random_seed)
    np.random.seed(cfg.random_seed % 2**32)

    model, model_info = prepare_model(cfg, state, log)
    cfg = cfg.with_dataset_defaults(model.dataset.training_defaults)  # crop, scales: flags given win
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    session = Session(cfg, ddp, device, model, model_info, state, run_id)
    pairs = read_list(cfg.data_dir, cfg.data_list)
    if cfg.check_data and state is None:
        on_main_then_agree(ddp, lambda: preflight_check(pairs, model, cfg, log))
    batches = iter(make_loader(cfg, model, pairs, session.start, ddp, device))
    net = wrap_for_training(model, cfg, ddp, device)
    on_main_then_agree(ddp, lambda: session.open_run_dir(resuming=state is not None, overwrite=overwrite, log=log))
    log(describe_run(session, len(pairs)))
    monitor = Monitor(cfg, session.run_dir, session.start, ddp.main)
    try:
        for step in range(session.start, cfg.num_steps):
            session.step(step, net, batches, monitor)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (errors.Terminated): keep the steps done
        session.save_on_interrupt(log)
        raise
    finally:
        monitor.close()
    return session.finish(log)


def main_process_log(ddp: DistInfo) -> Log:
    def log(msg: str) -> None:
        if ddp.main:
            print(msg, file=sys.stderr, flush=True)

    return log


def on_main_then_agree(ddp: DistInfo, action: Callable[[], None]) -> None:
    """Run ``action`` on the main process only; with DDP every process learns whether it
    failed, so that all of them stop together instead of waiting for the failed one."""
    error = None
    if ddp.main:
        try:
            action()
        except DeepLabError as exc:
            if not ddp.active:
                raise
            error = str(exc)
    if ddp.active:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise DeepLabError(error)


def resume_state(cfg: TrainConfig, resume: str, log: Log) -> tuple[dict[str, Any], TrainConfig]:
    """The checkpoint to resume from, and the run's config: the saved one defines the run; only
    runtime settings (``RUNTIME_KEYS``) are taken from ``cfg``."""
    run_dir = Path(cfg.snapshot_dir)
    path = ckpt.latest_checkpoint(run_dir) if resume == "latest" else Path(resume)
    if path is None:
        raise DeepLabError(f"--resume: no checkpoint in {run_dir}")
    state = ckpt.load_checkpoint(path)
    saved, defaults = state["config"], TrainConfig().to_dict()
    for key, value in cfg.to_dict().items():  # tell about settings given now that the run overrides
        if key not in RUNTIME_KEYS and key in saved and value not in (saved[key], defaults[key]):
            log(f"note: {key} = {saved[key]!r} from the checkpoint (not {value!r})")
    runtime = {k: v for k, v in cfg.to_dict().items() if k in RUNTIME_KEYS}
    for key in sorted(set(saved) - set(defaults)):  # written by a version that had this setting
        log(f"note: the checkpoint's setting {key} = {saved[key]!r} is no longer known; ignored")
    log(f"resuming from {path} at step {state['step']}")
    known = {k: v for k, v in saved.items() if k in defaults}
    return state, TrainConfig(**{**known, **runtime})


# --------------------------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------------------------


def resolve_dataset(cfg: TrainConfig, from_weights: DatasetInfo | None) -> DatasetInfo:
    """``--dataset``, the weights' dataset, ``--num-classes`` and ``--ignore-label``, combined as every command does."""
    return resolve_dataset_info(
        cfg.dataset, from_weights=from_weights, num_classes=cfg.num_classes, ignore_label=cfg.ignore_label
    )


def prepare_model(cfg: TrainConfig, state: dict[str, Any] | None, log: Log) -> tuple[DeepLabV2, dict[str, Any]]:
    """The network to train: from the checkpoint, from ``--restore-from``, or from scratch; with
    ``--fine-tune`` only its classifier learns (the original's fine_tune.py)."""
    if state is not None:
        model = model_from_checkpoint(state)
        model.set_bn_frozen(not state["bn_trained"])
        model.load_state_dict(state["model"])
        model_info = state["model_info"]
    else:
        model, model_info = build_model(cfg, log)
    if cfg.fine_tune:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        model.set_bn_frozen(True)
    return model, model_info


def build_model(cfg: TrainConfig, log: Log) -> tuple[DeepLabV2, dict[str, Any]]:
    """The network, restored from ``--restore-from`` or initialised from scratch."""
    if cfg.restore_from:
        model = restore_model(cfg)
        how = f"restored from {cfg.restore_from}" + (" (new classifier)" if cfg.not_restore_last else "")
    else:
        model = model_from_scratch(cfg, log)
        how = "from scratch"
    info = {"architecture": model.architecture, "convention": model.convention, "dataset": model.dataset.to_dict()}
    return model, {"how": how, **info}


def restore_model(cfg: TrainConfig) -> DeepLabV2:
    """``--restore-from`` through the package's one weight loader, then ``--dataset``,
    ``--num-classes``, ``--ignore-label`` and ``--convention`` applied."""
    frozen = not cfg.is_training
    model = load_model(cfg.restore_from, not_restore_last=cfg.not_restore_last, frozen_bn=frozen)
    dataset = resolve_dataset(cfg, model.dataset)
    if dataset.num_classes != model.num_classes:
        # Another class count: the loader builds the new classifier, or says --not-restore-last is needed.
        model = load_model(cfg.restore_from, dataset=dataset, not_restore_last=cfg.not_restore_last, frozen_bn=frozen)
    model.dataset = dataset
    if cfg.convention and cfg.convention != model.convention:
        # The convention changes the numerics (resizing, padding), not the parameters.
        rebuilt = model_from_architecture(
            model.architecture, convention=cfg.convention, dataset=dataset, frozen_bn=frozen
        )  # fmt: skip
        rebuilt.load_state_dict(model.state_dict())
        model = rebuilt
    return model


def model_from_scratch(cfg: TrainConfig, log: Log) -> DeepLabV2:
    """``--model`` (optionally ``--model-blocks``/``--model-width``), Kaiming-initialised, BN trained."""
    frozen = not cfg.is_training
    shape: dict[str, Any] = {}
    if cfg.model_blocks is not None:
        shape["blocks"] = tuple(cfg.model_blocks)
    if cfg.model_width is not None:
        shape["width"] = cfg.model_width
    try:
        model = create_model(
            cfg.model, dataset=resolve_dataset(cfg, None), convention=cfg.convention or "caffe", frozen_bn=frozen,
            **shape,
        )  # fmt: skip
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
    return model


def model_from_checkpoint(state: dict[str, Any]) -> DeepLabV2:
    """Rebuild the network a checkpoint was saved from (same architecture, convention, classes)."""
    dataset = DatasetInfo.from_dict(state["model_info"]["dataset"])
    return model_from_architecture(
        state["model_info"]["architecture"], convention=state["model_info"]["convention"], dataset=dataset
    )


def bn_is_trained(model: nn.Module) -> bool:
    return any(p.requires_grad for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())


def wrap_for_training(model: DeepLabV2, cfg: TrainConfig, ddp: DistInfo, device: str) -> nn.Module:
    """The network as trained: the multi-scale wrapper, then DDP around it (one forward per backward)."""
    net: nn.Module = MSC(model, cfg.msc_scales) if cfg.msc else model
    if ddp.active:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[ddp.local_rank] if device.startswith("cuda") else None
        )
    return net.train()


def step_options(cfg: TrainConfig, model: DeepLabV2, world: int) -> dict[str, Any]:
    """The settings of :func:`recipe.train_step` for this run, other than the learning rate."""
    return {
        "num_classes": model.num_classes,
        "ignore_label": model.dataset.ignore_label,
        "accumulate": cfg.grad_update_every,
        "world": world,
        "upsample": model.upsample if cfg.loss_resolution == "image" else None,
        "amp_dtype": torch.bfloat16 if cfg.amp else None,
        "channels_last": cfg.channels_last,
        "class_weights": (
            None
            if cfg.class_weights is None
            else torch.tensor(read_class_weights(cfg.class_weights, model.num_classes))
        ),
        "ohem_keep": cfg.ohem_keep,
        "ohem_min_kept": cfg.ohem_min_kept,
    }


# --------------------------------------------------------------------------------------------
# The data.
# --------------------------------------------------------------------------------------------


def preflight_check(pairs: list[Pair], model: DeepLabV2, cfg: TrainConfig, log: Log) -> None:
    """Open every pair before training: unreadable/missing files, size mismatches and colour
    masks are errors naming the file; label values outside the classes are a warning with
    counts (an error with ``--strict-labels``)."""
    num_classes, ignore_label = model.num_classes, model.dataset.ignore_label
    t0 = time.perf_counter()
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
        if cfg.strict_labels:
            raise DeepLabError(msg + " (--strict-labels)")
        log("warning: " + msg)
    log(f"checked {len(pairs)} image/label pairs in {time.perf_counter() - t0:.1f} s")


def make_loader(
    cfg: TrainConfig, model: DeepLabV2, pairs: list[Pair], start: int, ddp: DistInfo, device: str
) -> torch.utils.data.DataLoader:
    """The endless, position-seeded stream of this process's share of each global batch from ``start`` on."""
    transform = TrainTransform(
        cfg.crop_size, model.mean_bgr, model.dataset.ignore_label, cfg.random_scale, cfg.random_mirror,
        cfg.scale_mode, model.convention, scale_range=cfg.scale_bounds,
    )  # fmt: skip
    stream = TrainStream(pairs, transform, cfg.random_seed)
    sampler = StreamBatchSampler(
        cfg.batch_size, cfg.grad_update_every, start, cfg.num_steps, ddp.rank, ddp.world_size
    )  # fmt: skip
    return torch.utils.data.DataLoader(
        stream, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=device.startswith("cuda"),
        persistent_workers=False, prefetch_factor=4 if cfg.num_workers > 0 else None,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The run: its state, one step with its logging, checkpoints and the final weights.
# --------------------------------------------------------------------------------------------


class Session:
    """What a run carries from step to step: the model, its optimizer, the run folder and id."""

    def __init__(
        self, cfg: TrainConfig, ddp: DistInfo, device: str, model: DeepLabV2, model_info: dict[str, Any],
        state: dict[str, Any] | None, run_id: str,
    ):  # fmt: skip
        self.cfg, self.ddp, self.device, self.model, self.model_info = cfg, ddp, device, model, model_info
        self.bn_trained = bn_is_trained(model)
        self.optimizer = build_optimizer(model, cfg)
        self.start = 0
        self.steps_done = 0
        self.run_dir = Path(cfg.snapshot_dir)
        self.run_id = run_id
        self.prior_wall_time = (state or {}).get("wall_time", 0.0)
        self.last_ckpt: Path | None = None
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            ckpt.set_rng_state(state["rng"])
            self.start = self.steps_done = int(state["step"])
            self.last_ckpt = ckpt.latest_checkpoint(self.run_dir)
        self.options = step_options(cfg, model, ddp.world_size)
        self.val_pairs = read_list(cfg.val_data_dir or cfg.data_dir, cfg.val_list) if cfg.val_list else None
        self.t_start = time.perf_counter()

    def wall_time(self) -> float:
        return time.perf_counter() - self.t_start + self.prior_wall_time

    def open_run_dir(self, *, resuming: bool, overwrite: bool, log: Log) -> None:
        """Claim the run folder (see ``run_dir.py``) and write the run's config into it."""
        moved = claim_run_dir(self.run_dir, self.run_id, resuming=resuming, overwrite=overwrite)
        if moved is not None:
            log(f"--overwrite: the run that was in {self.run_dir} is now in {moved}")
        atomic_write_text(self.run_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")

    def step(self, step: int, net: nn.Module, batches: Iterator, monitor: Monitor) -> None:
        """One update, then whatever is due at this step: scalars, image summary, validation, checkpoint."""
        cfg, t0 = self.cfg, time.perf_counter()
        lr = poly_lr(cfg.learning_rate, step, cfg.num_steps, cfg.power)
        try:
            with deferred_interrupts():  # Ctrl-C/SIGTERM wait for the update to finish, then stop
                result = train_step(net, self.optimizer, batches, lr=lr, **self.options)
                self.steps_done = step + 1
        except NonFiniteLoss as exc:
            kept = (
                f"the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else "no checkpoint was written yet"
            )
            raise DeepLabError(
                f"the loss became {exc.loss} at step {step}; stopped before updating the weights, {kept} "
                "(try a lower --learning-rate, or check the labels)"
            ) from exc
        samples_per_s = cfg.batch_size * cfg.grad_update_every / (time.perf_counter() - t0)
        monitor.progress(step, result.loss, lr, samples_per_s)
        last = step == cfg.num_steps - 1
        if self.ddp.main and (step % cfg.log_every == 0 or last):
            memory_gb = peak_memory_mb(self.device) / 1024
            monitor.record(
                step, {"loss": result.loss, "lr": lr, "samples_per_s": samples_per_s, "memory_gb": memory_gb}
            )
        if self.ddp.main and cfg.save_num_images and step % cfg.save_pred_every == 0:
            grid = summary_grid(result.images, result.labels, result.logits, self.model, cfg.save_num_images)
            monitor.image(step, grid, self.run_dir / "previews" / f"step_{step:08d}.png")
        if (
            self.val_pairs is not None
            and self.ddp.main
            and (step % (cfg.val_every or cfg.save_pred_every) == 0 or last)
        ):
            miou = validate(self.model, self.val_pairs, self.device, self.model.dataset.ignore_label)
            net.train()
            monitor.record(step + 1, {"val_miou": miou, "wall_time": self.wall_time()})
            monitor.print(f"step {step + 1}: val mIoU {miou:.4f} ({self.wall_time():.0f} s)")
        if self.ddp.main and (step % (cfg.checkpoint_every or cfg.save_pred_every) == 0 or last):
            self.last_ckpt = self.save(step + 1)

    def save(self, step_done: int) -> Path:
        payload = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "model_info": {k: self.model_info[k] for k in ("architecture", "convention", "dataset")},
            "bn_trained": self.bn_trained,
            "rng": ckpt.rng_state(),
            "wall_time": self.wall_time(),
        }
        return ckpt.save_checkpoint(
            self.run_dir, step_done, payload, run_id=self.run_id, keep=self.cfg.keep_checkpoints
        )

    def save_on_interrupt(self, log: Log) -> None:
        """After Ctrl-C or SIGTERM (held until the update in progress was complete): checkpoint the
        steps completed since the last checkpoint."""
        if not self.ddp.main:
            return
        saved = ckpt.checkpoint_step(self.last_ckpt) if self.last_ckpt else self.start
        if self.steps_done > saved:
            self.last_ckpt = self.save(self.steps_done)
        where = f"the last checkpoint is {self.last_ckpt}" if self.last_ckpt else "no checkpoint was written"
        log(f"stopped after {self.steps_done} steps; {where} (continue with --resume)")

    def finish(self, log: Log) -> Path:
        """Write the final weights (main process); every process waits for it."""
        final = self.run_dir / "model.safetensors"
        if self.ddp.main:
            save_weights(self.model.cpu(), final, source=f"deeplab train ({self.cfg.num_steps} steps)")
            log(f"done: final weights in {final}")
        if self.ddp.active:
            dist.barrier()
        return final


def describe_run(session: Session, n_images: int) -> str:
    cfg, model, arch = session.cfg, session.model, session.model.architecture
    return (
        f"training {arch['name']} (blocks {arch['blocks']}, width {arch['width']}; "
        f"{session.model_info.get('how', 'resumed')}), {model.num_classes} classes, ignore "
        f"{model.dataset.ignore_label}, {n_images} images, batch {cfg.batch_size} x {cfg.grad_update_every}, crop "
        f"{cfg.crop_size}, steps {session.start}..{cfg.num_steps}, device {session.device}, "
        f"{session.ddp.world_size} process(es)"
    )


def validate(model: DeepLabV2, pairs: list[Pair], device: str, ignore_label: int) -> float:
    """Full-image mIoU on ``pairs`` by the project's evaluation (see ``evaluation/evaluate.py``)."""
    return float(evaluate_pairs(model, pairs, device=device, ignore_label=ignore_label).scores().mean_iou)
