"""Our dense CRF against pydensecrf, side by side on the same images and unaries.

For each preset and each fixture image: pydensecrf, ours with its C kernel (``kernel="c"``,
what ``--crf-backend builtin``/``auto`` run on CPU) and ours as torch ops (``kernel="torch"``, the
fallback without a C compiler, and the CUDA path) on the same image and probabilities, one after
the other (so machine load hits all alike); label agreement and max |dQ| of the C kernel
against pydensecrf, mIoU after CRF from one confusion matrix per backend, and per-image times
(everything included: lattices, normalisation, 10 iterations; the position kernel's lattice is
cached per image size, as in a dataset run). A second table repeats the timings for the images of
one size alone (500x375 or 375x500), the size most VOC images have.

Unaries: the ground truth as one-hot, blurred (sigma 6 px), times ``--scale`` plus N(0, 0.5)
noise, softmaxed. ``--scale 6`` leaves every one of the 21 labels at >= ~1e-3 somewhere (all
labels are filtered); a larger scale is closer to a trained network's peaked output, where
labels absent from the image are pruned (see crf/meanfield_rules.py).

    PYTHONPATH=src python benchmarks/crf_vs_pydensecrf.py --threads 1 --scale 6
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from deeplab_resnet.crf import PRESETS, builtin, pydensecrf_adapter
from deeplab_resnet.data.lists import read_list
from deeplab_resnet.evaluation.metrics import ConfusionMeter
from deeplab_resnet.images import load_pair

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voc_fixture"


def blurred_probs(label: np.ndarray, scale: float, classes: int = 21, seed: int = 0) -> np.ndarray:
    lab = np.where(label >= classes, 0, label)
    onehot = np.eye(classes, dtype=np.float32)[lab].transpose(2, 0, 1)
    logits = np.stack([gaussian_filter(o, 6.0) for o in onehot]) * scale
    logits += np.random.default_rng(seed).normal(0, 0.5, logits.shape).astype(np.float32)
    p = np.exp(logits - logits.max(axis=0))
    return (p / p.sum(axis=0)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for ours (pydensecrf is single-threaded)")
    ap.add_argument("--scale", type=float, default=6.0, help="logit scale of the blurred one-hot unaries")
    ap.add_argument("--list", default="list_val.txt", help="list file in the fixture")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--no-torch-ops", action="store_true", help="leave out the torch-ops column (ours without C)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = read_list(DATA, DATA / args.list)
    if args.limit:
        pairs = pairs[: args.limit]
    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, threads {args.threads}, "
        f"scale {args.scale}, {len(pairs)} images from {args.list}"
    )
    print(
        "| preset | label agreement (min / all) | max abs dQ | mIoU unary | mIoU pydensecrf | mIoU ours | "
        "median s/image pydensecrf | ours, C kernel | ours, torch ops | speed-up C kernel | speed-up torch ops |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    data, voc_size = [], []
    for pair in pairs:
        img, lab = load_pair(pair)
        data.append((img, lab, blurred_probs(lab, args.scale)))
        voc_size.append(sorted(img.shape[:2]) == [375, 500])
    for kernel in ("c", "torch"):  # warm-up (and compiles the C kernel on a first run)
        builtin.refine(
            data[0][0][:64, :64].copy(), data[0][2][:, :64, :64].copy(), PRESETS["deeplab-resnet"], "cpu", kernel=kernel
        )
    sized = []
    for name in args.presets.split(","):
        params = PRESETS[name]
        meters = {k: ConfusionMeter(21) for k in ("unary", "pyd", "ours")}
        times = {"pyd": [], "ours": [], "torch": []}
        agree, same, total, maxdiff = 1.0, 0, 0, 0.0
        for img, lab, probs in data:
            t0 = time.perf_counter()
            ref = pydensecrf_adapter.refine(img, probs, params)  # tested equal to a direct DenseCRF2D call
            t1 = time.perf_counter()
            ours = builtin.refine(img, probs, params, device="cpu", kernel="c")
            t2 = time.perf_counter()
            if not args.no_torch_ops:
                builtin.refine(img, probs, params, device="cpu", kernel="torch")
            t3 = time.perf_counter()
            times["pyd"].append(t1 - t0)
            times["ours"].append(t2 - t1)
            times["torch"].append(t3 - t2 if not args.no_torch_ops else float("nan"))
            a, b = ref.argmax(0), ours.argmax(0)
            agree = min(agree, float((a == b).mean()))
            same += int((a == b).sum())
            total += a.size
            maxdiff = max(maxdiff, float(np.abs(ref - ours).max()))
            meters["unary"].update(probs.argmax(0), lab)
            meters["pyd"].update(a, lab)
            meters["ours"].update(b, lab)
        miou = {k: 100 * m.scores().mean_iou for k, m in meters.items()}
        sized.append((name, *(statistics.median(np.array(times[k])[voc_size]) for k in ("pyd", "ours", "torch"))))
        tp, to, tt = (statistics.median(times[k]) for k in ("pyd", "ours", "torch"))
        print(
            f"| {name} | {100 * agree:.3f}% / {100 * same / total:.3f}% | {maxdiff:.1e} | {miou['unary']:.2f} | "
            f"{miou['pyd']:.2f} | {miou['ours']:.2f} | {tp:.2f} | {to:.2f} | {tt:.2f} | {tp / to:.2f}x | {tp / tt:.2f}x |"
        )
    print(f"\nThe {sum(voc_size)} images of 500x375 or 375x500 pixels alone (same runs):\n")
    print(
        "| preset | median s/image pydensecrf | ours, C kernel | ours, torch ops | speed-up C kernel | speed-up torch ops |"
    )
    print("|---|---|---|---|---|---|")
    for name, tp, to, tt in sized:
        print(f"| {name} | {tp:.2f} | {to:.2f} | {tt:.2f} | {tp / to:.2f}x | {tp / tt:.2f}x |")


if __name__ == "__main__":
    main()
