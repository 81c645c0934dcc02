"""The sections of ``deeplab benchmark``: forward passes, training steps, the data pipeline,
evaluation and the dense CRF, and :func:`run_benchmark`, which runs the ones asked for.

The timing itself is :mod:`.timing`, FLOP counts :mod:`.flops`, the model :mod:`.realistic`.
"""

from __future__ import annotations

import copy
import random
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..crf import dense_crf, pydensecrf_available
from ..crf.builtin import resolve_kernel
from ..data.lists import Pair
from ..data.transforms import TrainTransform
from ..devices import peak_memory_mb, reset_peak_memory
from ..errors import DeepLabError
from ..evaluation.evaluate import evaluate_pairs
from ..images import load_pair, read_image
from ..inference.agreement import agreement, meets_target
from ..inference.optimize import DTYPES, parse_options
from ..inference.quantize import quantize_model
from ..inference.runtime import TorchBackend, make_backend
from ..models.msc import MSC
from ..training.config import TrainConfig
from ..training.recipe import build_optimizer, train_step
from .flops import count_flops, training_step_flops
from .realistic import image_batch, realistic_model
from .timing import Result, time_interleaved


def training_step_fn(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, scales: Sequence[float] = (1.0,),
    dtype: str = "float32", ignore_label: int = 255, channels_last: bool = False,
) -> Callable[[], float]:  # fmt: skip
    """A closure doing one step of ``deeplab train``: ``training.recipe.train_step`` itself.

    The recipe's optimizer at its defaults (SGD; groups 1x/10x/20x, decay on conv weights) at the
    step-0 learning rate, frozen BN, CE at stride 8 on every MSC output (each scale and the fused
    max, as the original). Returns the step's loss.
    """
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
    pair: Pair, *, crop: int, mean_bgr: Sequence[float], rng: random.Random, ignore_label: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one pair and augment it with the training pipeline's ``TrainTransform``
    (random scale U(0.5, 1.5), mirror, pad, random crop, BGR − mean)."""
    transform = TrainTransform((crop, crop), mean_bgr, ignore_label=ignore_label, random_scale=True, random_mirror=True)
    return transform(*load_pair(pair), np.random.default_rng(rng.getrandbits(64)))


def labelled_pairs(config: BenchmarkConfig) -> list[Pair]:
    """The configured images with their labels, as list entries."""
    return [Pair(Path(i), Path(lab), n + 1) for n, (i, lab) in enumerate(zip(config.images, config.labels))]


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
    min_speedup: float | None = None  # compare the fastest accurate path with this, when given
    calibration_images: tuple[str, ...] = ()  # for int8 paths; kept apart from ``images``
    calibration_count: int = 20


@dataclass
class InferencePath:
    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    dtype: str


# Engines of inference.runtime timed by name (the torch ones are option strings such as fold+cl+bf16).
ENGINE_PATHS = ("onnxruntime", "openvino", "openvino-bf16", "onnxruntime-int8", "openvino-int8")


def engine_path(model: nn.Module, name: str, config: BenchmarkConfig, device: torch.device, workdir: Path):
    """An ONNX engine as a path; int8 ones calibrated on ``config.calibration_images`` (not the timed images)."""
    int8 = None
    if name.endswith("int8"):
        if not config.calibration_images:
            raise DeepLabError(f"--paths {name} needs calibration images: a --data-dir with --calibration-list")
        int8 = quantize_model(model, config.calibration_images, images=config.calibration_count, cache_dir=workdir)
    backend = make_backend(name, model, device=device, cache_dir=workdir, threads=config.onnx_threads, onnx_path=int8)
    dtype = "float32" if name in ("onnxruntime", "openvino") else ("bfloat16" if name.endswith("bf16") else "int8")
    return InferencePath(name, backend.logits, dtype)


def build_paths(model: nn.Module, config: BenchmarkConfig, device: torch.device, workdir: Path) -> list[InferencePath]:
    """The inference paths to compare: fast-path option strings, or engines (:data:`ENGINE_PATHS`)."""
    built = []
    for spec in config.paths:
        name = "onnxruntime" if spec == "ort" else spec
        if name in ENGINE_PATHS:
            built.append(engine_path(model, name, config, device, workdir))
            continue
        options = parse_options(spec, device)
        if options.compile and config.compile_cache_dir:
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
                stats["within_tolerance"] = meets_target(stats, p.dtype)
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
                    "" if stats["within_tolerance"] else " (outside the agreement tolerance)"
                )
            results.append(
                Result(f"forward {config.size} b{batch} {p.name}", times[p.name], items=batch, flops=flops,
                       peak_memory_mb=peak_memory_mb(device), note=note, extra={"agreement": stats, "path": p.name})
            )  # fmt: skip
        if "eager-fp32 vs float64" in checks:
            s = checks["eager-fp32 vs float64"]
            notes.append(f"b{batch}: eager fp32 vs float64 (rounding floor): rel-L2 {s['rel_l2']:.1e}")
        if eager is not None:
            notes.extend(speedup_notes(results[-len(paths) :], checks, batch, config.min_speedup))
    return results, notes


def speedup_notes(
    rows: Sequence[Result], checks: dict[str, dict], batch: int, min_speedup: float | None = None
) -> list[str]:
    """Median speed-up of each path over eager fp32, and the fastest path within its agreement
    tolerance, compared with ``min_speedup`` when the user gave one (``--min-speedup``)."""
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
        if checks.get(name, {}).get("within_tolerance") and (best is None or ratio > best[0]):
            best = (ratio, name)
    if best is not None:
        line = f"b{batch} fastest accurate path: {best[1]} at {best[0]:.2f}x"
        if min_speedup is not None:
            line += f" ({'at or above' if best[0] >= min_speedup else 'below'} the given {min_speedup:g}x)"
        notes.append(line)
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
    pairs = labelled_pairs(config)
    if not pairs:
        return [Result("data pipeline", [], note="skipped: no labelled images given (--data-dir/--list)")]
    rng = random.Random(0)
    n = config.data_samples

    def loop() -> None:
        for i in range(n):
            decode_augment_sample(pairs[i % len(pairs)], crop=config.train_crop, mean_bgr=mean_bgr, rng=rng)

    times = time_interleaved({"data": loop}, repeats=config.repeats, warmup=0, device=torch.device("cpu"))
    return [
        Result(f"data pipeline, 1 worker, {config.train_crop} crops", times["data"], items=n,
               note="decode + TrainTransform (the training pipeline's augmentation); samples/s per worker")
    ]  # fmt: skip


def bench_eval(model, config: BenchmarkConfig, device: torch.device) -> list[Result]:
    """End-to-end evaluation (read, preprocess, forward, upsample, argmax, confusion matrix) per image."""
    pairs = labelled_pairs(config)[: config.eval_images]
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
        notes.append(f"dense CRF: {ours_name} {ratio:.2f}x pydensecrf (median), label agreement {100 * agree:.3f}%")
    return rows, notes


def run_benchmark(config: BenchmarkConfig, model: nn.Module | None = None) -> tuple[list[Result], list[str]]:
    """Run the sections of ``config``; returns the table rows and notes (speed-ups, agreement)."""
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
