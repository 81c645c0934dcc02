"""Where our dense CRF's time goes on one image: lattice sizes, rows gathered, build vs iterations.

Side by side with pydensecrf's setup (``DenseCRF2D`` + kernels) and inference on the same image.

    PYTHONPATH=src python benchmarks/crf_profile.py --threads 1 --image 2007_000129
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from deeplab_resnet.crf import PRESETS, torch_backend
from deeplab_resnet.images import read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voc_fixture"


def rows_per_iteration(op) -> int:
    """Rows read by one application of a lattice operator (splat + blur passes + slice)."""
    return sum(int(bags[0].numel()) for bags in [op.splat, *op.blur, op.slice])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--image", default="2007_000129")
    ap.add_argument("--preset", default="deeplab-resnet")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import pydensecrf.densecrf as dcrf

    img = read_image(DATA / "JPEGImages" / f"{args.image}.jpg")
    h, w, _ = img.shape
    params = PRESETS[args.preset]
    probs = np.random.default_rng(0).random((21, h, w)).astype(np.float32)
    probs /= probs.sum(axis=0)
    unary = -np.log(probs).reshape(21, -1)
    u = torch.from_numpy(unary.T.copy())
    images = torch.from_numpy(img)[None]
    t = {k: [] for k in ("pyd setup", "pyd inference", "ours build", "ours 10 iterations")}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        crf = dcrf.DenseCRF2D(w, h, 21)
        crf.setUnaryEnergy(np.ascontiguousarray(unary))
        crf.addPairwiseGaussian(sxy=params.pos_xy, compat=params.pos_w)
        crf.addPairwiseBilateral(sxy=params.bi_xy, srgb=params.bi_rgb, rgbim=img, compat=params.bi_w)
        t1 = time.perf_counter()
        crf.inference(params.iterations)
        t2 = time.perf_counter()
        mf = torch_backend.MeanField(images, params, prune=False)
        t3 = time.perf_counter()
        mf.infer(u, params.iterations)
        t4 = time.perf_counter()
        for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k].append(v)
    print(f"# {args.image} {w}x{h}, preset {args.preset}, threads {args.threads}, load {os.getloadavg()[0]:.1f}")
    rg, rb = rows_per_iteration(mf.gauss), rows_per_iteration(mf.bilateral)
    mg, mb = (op.blur[0][1].numel() - 1 for op in (mf.gauss, mf.bilateral))
    print(f"pixels {h * w}; lattice vertices: gaussian {mg}, bilateral {mb}")
    print(f"rows gathered per iteration: gaussian {rg}, bilateral {rb} (21 floats each)")
    for k, v in t.items():
        print(f"{k}: median {statistics.median(v):.3f} s")


if __name__ == "__main__":
    main()
