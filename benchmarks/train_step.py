"""Time training steps of DeepLab-v2 ResNet-101 with the original recipe's settings.

One step = forward at the crop size, the loss on stride-8 logits, backward, SGD update with the
recipe's parameter groups (frozen BN, as the original trains from its init). Random inputs and
weights (the speed does not depend on them). Prints the median step time and samples/s.

    PYTHONPATH=src python benchmarks/train_step.py --batch 2 --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch


def main() -> None:
    from deeplab_resnet.models import create_model
    from deeplab_resnet.training.loop import TrainConfig, build_optimizer, seg_loss

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=10, help="batch size (the original: 10)")
    p.add_argument("--size", type=int, default=321)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--model", default="deeplab_v2_resnet101")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=21).to(args.device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    cfg = TrainConfig()
    opt = build_optimizer(model, cfg)
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device) * 50
    y = torch.randint(0, 21, (args.batch, args.size, args.size), device=args.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16) if args.amp else contextlib.nullcontext()

    def step() -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with amp:
            out = model(x)
        seg_loss([out], y, 21, 255)[0].backward()
        opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step()  # warm-up
    times = [step() for _ in range(args.steps)]
    med = statistics.median(times)
    print(f"{args.model} train step, batch {args.batch} at {args.size}x{args.size}, device {args.device}, "
          f"threads {args.threads}, amp {args.amp}, channels_last {args.channels_last} ({platform.processor() or platform.machine()})")  # fmt: skip
    print(f"step times: {', '.join(f'{t:.2f}' for t in times)} s; median {med:.2f} s; {args.batch / med:.3f} samples/s")


if __name__ == "__main__":
    main()
