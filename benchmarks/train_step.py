"""Time training steps of DeepLab-v2 ResNet-101 with the original recipe's settings.

One step is ``deeplab train``'s own step (``training.recipe.train_step``): forward at the crop
size, the loss (stride-8 logits, or ``--loss-resolution image``), backward, SGD update with the
recipe's parameter groups (frozen BN, as the original trains from its init); with
``--grad-update-every K``, K micro-batches per update and ``--batch`` is the micro-batch; with
``--msc``, the multi-scale wrapper and its four losses. Random inputs and weights (the speed does
not depend on them). Prints the median step time and samples/s. Single process: DDP's gradient
all-reduce is not timed.

    PYTHONPATH=src python benchmarks/train_step.py --batch 2 --steps 3
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time

import torch


def main() -> None:
    from deeplab_resnet.devices import resolve_device
    from deeplab_resnet.models import create_model
    from deeplab_resnet.models.msc import MSC
    from deeplab_resnet.training.config import TrainConfig
    from deeplab_resnet.training.recipe import build_optimizer, train_step

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=10, help="batch size (the original: 10)")
    p.add_argument("--size", type=int, default=321)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--model", default="deeplab_v2_resnet101")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--grad-update-every", type=int, default=1, help="micro-batches per update")
    p.add_argument("--loss-resolution", choices=("logits", "image"), default="logits")
    p.add_argument("--msc", action="store_true", help="multi-scale training (scales 1, 0.75, 0.5)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=21).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    cfg = TrainConfig()
    net = (MSC(model, cfg.msc_scales) if args.msc else model).train()
    opt = build_optimizer(model, cfg)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device) * 50
    y = torch.randint(0, 21, (args.batch, args.size, args.size), device=device)
    batches = itertools.repeat((x, y))
    options = dict(
        num_classes=21, ignore_label=255, accumulate=args.grad_update_every,
        upsample=model.upsample if args.loss_resolution == "image" else None,
        amp_dtype=torch.bfloat16 if args.amp else None, channels_last=args.channels_last,
    )  # fmt: skip

    def step() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(net, opt, batches, lr=cfg.learning_rate, **options)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step()  # warm-up
    times = [step() for _ in range(args.steps)]
    med = statistics.median(times)
    samples = args.batch * args.grad_update_every
    print(f"{args.model} train step, batch {args.batch} x {args.grad_update_every} at {args.size}x{args.size}, "
          f"device {device}, threads {args.threads}, amp {args.amp}, channels_last {args.channels_last}, "
          f"loss {args.loss_resolution}, msc {args.msc} ({platform.processor() or platform.machine()})")  # fmt: skip
    print(f"step times: {', '.join(f'{t:.2f}' for t in times)} s; median {med:.2f} s; {samples / med:.3f} samples/s")


if __name__ == "__main__":
    main()
