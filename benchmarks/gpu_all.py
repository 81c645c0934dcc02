"""Every GPU measurement in one run: prints the table and the derived figures, writes JSON.

    PYTHONPATH=src python benchmarks/gpu_all.py --json gpu_results.json [--data ../shared/data/voc_fixture]

Measures, side by side (interleaved repeats, CUDA events, medians):
  1. the card's bf16 dense peak (large matmuls), for MFU;
  2. 513x513 inference at batch 1 and 8: eager fp32, fold+cl+bf16, the same with CUDA graphs
     (and torch.compile with --compile), onnxruntime-gpu if installed;
  3. against torchvision's DeepLabV3-ResNet101 (eager fp32, and channels_last + bf16 autocast)
     at the same batch and size, both including the upsampling to the input size;
  4. training steps 321x321x10, single- and multi-scale, bf16 autocast and fp32;
  5. the data pipeline (samples/s per worker, x cores, against training images/s);
and prints the figures derived from them (fraction of the peak, ms per image, ratios).

Runs on CPU too with --device cpu --model deeplab_v2_resnet_tiny (a smoke test of the script).
``benchmarks/gpu_check.py`` runs it as one part of the GPU check.

cuDNN autotuning is a process-wide flag: each timed case sets it to its own option before it runs,
so the paths without it are timed with cuDNN's heuristics, as a user would run them.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from deeplab_resnet.bench.flops import count_flops, training_step_flops  # noqa: E402
from deeplab_resnet.bench.realistic import image_batch, realistic_model  # noqa: E402
from deeplab_resnet.bench.suites import decode_augment_sample, training_step_fn  # noqa: E402
from deeplab_resnet.bench.timing import Result, format_table, machine_info, time_interleaved, write_json  # noqa: E402
from deeplab_resnet.data.lists import Pair, read_list  # noqa: E402
from deeplab_resnet.devices import peak_memory_mb, reset_peak_memory  # noqa: E402
from deeplab_resnet.inference.agreement import agreement, meets_target  # noqa: E402
from deeplab_resnet.inference.optimize import FastInference, parse_options  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_fixture"


def with_cudnn_benchmark(run, on: bool):
    """``run`` with cuDNN autotuning set as its options say (the flag is global to the process)."""

    def call(x):
        torch.backends.cudnn.benchmark = on
        return run(x)

    return call


def measured_peak_tflops(device: torch.device, n: int = 8192, repeats: int = 20) -> float:
    """bf16 dense matmul throughput: the practical peak MFU is measured against."""
    if device.type != "cuda":
        n = 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    times = time_interleaved({"mm": lambda: a @ b}, repeats=repeats, warmup=3, device=device)["mm"]
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e12


def torchvision_model(num_classes: int):
    try:
        from torchvision.models.segmentation import deeplabv3_resnet101
    except ImportError:
        return None
    return deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False).eval()


def peak_memory_per_case(cases: dict, device: torch.device) -> dict[str, float]:
    """Each case's own peak (one call after a reset; on CPU the process's peak resident size,
    which cannot be reset, so only the largest means anything there)."""
    peaks = {}
    for name, fn in cases.items():
        reset_peak_memory(device)
        fn()
        peaks[name] = peak_memory_mb(device)
    return peaks


def forward_rows(model, device, size, batch, paths, repeats, images):
    x = image_batch(images, size, batch, model.mean_bgr).to(device)
    flops = count_flops(model, size, size, batch)
    runners = {}
    for spec in paths:
        if spec == "onnxruntime":
            try:
                import onnxruntime as ort

                if "CUDAExecutionProvider" not in ort.get_available_providers() and device.type == "cuda":
                    continue
            except ImportError:
                continue
            import tempfile

            from deeplab_resnet.inference.export import export_onnx
            from deeplab_resnet.inference.runtime import OnnxRuntimeBackend

            with tempfile.TemporaryDirectory() as tmp:  # the session holds the model once loaded
                path = export_onnx(model, Path(tmp) / "m.onnx")
                runners["onnxruntime"] = (OnnxRuntimeBackend(path, device=device).logits, "float32")
            continue
        options = parse_options(spec, device)
        fast = FastInference(model, options, device)
        runners[options.describe()] = (with_cudnn_benchmark(fast.logits, options.cudnn_benchmark), options.dtype)
    ref = runners["eager-fp32"][0](x)
    notes = {}
    for name, (run, dtype) in runners.items():
        stats = agreement(ref, run(x))
        notes[name] = f"rel-L2 {stats['rel_l2']:.1e}, argmax {stats['argmax_agreement']:.2%}" + (
            "" if meets_target(stats, dtype) else " (outside the agreement tolerance)"
        )
    cases = {n: (lambda r=r: r(x)) for n, (r, _) in runners.items()}
    mem = peak_memory_per_case(cases, device)
    times = time_interleaved(cases, repeats=repeats, warmup=3, device=device)
    return [Result(f"forward {size} b{batch} {n}", times[n], items=batch, flops=flops, note=notes[n],
                   peak_memory_mb=mem[n]) for n in runners]  # fmt: skip


def torchvision_rows(model, device, size, batch, repeats):
    tv = torchvision_model(model.num_classes)
    if tv is None:
        return [Result("torchvision DeepLabV3-R101", [], note="skipped: torchvision not installed")]
    x = image_batch((), size, batch, model.mean_bgr).to(device)
    ours32 = copy.deepcopy(model).to(device)
    ours = FastInference(model, parse_options("fold+cl+bf16+graphs" if device.type == "cuda" else "fold+cl"), device)
    torch.backends.cudnn.benchmark = False  # both sides with cuDNN's heuristics
    tv32 = tv.to(device)
    tvfast = copy.deepcopy(tv).to(device).to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def ours_full(fast: bool):
        with torch.inference_mode():
            logits = ours.logits(x) if fast else ours32(x)
            return ours32.upsample(logits, (size, size))

    def tv_run(fast: bool):
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=fast):
            return (tvfast if fast else tv32)(x.contiguous(memory_format=torch.channels_last) if fast else x)["out"]

    cases = {
        "ours eager fp32 (+upsample)": lambda: ours_full(False),
        "torchvision eager fp32": lambda: tv_run(False),
        "ours fast (+upsample)": lambda: ours_full(True),
        "torchvision cl+bf16": lambda: tv_run(True),
    }
    times = time_interleaved(cases, repeats=repeats, warmup=3, device=device)
    return [Result(f"vs torchvision {size} b{batch}: {n}", times[n], items=batch) for n in cases]


def train_rows(model, device, crop, batch, repeats, images):
    g = torch.Generator().manual_seed(0)
    x = image_batch(images, crop, batch, model.mean_bgr).to(device)
    labels = torch.randint(0, model.num_classes, (batch, crop, crop), generator=g).to(device)
    cases, flops = {}, {}
    dtypes = ("bfloat16", "float32") if device.type == "cuda" else ("float32",)
    for dtype in dtypes:
        for scales in ((1.0,), (1.0, 0.75, 0.5)):
            name = f"train {crop}x{crop}x{batch} {'single' if len(scales) == 1 else 'multi'}-scale {dtype}"
            cases[name] = training_step_fn(copy.deepcopy(model).to(device), x, labels, scales=scales, dtype=dtype,
                                           channels_last=True)  # fmt: skip
            flops[name] = training_step_flops(model, crop, batch, scales)
    mem = peak_memory_per_case(cases, device)
    times = time_interleaved(cases, repeats=repeats, warmup=3, device=device)
    return [Result(n, times[n], items=batch, flops=flops[n], peak_memory_mb=mem[n]) for n in cases]


def data_rows(pairs: list[Pair], crop, samples, mean_bgr):
    if not pairs:
        return [Result("data pipeline", [], note="skipped: no fixture images")]
    rng = random.Random(0)

    def loop():
        for i in range(samples):
            decode_augment_sample(pairs[i % len(pairs)], crop=crop, mean_bgr=mean_bgr, rng=rng)

    times = time_interleaved({"d": loop}, repeats=3, warmup=1, device=torch.device("cpu"))
    return [Result(f"data pipeline 1 worker {crop} crops", times["d"], items=samples, note="samples/s per worker")]


def derived_figures(rows: list[Result], peak: float, cores: int, size: int, crop: int, batch: int) -> dict:
    """The figures the table does not show directly, each from the rows it names (``None``: not
    measured), for inference at ``size`` and training steps of ``batch`` crops of ``crop``."""
    by = {r.name: r for r in rows if r.times_s}
    out: dict[str, float | None] = {}

    def figure(label: str, value: float | None) -> None:
        out[label] = None if value is None else float(value)

    def fastest(prefix: str) -> Result | None:
        cands = [r for n, r in by.items() if n.startswith(prefix) and "eager-fp32" not in n]
        return min(cands, key=lambda r: r.median_s) if cands else None

    b8 = fastest(f"forward {size} b8")
    figure(f"{size} inference b8, fraction of the bf16 peak", b8.tflops / peak if b8 and b8.tflops else None)
    figure(f"{size} inference b8, ms/image", b8.median_s / 8 * 1e3 if b8 else None)
    b1 = fastest(f"forward {size} b1")
    figure(f"{size} inference b1, ms", b1.median_s * 1e3 if b1 else None)
    step = f"train {crop}x{crop}x{batch} single-scale"
    tr = by.get(f"{step} bfloat16") or by.get(f"{step} float32")
    figure(f"training step {crop}x{crop}x{batch} {'bf16' if tr and 'bfloat16' in tr.name else 'fp32'}, ms",
           tr.median_s * 1e3 if tr else None)  # fmt: skip
    for b in (1, 8):
        ours = by.get(f"vs torchvision {size} b{b}: ours fast (+upsample)")
        tv = by.get(f"vs torchvision {size} b{b}: torchvision cl+bf16")
        figure(f"ours / torchvision b{b}, images/s", ours.items_per_s / tv.items_per_s if ours and tv else None)
    data = next((r for n, r in by.items() if n.startswith("data pipeline")), None)
    feed = data.items_per_s * cores / tr.items_per_s if data and tr else None
    figure(f"data pipeline x {cores} cores / training images/s", feed)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="deeplab_v2_resnet101")
    p.add_argument("--size", type=int, default=513)
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--train-batch", type=int, default=10)
    p.add_argument("--train-crop", type=int, default=321)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores feeding the GPU")
    p.add_argument("--data", type=Path, default=FIXTURE, help="the VOC fixture folder (default: %(default)s)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    pairs = read_list(args.data, args.data / "list_all.txt") if args.data.is_dir() else []
    images = tuple(str(q.image) for q in pairs)
    calib = [image_batch(images, 257, 4, (104.008, 116.669, 122.675), offset=12)]
    model = realistic_model(args.model, calibration=calib).to(device)
    peak = measured_peak_tflops(device)
    rows = [Result("bf16 matmul peak (measured)", [], note=f"{peak:.1f} TFLOP/s")]
    paths = ["eager", "fold+cl+bf16", "fold+cl+fp16", "default", "onnxruntime"]
    if device.type == "cuda":
        paths += ["fold+cl+bf16+graphs+cudnn-bench"] + (["fold+cl+bf16+compile"] if args.compile else [])
    else:
        paths += ["fold+cl"]
    for b in (int(v) for v in args.batch_sizes.split(",")):
        rows += forward_rows(model, device, args.size, b, paths, args.repeats, images)
        rows += torchvision_rows(model, device, args.size, b, args.repeats)
    rows += train_rows(model, device, args.train_crop, args.train_batch, args.repeats, images)
    rows += data_rows(pairs, args.train_crop, 20, model.mean_bgr)
    info = machine_info(device)
    print(f"# {info['date_utc']} UTC, {info.get('gpu', info['device'])}, torch {info['torch']}")
    print(format_table(rows, peak))
    derived = derived_figures(rows, peak, args.cores, args.size, args.train_crop, args.train_batch)
    for label, value in derived.items():
        print(f"{label}: {'not measured' if value is None else f'{value:.3g}'}")
    if args.json:
        write_json(args.json, rows, peak_tflops=peak, info=info, extra={"derived": derived})
    return 0


if __name__ == "__main__":
    sys.exit(main())
