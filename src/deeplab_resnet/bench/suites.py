"""Timing DeepLab-v2: forward passes, training steps, the data pipeline, evaluation and the CRF.

The library behind ``deeplab benchmark`` and ``benchmarks/*.py``. Timings are taken after
warm-up, over repeats *interleaved* across the cases being compared (so a noisy, shared
machine slows all of them alike), with CUDA events on GPU and ``perf_counter`` on CPU; the
report gives the median, the spread (min..max) and ratios, and FLOP/s from counted FLOPs
(FLOPs = 2 x multiply-accumulates of every conv, as the issue counts them).
"""

from __future__ import annotations

import copy
import json
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write_text
from ..devices import peak_memory_mb, reset_peak_memory
from ..models.layers import BatchNorm

# --------------------------------------------------------------------------- FLOP counting


def count_flops(model: nn.Module, height: int, width: int, batch: int = 1) -> int:
    """Forward FLOPs of ``model`` on a ``batch x 3 x height x width`` input: 2 x conv MACs.

    Runs a copy of the model on the ``meta`` device (no memory, no compute), counting
    ``out_elements x in_channels/groups x kH x kW`` per conv. Element-wise ops (BN, ReLU, adds)
    are not counted, as in the issue's figures.
    """
    meta = model if next(model.parameters()).is_meta else copy.deepcopy(model).to("meta")
    meta.eval()
    total = 0

    def hook(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            meta(torch.empty(batch, 3, height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return 2 * total


def training_step_flops(model: nn.Module, crop: int, batch: int, scales: Sequence[float] = (1.0,)) -> int:
    """FLOPs of one training step: 3 x forward (forward, input and weight gradients) per scale."""
    from ..resize import scaled_size

    total = 0
    for s in scales:
        h, w = scaled_size(crop, crop, s, getattr(model, "convention", "caffe")) if s != 1.0 else (crop, crop)
        total += count_flops(model, h, w, batch)
    return 3 * total


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes: CUDA events on GPU, ``perf_counter`` on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(
    cases: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1, device: torch.device | str = "cpu",
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:  # fmt: skip
    """Time every case ``repeats`` times after ``warmup`` calls, interleaving the cases.

    Repeat ``r`` runs case A, B, C, ... once each (the order rotates every repeat), so slow
    phases of a shared machine hit all cases alike. Returns the seconds per call per case.
    """
    device = torch.device(device)
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            cases[name]()
        synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            times[name].append(time_once(cases[name], device))
            if on_progress:
                on_progress(f"repeat {r + 1}/{repeats} {name}: {times[name][-1] * 1000:.1f} ms")
    return times


@dataclass
class Result:
    """One row of the benchmark table."""

    name: str
    times_s: list[float]
    items: int = 1  # images (or samples) per call
    flops: int | None = None  # per call
    peak_memory_mb: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s) if self.times_s else math.nan

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.times_s), max(self.times_s)) if self.times_s else (math.nan, math.nan)

    @property
    def items_per_s(self) -> float:
        return self.items / self.median_s if self.times_s else math.nan

    @property
    def tflops(self) -> float | None:
        return self.flops / self.median_s / 1e12 if self.flops and self.times_s else None

    def to_dict(self, peak_tflops: float | None = None) -> dict:
        d = asdict(self)
        d.update(
            median_s=self.median_s, min_s=self.spread[0], max_s=self.spread[1], items_per_s=self.items_per_s,
            achieved_tflops=self.tflops,
            fraction_of_peak=self.tflops / peak_tflops if self.tflops is not None and peak_tflops else None,
        )  # fmt: skip
        return d


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


def format_table(results: Sequence[Result], peak_tflops: float | None = None) -> str:
    """A fixed-width table: median, spread, items/s, TFLOP/s, fraction of peak, peak memory."""
    header = ["case", "median ms", "min..max ms", "items/s", "TFLOP/s", "of peak", "peak MB", "note"]
    rows = [header]
    for r in results:
        if not r.times_s:
            rows.append([r.name, "-", "-", "-", "-", "-", "-", r.note])
            continue
        lo, hi = r.spread
        tf = r.tflops
        rows.append([
            r.name, _fmt_ms(r.median_s), f"{_fmt_ms(lo)}..{_fmt_ms(hi)}", f"{r.items_per_s:.3g}",
            f"{tf:.3g}" if tf is not None else "-",
            f"{tf / peak_tflops:.1%}" if tf is not None and peak_tflops else "-",
            f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb is not None else "-", r.note,
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def machine_info(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "device": str(device), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_json(path: str | Path, results: Sequence[Result], *, peak_tflops: float | None, info: dict) -> None:
    """The results as JSON, written atomically."""
    payload = {"machine": info, "peak_tflops": peak_tflops, "results": [r.to_dict(peak_tflops) for r in results]}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


# --------------------------------------------------------------------------- a realistic model


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
    from ..models import create_model

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


def image_batch(
    paths: Sequence[str | Path], size: int, batch: int, mean_bgr: Sequence[float], *, offset: int = 0
) -> torch.Tensor:
    """``batch`` real images (cycling through ``paths`` from ``offset``) resized to ``size x size``."""
    import numpy as np
    from PIL import Image

    from ..images import read_image
    from ..preprocess import to_batch

    if not paths:
        g = torch.Generator().manual_seed(offset)
        return torch.randn(batch, 3, size, size, generator=g) * 50
    images = []
    for i in range(batch):
        rgb = read_image(paths[(offset + i) % len(paths)])
        images.append(np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR)))
    return to_batch(images, mean_bgr)


# --------------------------------------------------------------------------- training step


def make_optimizer(model: nn.Module, lr: float = 2.5e-4, momentum: float = 0.9, weight_decay: float = 5e-4):
    """The optimizer ``deeplab train`` builds (SGD; backbone 1x, classifier weights 10x, biases 20x),
    with each group's learning rate set as the training loop sets it at step 0."""
    from ..training.loop import TrainConfig, build_optimizer

    cfg = TrainConfig(learning_rate=lr, momentum=momentum, weight_decay=weight_decay)
    optimizer = build_optimizer(model, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return optimizer


def label_at(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels (``N x H x W``) shrunk to the logit grid by the training loop's nearest neighbour."""
    from ..data.transforms import resize_nearest

    return resize_nearest(labels, size)


def training_step_fn(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, scales: Sequence[float] = (1.0,),
    dtype: str = "float32", ignore_label: int = 255, channels_last: bool = False,
) -> Callable[[], float]:  # fmt: skip
    """A closure doing one step of ``deeplab train``: ``training.recipe.train_step`` itself.

    The recipe's optimizer at its defaults (SGD; groups 1x/10x/20x, decay on conv weights) at the
    step-0 learning rate, frozen BN, CE at stride 8 on every MSC output (each scale and the fused
    max, as the original). Returns the step's loss.
    """
    from ..inference.optimize import DTYPES
    from ..models.msc import MSC
    from ..training.config import TrainConfig
    from ..training.recipe import build_optimizer, train_step

    net = MSC(model, scales) if tuple(scales) != (1.0,) else model
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.set_bn_frozen(True)
    net.train()
    cfg = TrainConfig()
    optimizer = build_optimizer(model, cfg)
    batch = (images, labels)

    def step() -> float:
        return train_step(
            net, optimizer, iter([batch]), lr=cfg.learning_rate, num_classes=model.num_classes,
            ignore_label=ignore_label, amp_dtype=None if dtype == "float32" else DTYPES[dtype],
            channels_last=channels_last,
        ).loss  # fmt: skip

    return step


# --------------------------------------------------------------------------- data pipeline


def decode_augment_sample(
    image_path: str | Path, label_path: str | Path, *, crop: int, mean_bgr: Sequence[float],
    rng: random.Random, ignore_label: int = 255,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Decode one pair and augment it with the training pipeline's ``TrainTransform``
    (random scale U(0.5, 1.5), mirror, pad, random crop, BGR − mean)."""
    import numpy as np

    from ..data.transforms import TrainTransform
    from ..images import read_image, read_label

    transform = TrainTransform((crop, crop), mean_bgr, ignore_label=ignore_label, random_scale=True, random_mirror=True)
    return transform(read_image(image_path), read_label(label_path), np.random.default_rng(rng.getrandbits(64)))


# --------------------------------------------------------------------------- the whole benchmark

SECTIONS = ("forward", "train", "data", "eval", "crf")


@dataclass
class BenchmarkConfig:
    """What ``deeplab benchmark`` measures; see ``deeplab benchmark --help`` for each field."""

    model: str = "deeplab_v2_resnet101"
    convention: str = "caffe"
    num_classes: int = 21
    device: str = "cpu"
    size: int = 513
    batch_sizes: tuple[int, ...] = (1,)
    paths: tuple[str, ...] = ("eager", "default")
    repeats: int = 5
    warmup: int = 1
    sections: tuple[str, ...] = SECTIONS
    train_crop: int = 321
    train_batch: int = 2
    train_scales: tuple[float, ...] = (1.0, 0.75, 0.5)
    train_dtype: str = "float32"
    data_samples: int = 20
    eval_images: int = 2
    onnx_threads: int | None = None
    peak_tflops: float | None = None
    images: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    reference_fp64: bool = False
    compile_cache_dir: str | None = None


@dataclass
class InferencePath:
    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    dtype: str


def build_paths(model: nn.Module, config: BenchmarkConfig, device: torch.device, workdir: Path) -> list[InferencePath]:
    """The inference paths to compare: fast-path option strings, or ``onnxruntime``."""
    from ..inference.optimize import parse_options
    from ..inference.runtime import OnnxRuntimeBackend, TorchBackend

    built = []
    for spec in config.paths:
        if spec in ("onnxruntime", "ort"):
            from ..inference.export import export_onnx

            onnx_path = export_onnx(model, workdir / "model.onnx")
            backend = OnnxRuntimeBackend(onnx_path, device=device, threads=config.onnx_threads)
            built.append(InferencePath("onnxruntime", backend.logits, "float32"))
            continue
        options = parse_options(spec, device)
        if options.compile and config.compile_cache_dir:
            from dataclasses import replace

            options = replace(options, compile_cache_dir=config.compile_cache_dir)
        backend = TorchBackend(model, device=device, options=options)
        built.append(InferencePath(options.describe(), backend.logits, options.dtype))
    return built


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_forward(
    model, config: BenchmarkConfig, device: torch.device, workdir: Path
) -> tuple[list[Result], list[str]]:
    """Forward passes of every path at every batch size, interleaved; agreement with eager fp32."""
    from ..inference.agreement import agreement, meets_target

    results: list[Result] = []
    notes: list[str] = []
    paths = build_paths(model, config, device, workdir)
    eager = next((p for p in paths if p.name == "eager-fp32"), None)
    for batch in config.batch_sizes:
        x = image_batch(config.images, config.size, batch, model.mean_bgr)
        ref = eager.run(x) if eager else None
        flops = count_flops(model, config.size, config.size, batch)
        checks: dict[str, dict] = {}
        for p in paths:
            out = p.run(x)  # also the first warm-up call (compiles / captures graphs)
            if ref is not None:
                stats = agreement(ref, out)
                stats["meets_target"] = meets_target(stats, p.dtype)
                checks[p.name] = stats
        if config.reference_fp64 and ref is not None:
            with torch.no_grad():
                ref64 = copy.deepcopy(model).double().cpu()(x.double())
            checks["eager-fp32 vs float64"] = agreement(ref64, ref)
        reset_peak_memory(device)
        times = time_interleaved(
            {p.name: (lambda p=p, x=x: p.run(x)) for p in paths}, repeats=config.repeats, warmup=config.warmup,
            device=device, on_progress=_progress,
        )  # fmt: skip
        for p in paths:
            stats = checks.get(p.name, {})
            note = ""
            if stats and p.name != "eager-fp32":
                note = f"rel-L2 {stats['rel_l2']:.1e}, argmax {stats['argmax_agreement']:.2%}" + (
                    "" if stats["meets_target"] else " (MISSES the agreement target)"
                )
            results.append(
                Result(f"forward {config.size} b{batch} {p.name}", times[p.name], items=batch, flops=flops,
                       peak_memory_mb=peak_memory_mb(device), note=note, extra={"agreement": stats, "path": p.name})
            )  # fmt: skip
        if "eager-fp32 vs float64" in checks:
            s = checks["eager-fp32 vs float64"]
            notes.append(f"b{batch}: eager fp32 vs float64 (rounding floor): rel-L2 {s['rel_l2']:.1e}")
        if eager is not None:
            notes.extend(speedup_notes(results[-len(paths) :], checks, batch))
    return results, notes


def speedup_notes(rows: Sequence[Result], checks: dict[str, dict], batch: int, target: float = 1.5) -> list[str]:
    """Median speed-up of each path over eager fp32, and the fastest path that meets its accuracy target."""
    base = next(r for r in rows if r.extra.get("path") == "eager-fp32")
    notes = []
    best: tuple[float, str] | None = None
    for r in rows:
        name = r.extra.get("path")
        if name == "eager-fp32":
            continue
        ratio = base.median_s / r.median_s
        # Per-repeat ratios (repeats were interleaved) show how much the noise moves the ratio.
        per = sorted(b / t for b, t in zip(base.times_s, r.times_s))
        notes.append(f"b{batch} {name}: {ratio:.2f}x eager fp32 (per-repeat {per[0]:.2f}..{per[-1]:.2f})")
        if checks.get(name, {}).get("meets_target") and (best is None or ratio > best[0]):
            best = (ratio, name)
    if best is not None:
        verdict = "met" if best[0] >= target else f"MISSED by {target / best[0]:.2f}x"
        notes.append(f"b{batch} fastest accurate path: {best[1]} at {best[0]:.2f}x (target {target}x: {verdict})")
    return notes


def bench_train(model, config: BenchmarkConfig, device: torch.device) -> list[Result]:
    """Training steps (single- and multi-scale), interleaved, on copies of the model."""
    g = torch.Generator().manual_seed(0)
    crop, batch = config.train_crop, config.train_batch
    images = image_batch(config.images, crop, batch, model.mean_bgr).to(device)
    labels = torch.randint(0, model.num_classes, (batch, crop, crop), generator=g).to(device)
    cases, flops = {}, {}
    for scales in ((1.0,), tuple(config.train_scales)):
        if len(scales) == 1 and scales != (1.0,):
            continue
        name = (
            f"train step {crop}x{crop}x{batch} {'single' if scales == (1.0,) else 'multi'}-scale {config.train_dtype}"
        )
        net = copy.deepcopy(model).to(device)
        cases[name] = training_step_fn(net, images, labels, scales=scales, dtype=config.train_dtype)
        flops[name] = training_step_flops(model, crop, batch, scales)
        if scales == (1.0,) and tuple(config.train_scales) == (1.0,):
            break
    reset_peak_memory(device)
    times = time_interleaved(cases, repeats=config.repeats, warmup=config.warmup, device=device, on_progress=_progress)
    return [
        Result(name, times[name], items=batch, flops=flops[name], peak_memory_mb=peak_memory_mb(device),
               note="step with train.build_optimizer + train.seg_loss (groups 1x/10x/20x, CE at stride 8, frozen BN)")
        for name in cases
    ]  # fmt: skip


def bench_data(config: BenchmarkConfig, mean_bgr: Sequence[float]) -> list[Result]:
    """Samples/s of one worker decoding and augmenting the given image/label pairs."""
    import random

    pairs = list(zip(config.images, config.labels))
    if not pairs:
        return [Result("data pipeline", [], note="skipped: no labelled images given (--data-dir/--list)")]
    rng = random.Random(0)
    n = config.data_samples

    def loop() -> None:
        for i in range(n):
            decode_augment_sample(*pairs[i % len(pairs)], crop=config.train_crop, mean_bgr=mean_bgr, rng=rng)

    times = time_interleaved({"data": loop}, repeats=config.repeats, warmup=0, device=torch.device("cpu"))
    return [
        Result(f"data pipeline, 1 worker, {config.train_crop} crops", times["data"], items=n,
               note="decode + TrainTransform (the training pipeline's augmentation); samples/s per worker")
    ]  # fmt: skip


def bench_eval(model, config: BenchmarkConfig, device: torch.device) -> list[Result]:
    """End-to-end evaluation (read, preprocess, forward, upsample, argmax, confusion matrix) per image."""
    from ..data.lists import Pair
    from ..evaluation.evaluate import evaluate_pairs

    pairs = [Pair(Path(i), Path(lab), n + 1) for n, (i, lab) in enumerate(zip(config.images, config.labels))]
    pairs = pairs[: config.eval_images]
    if not pairs:
        return [Result("evaluate", [], note="skipped: no labelled images given")]
    times = time_interleaved(
        {"eval": lambda: evaluate_pairs(model, pairs, device=device)}, repeats=max(1, config.repeats // 2),
        warmup=0, device=device,
    )  # fmt: skip
    return [Result(f"evaluate end to end, {len(pairs)} images", times["eval"], items=len(pairs),
                   note="deeplab_resnet.evaluation.evaluate.evaluate_pairs, full-size images, eager fp32")]  # fmt: skip


def bench_crf(config: BenchmarkConfig) -> tuple[list[Result], list[str]]:
    """The dense CRF on one image: ours (``--crf-backend builtin``; its C kernel on CPU, torch ops on
    CUDA or without a compiler) and, when installed, pydensecrf, interleaved; their label agreement
    and speed-up go in the notes."""
    import numpy as np

    from ..crf import dense_crf, pydensecrf_available
    from ..crf.builtin import resolve_kernel
    from ..images import read_image

    if config.images:
        image = read_image(config.images[0])
    else:
        image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    probs = np.random.default_rng(1).random((21, *image.shape[:2]), dtype=np.float32) + 0.1
    probs /= probs.sum(0, keepdims=True)
    h, w = image.shape[:2]
    kernel = resolve_kernel("auto", torch.device("cpu"))
    cases = {f"ours ({'C kernel' if kernel == 'c' else 'torch ops'})": "builtin"}
    if pydensecrf_available():
        cases["pydensecrf"] = "pydensecrf"
    outputs = {name: dense_crf(image, probs, backend=backend) for name, backend in cases.items()}  # also warms up
    times = time_interleaved(
        {name: (lambda b=backend: dense_crf(image, probs, backend=b)) for name, backend in cases.items()},
        repeats=config.repeats, warmup=0, device=torch.device("cpu"),
    )  # fmt: skip
    rows = [
        Result(f"dense CRF {w}x{h}, 21 classes, 10 iterations, {name}", times[name], note=f"crf.dense_crf backend {b}")
        for name, b in cases.items()
    ]
    notes = []
    if "pydensecrf" in cases:
        ours_name = next(iter(cases))
        agree = float((outputs[ours_name].argmax(0) == outputs["pydensecrf"].argmax(0)).mean())
        ratio = statistics.median(times["pydensecrf"]) / statistics.median(times[ours_name])
        notes.append(
            f"dense CRF: {ours_name} {ratio:.2f}x pydensecrf (median), label agreement {100 * agree:.3f}% "
            f"(target: >= 3x on 2 cores, >= 99.5%)"
        )
    return rows, notes


def run_benchmark(config: BenchmarkConfig, model: nn.Module | None = None) -> tuple[list[Result], list[str]]:
    """Run the sections of ``config``; returns the table rows and notes (speed-ups, targets)."""
    import tempfile

    device = torch.device(config.device)
    if model is None:
        calib = [image_batch(config.images, 257, 2, (104.008, 116.669, 122.675), offset=10 + i) for i in range(2)]
        model = realistic_model(config.model, convention=config.convention, num_classes=config.num_classes,
                                calibration=calib)  # fmt: skip
    model = model.eval()
    results: list[Result] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="deeplab_bench_") as tmp:
        if "forward" in config.sections:
            rows, forward_notes = bench_forward(model, config, device, Path(tmp))
            results += rows
            notes += forward_notes
    if "train" in config.sections:
        results += bench_train(model, config, device)
    if "data" in config.sections:
        results += bench_data(config, model.mean_bgr)
    if "eval" in config.sections:
        results += bench_eval(model, config, device)
    if "crf" in config.sections:
        rows, crf_notes = bench_crf(config)
        results += rows
        notes += crf_notes
    return results, notes
