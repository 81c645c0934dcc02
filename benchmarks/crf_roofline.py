"""Dense CRF time per batch on one implementation: ``triton``, ``torch`` (ops), ``c`` or ``pydensecrf``.

    PYTHONPATH=src python benchmarks/crf_roofline.py --impl triton --batch 8 --size 500x375 --labels 21 \\
        --iters 10 --device cuda --agreement --json crf_roofline_triton.json

Each call refines a batch of ``--batch`` synthetic images (coloured regions with noise; the
probabilities a blurred one-hot of the regions' labels plus noise, softmaxed, so every label is
filtered: nothing is pruned) with the DeepLab-ResNet preset's kernels (``crf/params.py``) and
``--iters`` mean-field iterations. Times are medians over ``--repeats`` calls after ``--warmup``,
with CUDA events on a GPU (``perf_counter`` on CPU); ``c`` and ``pydensecrf`` run on the CPU, one
image after the other, whatever ``--device`` says. Everything is in a call (lattices,
normalisation, iterations) except the position kernel's lattice, which every implementation but
pydensecrf caches per image size, as in a dataset run. A second timing at one iteration splits a
call into setup (lattices) and per-iteration cost: ``(T(iters) - T(1)) / (iters - 1)``.
``--agreement`` also compares the first batch's labels with the C kernel's (same model).

Expected cost of the ``triton`` implementation (the cost model in ``crf/triton_lattice.py``):
per image and iteration 22 to 50 ``P`` rows of ``4 C`` bytes (``P`` = 187,500 pixels, ``C`` = 21:
0.35 to 0.79 GB, depending on how many gathers hit L2), i.e. 0.12-0.26 ms at an H100's ~3 TB/s,
1.2-2.6 ms for 10 iterations, plus the lattice construction. The printed ``per_iter_ms`` divided
by the batch, against 0.12-0.26 ms, is the roofline check (scale by the GPU's bandwidth; an H200
has ~4.8 TB/s); ``setup_ms`` is the lattices' share; ``*_m_per_p`` are the measured ``M / P``
(the model assumes 0.61 bilateral and 1.16 position, from a VOC image).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import torch
import torch.nn.functional as F

from deeplab_resnet.bench.timing import Result, format_table, machine_info, time_interleaved, write_json
from deeplab_resnet.crf import PRESETS, c_meanfield, permutohedral, pydensecrf_adapter, torch_meanfield, triton_lattice

IMPLS = ("triton", "torch", "c", "pydensecrf")
CPU_ONLY = ("c", "pydensecrf")


def synthetic_batch(batch: int, height: int, width: int, labels: int, seed: int = 0):
    """``B x H x W x 3`` uint8 images of coloured rectangles with noise, and ``B x C x H x W``
    probabilities: the rectangles' labels one-hot, blurred, scaled, plus noise, softmaxed."""
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(batch, height, width, dtype=torch.int64)
    colour = torch.randint(0, 256, (batch, labels, 3), generator=g)
    for b in range(batch):
        for _ in range(12):
            y0, x0 = (int(torch.randint(0, n - 1, (1,), generator=g)) for n in (height, width))
            y1 = y0 + 1 + int(torch.randint(0, max(1, height // 2), (1,), generator=g))
            x1 = x0 + 1 + int(torch.randint(0, max(1, width // 2), (1,), generator=g))
            label[b, y0:y1, x0:x1] = int(torch.randint(0, labels, (1,), generator=g))
    rgb = torch.stack([colour[b][label[b]] for b in range(batch)]).float()
    images = (rgb + 6 * torch.randn(rgb.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    onehot = F.one_hot(label, labels).permute(0, 3, 1, 2).float()
    blurred = F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False)
    logits = 6 * blurred + 0.5 * torch.randn(blurred.shape, generator=g)
    return images, torch.softmax(logits, dim=1)


def refine_fn(impl: str, images: torch.Tensor, probs: torch.Tensor, params):
    """A call refining the batch with ``impl`` (inputs already on its device)."""
    if impl == "triton":
        return lambda: triton_lattice.refine_batch(images, probs, params)
    if impl == "torch":
        return lambda: torch_meanfield.refine_batch(images, probs, params)
    module = c_meanfield if impl == "c" else pydensecrf_adapter
    imgs, ps = images.numpy(), probs.numpy()
    return lambda: np.stack([module.refine(imgs[i], ps[i], params) for i in range(len(ps))])


def _agreement(impl_out, images: torch.Tensor, probs: torch.Tensor, params) -> dict:
    """Label agreement and max |dQ| of a batch's output against the C kernel on the same input."""
    ours = torch.as_tensor(np.asarray(impl_out.cpu() if torch.is_tensor(impl_out) else impl_out))
    ref = torch.from_numpy(np.stack([c_meanfield.refine(i, p, params) for i, p in zip(images.numpy(), probs.numpy())]))
    agree = (ours.argmax(1) == ref.argmax(1)).double().mean(dim=(1, 2))
    return {"min_label_agreement": float(agree.min()), "max_abs_dq": float((ours - ref).abs().max())}


def lattice_sizes(images: torch.Tensor, params) -> dict:
    """Vertices per pixel of the first image's two lattices (the ``M / P`` of the cost model)."""
    height, width = images.shape[1:3]
    bilateral = permutohedral.image_features(height, width, params.bi_xy, images[:1], params.bi_rgb)
    position = permutohedral.image_features(height, width, params.pos_xy)
    pixels = height * width
    return {
        "bilateral_m_per_p": permutohedral.build_lattice(bilateral).num_vertices / pixels,
        "position_m_per_p": permutohedral.build_lattice(position).num_vertices / pixels,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impl", choices=IMPLS, required=True)
    ap.add_argument("--batch", type=int, default=8, help="images per call")
    ap.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of every image")
    ap.add_argument("--labels", type=int, default=21)
    ap.add_argument("--iters", type=int, default=10, help="mean-field iterations")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--agreement", action="store_true", help="compare the labels with the C kernel's")
    ap.add_argument("--json", help="also write the results here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = torch.device("cpu" if args.impl in CPU_ONLY else args.device)
    if args.impl == "triton" and not triton_lattice.runs_on(device):
        print(f"gpu_crf: the triton implementation needs CUDA and triton (or TRITON_INTERPRET=1), not {device}")
        return 2
    images, probs = synthetic_batch(args.batch, height, width, args.labels)
    base = PRESETS["deeplab-resnet"]
    cases = {}
    for iters in sorted({1, args.iters}):
        params = dataclasses.replace(base, iterations=iters)
        cases[f"{args.impl} x{iters}"] = refine_fn(args.impl, images.to(device), probs.to(device), params)
    times = time_interleaved(cases, repeats=args.repeats, warmup=args.warmup, device=device)
    results = [Result(name, t, items=args.batch) for name, t in times.items()]
    full, one = results[-1], results[0]
    extra = {"per_image_ms": full.median_s * 1000 / args.batch, **lattice_sizes(images, base)}
    if args.iters > 1:
        per_iter = (full.median_s - one.median_s) / (args.iters - 1)
        extra.update(per_iter_ms=per_iter * 1000, setup_ms=(one.median_s - per_iter) * 1000)
    if args.agreement:
        params = dataclasses.replace(base, iterations=args.iters)
        extra.update(_agreement(cases[full.name](), images, probs, params))
    full.extra = extra
    full.note = ", ".join(f"{k} {v:.4g}" for k, v in extra.items())
    info = machine_info(device)
    print(f"{args.batch} x {width}x{height}, {args.labels} labels; {info}")
    print(format_table(results))
    if args.json:
        write_json(args.json, results, peak_tflops=None, info={**info, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
