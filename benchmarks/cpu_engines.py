"""Every CPU engine side by side in one process: speed against eager fp32, accuracy, and the targets.

The realistic ResNet-101 (random weights, BN calibrated on real images: ``bench.realistic``) at
SIZE x SIZE, batch 1, THREADS threads; after warm-up, REPEATS interleaved repeats of every installed
engine (eager fp32 NCHW, torch fold+cl, torch.compile of fold+cl, onnxruntime, OpenVINO f32, int8 on both ONNX engines,
bf16). Accuracy against eager fp32 on the --score-list images at their own (protocol) size; int8
is calibrated on the --calibration-list images, which are not scored. Prints the CPU, its
features and the load average before and after, the table, the target lines, the fp32 rate the 2x target needs against the CPU's peak and, for a missed
target, the per-layer profile of the best path.

    PYTHONPATH=src python benchmarks/cpu_engines.py --threads 2 --repeats 7 --json cpu_engines.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from deeplab_resnet.bench import engines as eng
from deeplab_resnet.bench.flops import count_flops
from deeplab_resnet.bench.realistic import (
    add_benchmark_model_arguments,
    benchmark_model,
    calibration_and_scored,
    image_batch,
)
from deeplab_resnet.bench.timing import machine_info, report_main, time_interleaved
from deeplab_resnet.inference import cpu_features
from deeplab_resnet.inference.quantize import network_inputs, quantize_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voc_fixture"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_benchmark_model_arguments(ap, data_dir=DATA, score_images=11)
    ap.add_argument("--size", type=int, default=513)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--engines", default=None, help="comma-separated subset of: " + ", ".join(eng.ENGINES))
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--cache-dir", type=Path, default=None, help="keep exports here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def prepare(args, cache_dir: Path):
    """The model, the engines, the timing input and the scored inputs (with their images' sizes)."""
    train, scored = calibration_and_scored(args)
    model = benchmark_model(args, train)
    names = eng.available_engines(args.engines.split(",") if args.engines else None)
    if "eager-fp32" not in names:
        names.insert(0, "eager-fp32")
    int8 = None
    if any(n.endswith("int8") for n in names):
        int8 = quantize_model(model, train, images=args.calibration_images, cache_dir=cache_dir)
    engines = eng.build_engines(model, names, threads=args.threads, cache_dir=cache_dir, int8_model=int8)
    x = image_batch([str(p) for p in scored], args.size, 1, model.mean_bgr)
    return model, engines, x, network_inputs(model, scored)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    before = eng.machine_lines()
    print("\n".join(before), flush=True)
    with tempfile.TemporaryDirectory(prefix="deeplab_cpu_engines_") as tmp:
        model, engines, x, scored = prepare(args, args.cache_dir or Path(tmp))
        fast = {k: v for k, v in engines.items() if k != "eager-fp32"}
        # agreement over the scored images' own pixels (the test protocol's padding not counted)
        accuracy = eng.measure_accuracy(model, fast, [torch.from_numpy(a) for a, _ in scored], [s for _, s in scored])
        times = time_interleaved({k: (lambda e=e: e(x)) for k, e in engines.items()}, repeats=args.repeats,
                                 warmup=args.warmup)  # fmt: skip
        rows = [
            eng.EngineRow(k, eng.ENGINES[k][2], times[k], accuracy.get(k, {}), eng.runs_as(e, eng.ENGINES[k][2]))
            for k, e in engines.items()
        ]
        targets, missed = eng.target_lines(rows, cpu_features.feature_class())
        fp32_rows = [r for r in rows if r.precision == "float32" and r.name != "eager-fp32"]
        if fp32_rows:
            targets.append(eng.fp32_bound_line(
                count_flops(model, args.size, args.size), eager_s=next(r for r in rows if r.name == "eager-fp32").median_s,
                best_s=min(r.median_s for r in fp32_rows), cores=min(args.threads, cpu_features.physical_cores()),
                mhz=cpu_features.clock_mhz(),
            ))  # fmt: skip
        profiles = {r.name: eng.layer_profile(engines[r.name], x, args.profile_top) for r in missed}
    after = eng.machine_lines()[-1]
    print(
        f"# {args.model}, {args.size}x{args.size} batch 1, {args.threads} threads, {args.repeats} interleaved repeats"
    )
    print(eng.format_rows(rows))
    print("\n".join(targets))
    for name, lines in profiles.items():
        print(f"per-layer profile of {name} (one run, slowest first):")
        print("\n".join(lines))
    print(f"after: {after}")
    return {
        "machine": {**machine_info(torch.device("cpu")), "cpu": before[0], "load_before": before[1], "load_after": after},
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [{"engine": r.name, "precision": r.precision, "times_s": r.times_s, "median_s": r.median_s,
                  "accuracy": r.accuracy, "runs_as": r.runs_as} for r in rows],  # fmt: skip
        "targets": targets, "profiles": profiles,
    }  # fmt: skip


def main(argv=None) -> int:
    return report_main(parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
