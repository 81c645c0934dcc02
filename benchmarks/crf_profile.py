"""Where our dense CRF's time goes on one image, side by side with pydensecrf's setup and inference.

Ours is the C kernel (``crf/kernel_c.py``, what ``--crf-backend builtin`` runs on CPU): position
lattice (built here every repeat; a dataset run caches it per image size), bilateral lattice, normalisation, 10 mean-field
iterations; and, for comparison, the same iterations as torch ops. Every step runs on the same
image and probabilities, one after the other, ``--repeats`` times; medians are printed.

    PYTHONPATH=src python benchmarks/crf_profile.py --threads 2 --image 2007_000129
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from deeplab_resnet.crf import PRESETS, c_meanfield, kernel_c, permutohedral, torch_meanfield

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voc_fixture"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", default="2007_000129")
    ap.add_argument("--preset", default="deeplab-resnet")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import pydensecrf.densecrf as dcrf

    from deeplab_resnet.images import read_image

    img = read_image(DATA / "JPEGImages" / f"{args.image}.jpg")
    h, w, _ = img.shape
    params = PRESETS[args.preset]
    probs = np.random.default_rng(0).random((21, h, w)).astype(np.float32)
    probs /= probs.sum(axis=0)
    unary = -np.log(probs).reshape(21, -1)
    pos = permutohedral.image_features(h, w, params.pos_xy).numpy()
    bil = permutohedral.image_features(h, w, params.bi_xy, torch.from_numpy(img)[None], params.bi_rgb).numpy()
    steps = ("pyd setup", "pyd inference", "ours position lattice + normalisation", "ours bilateral lattice")
    steps += ("ours bilateral normalisation", "ours 10 iterations", "ours 10 iterations as torch ops")
    t = {k: [] for k in steps}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        crf = dcrf.DenseCRF2D(w, h, 21)
        crf.setUnaryEnergy(np.ascontiguousarray(unary))
        crf.addPairwiseGaussian(sxy=params.pos_xy, compat=params.pos_w)
        crf.addPairwiseBilateral(sxy=params.bi_xy, srgb=params.bi_rgb, rgbim=img, compat=params.bi_w)
        t1 = time.perf_counter()
        crf.inference(params.iterations)
        t2 = time.perf_counter()
        gauss = kernel_c.CLattice(pos)
        norm_g, _ = c_meanfield.normalisation(gauss)
        t3 = time.perf_counter()
        bilateral = kernel_c.CLattice(bil)
        t4 = time.perf_counter()
        norm_b, _ = c_meanfield.normalisation(bilateral)
        t5 = time.perf_counter()
        kernel_c.mean_field(
            [gauss, bilateral], [norm_g, norm_b], [params.pos_w, params.bi_w], probs.reshape(21, -1), params.iterations
        )
        t6 = time.perf_counter()
        mf = torch_meanfield.MeanField(torch.from_numpy(img)[None], params, prune=False)
        t7 = time.perf_counter()
        mf.infer(torch.from_numpy(unary.T.copy()), params.iterations)
        t8 = time.perf_counter()
        for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t8 - t7)):
            t[k].append(v)
    print(f"# {args.image} {w}x{h}, preset {args.preset}, threads {args.threads}, load {os.getloadavg()[0]:.1f}")
    print(f"pixels {h * w}; lattice vertices: position {gauss.num_vertices}, bilateral {bilateral.num_vertices}")
    for k, v in t.items():
        print(f"{k}: median {statistics.median(v):.3f} s")


if __name__ == "__main__":
    main()
