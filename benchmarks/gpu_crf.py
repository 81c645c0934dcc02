"""Time the dense CRF on a batch of images, per implementation, and compare their labels.

    PYTHONPATH=src python benchmarks/gpu_crf.py --device cuda --impl torch,triton --json crf.json

Implementations (``--impl``, comma-separated): ``torch`` (``crf/torch_meanfield.py``: torch ops,
any device), ``triton`` (``crf/triton_lattice.py`` when that module is present and Triton runs
on the device; reported as skipped otherwise), ``c`` (the C kernel, CPU only, one image at a time).
Each is timed on the same batch (real fixture photos resized to ``--height`` x ``--width``, or
random-colour images without them; noisy unaries from the ground truth), interleaved, with CUDA
events on a GPU; the time includes building the lattices (as ``refine_batch`` does per batch).
Labels of every implementation are compared with the first one's.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from deeplab_resnet.atomic import atomic_write_text  # noqa: E402
from deeplab_resnet.bench.timing import machine_info, time_interleaved  # noqa: E402
from deeplab_resnet.crf import DEFAULT_PRESET, PRESETS, CRFParams  # noqa: E402

Refine = Callable[[torch.Tensor, torch.Tensor, CRFParams], torch.Tensor]


def crf_batch(
    batch: int, height: int, width: int, labels: int, voc: Path | None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` images (``B x H x W x 3`` uint8) and probabilities (``B x C x H x W``): fixture photos
    and their ground truth made noisy, or random colours and labels without the fixture."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    photos = sorted((voc / "JPEGImages").glob("*.jpg")) if voc and voc.is_dir() else []
    images, gts = [], []
    for i in range(batch):
        if photos:
            path = photos[i % len(photos)]
            rgb = Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR)
            gt = Image.open(voc / "SegmentationClassAug" / f"{path.stem}.png").resize((width, height), Image.NEAREST)
            images.append(torch.from_numpy(np.asarray(rgb).copy()))
            gts.append(torch.from_numpy(np.asarray(gt).astype(np.int64) % labels))
        else:
            images.append(torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8))
            gts.append(torch.randint(0, labels, (height, width), generator=g))
    onehot = torch.nn.functional.one_hot(torch.stack(gts), labels).permute(0, 3, 1, 2).float()
    probs = torch.softmax(onehot * 2.0 + torch.randn(onehot.shape, generator=g) * 1.5, dim=1)
    return torch.stack(images), probs


def implementation(name: str, device: torch.device) -> tuple[Refine | None, str]:
    """The refine function of ``name`` on ``device``, or ``None`` and why it cannot run here."""
    if name == "torch":
        from deeplab_resnet.crf import torch_meanfield

        return torch_meanfield.refine_batch, ""
    if name == "c":
        from deeplab_resnet.crf import c_meanfield, kernel_c

        if device.type != "cpu" or not kernel_c.available():
            return None, "skipped: the C kernel runs on the CPU only, with a C compiler"

        def c_batch(images, probs, params):
            return torch.stack([
                torch.from_numpy(c_meanfield.refine(i.numpy(), p.numpy(), params)) for i, p in zip(images, probs)
            ])  # fmt: skip

        return c_batch, ""
    if name == "triton":
        if device.type != "cuda":
            return None, "skipped: no CUDA"
        try:
            module = importlib.import_module("deeplab_resnet.crf.triton_lattice")
        except ImportError as exc:
            return None, f"skipped: crf/triton_lattice.py not importable ({exc})"
        refine = getattr(module, "refine_batch", None)
        available = getattr(module, "available", lambda: True)
        if refine is None or not available():
            return None, "skipped: triton_lattice has no refine_batch, or Triton is unavailable"
        return refine, ""
    raise SystemExit(f"--impl: unknown implementation {name!r} (torch, triton, c)")


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    params = dataclasses.replace(PRESETS[DEFAULT_PRESET], iterations=args.iterations)
    images, probs = crf_batch(args.batch, args.height, args.width, args.labels, args.voc)
    images, probs = images.to(device), probs.to(device)
    rows, runners = {}, {}
    for name in args.impl.split(","):
        refine, why = implementation(name.strip(), device)
        if refine is None:
            rows[name] = {"status": why}
        else:
            runners[name] = refine
    outputs = {n: r(images, probs, params).cpu() for n, r in runners.items()}  # also the warm-up compile
    times = time_interleaved(
        {n: (lambda r=r: r(images, probs, params)) for n, r in runners.items()},
        repeats=args.repeats, warmup=1, device=device,
    )  # fmt: skip
    first = next(iter(outputs), None)
    for name, t in times.items():
        median = float(np.median(t))
        labels_equal = float((outputs[name].argmax(1) == outputs[first].argmax(1)).double().mean())
        rows[name] = {
            "status": "ok", "median_ms": median * 1e3, "min_ms": min(t) * 1e3, "ms_per_image": median * 1e3 / args.batch,
            "label_agreement_with_" + first: labels_equal,
            "max_abs_dq_vs_" + first: float((outputs[name] - outputs[first]).abs().max()),
        }  # fmt: skip
    shape = {"batch": args.batch, "height": args.height, "width": args.width, "labels": args.labels}
    return {"machine": machine_info(device), "shape": shape, "iterations": args.iterations, "impl": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--impl", default="torch,triton", help="comma-separated: torch, triton, c")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--labels", type=int, default=21)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--voc", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_fixture")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    result = run(args)
    for name, row in result["impl"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
