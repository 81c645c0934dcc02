"""Training data pipeline throughput: samples/s per CPU core, with the original's augmentation.

Each sample: read the JPEG and the label PNG, random scale U(0.5, 1.5), mirror, pad, random
crop 321x321, BGR minus mean. Measured in one process with one thread (= one core), then
through a DataLoader with --workers processes.

    PYTHONPATH=src python benchmarks/train_data.py --samples 60 --workers 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
VOC = REPO.parent / "shared" / "data" / "voc_fixture"


def main() -> None:
    from deeplab_resnet.data.lists import read_list
    from deeplab_resnet.data.stream import TrainStream
    from deeplab_resnet.data.transforms import TrainTransform
    from deeplab_resnet.dataset_info import IMG_MEAN_BGR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--crop", type=int, default=321)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    pairs = read_list(VOC, VOC / "list_all.txt")
    t = TrainTransform((args.crop, args.crop), IMG_MEAN_BGR, 255, random_scale=True, random_mirror=True)
    stream = TrainStream(pairs, t, seed=1234)
    stream[0]  # warm-up
    rates = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(args.samples):
            stream[r * args.samples + i]
        rates.append(args.samples / (time.perf_counter() - t0))
    print(f"one process, one thread: median {statistics.median(rates):.1f} samples/s per core "
          f"(runs: {', '.join(f'{x:.1f}' for x in rates)}); crop {args.crop}, {len(pairs)} VOC images")  # fmt: skip
    if args.workers > 0:
        batch = 10
        sampler = [list(range(i, i + batch)) for i in range(0, args.samples * args.repeats, batch)]
        loader = torch.utils.data.DataLoader(stream, batch_sampler=sampler, num_workers=args.workers)
        it = iter(loader)
        next(it)  # workers started
        t0 = time.perf_counter()
        n = sum(x.shape[0] for x, _ in it)
        rate = n / (time.perf_counter() - t0)
        print(f"DataLoader, {args.workers} workers: {rate:.1f} samples/s ({rate / args.workers:.1f} per worker)")


if __name__ == "__main__":
    main()
