"""``deeplab benchmark``: time inference paths, training steps, the data pipeline, evaluation and the CRF."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DeepLabError

DESCRIPTION = (
    "Time forward passes (eager fp32 against the fast paths and onnxruntime, interleaved), training "
    "steps, the data pipeline, evaluation and the dense CRF. Prints median, spread, images/s, "
    "achieved TFLOP/s and the fraction of --peak-tflops; writes JSON with --json. The model is "
    "random with realistic BN statistics unless --weights is given."
)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise DeepLabError(f"expected integers separated by commas, got {text!r}") from exc
    if not values or min(values) < 1:
        raise DeepLabError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="deeplab_v2_resnet101", help="architecture (default: %(default)s)")
    p.add_argument("--weights", default=None, help="weights to time instead of a random model")
    p.add_argument("--convention", default="caffe", choices=("caffe", "tf"))
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--size", type=int, default=513, help="forward input size, square (default: %(default)s)")
    p.add_argument("--batch-sizes", default=None, help="forward batch sizes (default: 1 on CPU, 1,8 on CUDA)")
    p.add_argument(
        "--paths", default=None,
        help="inference paths, comma-separated: eager, default, onnxruntime, openvino, openvino-bf16, "
        "onnxruntime-int8, openvino-int8 (calibrated on --calibration-list), or '+' lists of fold, cl, bf16, "
        "fp16, compile, graphs, cudnn-bench, pinned (default: eager,default,onnxruntime on CPU; "
        "eager,default,fold+cl+bf16+graphs on CUDA)",
    )  # fmt: skip
    p.add_argument("--sections", default="forward,train,data,eval,crf", help="what to time (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after warm-up (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up calls per case (default: %(default)s)")
    p.add_argument("--train-crop", type=int, default=321)
    p.add_argument("--train-batch", type=int, default=None, help="default: 2 on CPU, 10 on CUDA")
    p.add_argument("--train-dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="default: float32 on CPU, bfloat16 on CUDA")  # fmt: skip
    p.add_argument("--data-dir", default=None, help="images for inputs, the data pipeline and evaluation "
                   "(default: ../shared/data/voc_fixture if present)")  # fmt: skip
    p.add_argument("--list", default="list_val.txt", help="list file in --data-dir (default: %(default)s)")
    p.add_argument(
        "--calibration-list", default="list_train.txt",
        help="list file in --data-dir whose images calibrate the int8 paths (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--data-samples", type=int, default=20)
    p.add_argument("--eval-images", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for the fraction column")
    p.add_argument(
        "--min-speedup", type=float, default=None, metavar="X",
        help="say whether the fastest path within its agreement tolerance is at least X times eager fp32",
    )  # fmt: skip
    p.add_argument("--fp64-reference", action="store_true", help="also report eager fp32 against float64")
    p.add_argument("--compile-cache", default=None, help="torch.compile cache directory")
    p.add_argument("--json", default=None, help="write the results here (atomically)")


def _data_dir(args: argparse.Namespace) -> Path | None:
    data_dir = Path(args.data_dir) if args.data_dir else Path("../shared/data/voc_fixture")
    if not data_dir.is_dir():
        if args.data_dir:
            raise DeepLabError(f"--data-dir {data_dir}: not a directory")
        return None
    return data_dir


def _find_data(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from ..data.lists import read_list

    data_dir = _data_dir(args)
    if data_dir is None:
        return (), ()
    pairs = read_list(data_dir, data_dir / args.list)
    return tuple(str(p.image) for p in pairs), tuple(str(p.label) for p in pairs)


def _calibration_images(args: argparse.Namespace) -> tuple[str, ...]:
    """The images that calibrate int8 paths (none without a data folder or when the list is missing)."""
    from ..data.lists import read_list

    data_dir = _data_dir(args)
    if data_dir is None or not (data_dir / args.calibration_list).is_file() or args.calibration_list == args.list:
        return ()
    return tuple(str(p.image) for p in read_list(data_dir, data_dir / args.calibration_list))


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench.suites import SECTIONS, BenchmarkConfig, run_benchmark
    from ..bench.timing import format_table, machine_info, write_json
    from .common import resolve_device

    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise DeepLabError(f"--sections: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.repeats < 1 or args.warmup < 0 or args.size < 16:
        raise DeepLabError("--repeats must be >= 1, --warmup >= 0 and --size >= 16")
    if args.min_speedup is not None and args.min_speedup <= 0:
        raise DeepLabError(f"--min-speedup must be positive, got {args.min_speedup:g}")
    default_paths = "eager,default,fold+cl+bf16+graphs" if cuda else "eager,default,onnxruntime"
    images, labels = _find_data(args)
    config = BenchmarkConfig(
        model=args.model, convention=args.convention, device=device, size=args.size,
        batch_sizes=_ints(args.batch_sizes or ("1,8" if cuda else "1")),
        paths=tuple(s.strip() for s in (args.paths or default_paths).split(",") if s.strip()),
        repeats=args.repeats, warmup=args.warmup, sections=sections, train_crop=args.train_crop,
        train_batch=args.train_batch or (10 if cuda else 2),
        train_dtype=args.train_dtype or ("bfloat16" if cuda else "float32"),
        data_samples=args.data_samples, eval_images=args.eval_images, onnx_threads=args.threads,
        peak_tflops=args.peak_tflops, images=images, labels=labels, reference_fp64=args.fp64_reference,
        compile_cache_dir=args.compile_cache, min_speedup=args.min_speedup,
        calibration_images=_calibration_images(args),
    )  # fmt: skip
    model = None
    if args.weights:
        from ..weights import load_model

        model = load_model(args.weights)
    results, notes = run_benchmark(config, model)
    info = machine_info(torch.device(device))
    print(f"# {info['date_utc']} UTC, {info['device']}, torch {info['torch']}, {info['threads']} threads, "
          f"{args.model} ({args.convention})")  # fmt: skip
    print(format_table(results, args.peak_tflops))
    for note in notes:
        print(note)
    if args.json:
        write_json(args.json, results, peak_tflops=args.peak_tflops, info=info)
        print(f"wrote {args.json}")
    return 0
