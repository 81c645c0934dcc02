"""The benchmark times the step that trains: training_step_fn is the loop's train_step, and both
match an SGD update computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from deeplab_resnet.bench.suites import training_step_fn
from deeplab_resnet.training.config import TrainConfig
from deeplab_resnet.training.loop import step_options
from deeplab_resnet.training.recipe import build_optimizer, poly_lr, train_step


def batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 25, 25, generator=g) * 40
    y = torch.randint(0, 21, (2, 25, 25), generator=g)
    y[0, :6] = 255  # ignored
    return x, y


def nearest_targets(labels: torch.Tensor, size: tuple[int, int], num_classes: int) -> torch.Tensor:
    """TF nearest neighbour (``floor(dst · in/out)``) by index arithmetic; invalid labels → -100."""
    h, w = size
    H, W = labels.shape[1:]
    rows = np.minimum(np.arange(h) * H // h, H - 1)
    cols = np.minimum(np.arange(w) * W // w, W - 1)
    y = labels[:, rows][:, :, cols]
    return torch.where(y < num_classes, y, torch.full_like(y, -100))


def test_benchmark_step_equals_the_loops_step_and_a_hand_computed_update():
    cfg = TrainConfig()
    x, y = batch()
    bench, loop, ref = tiny_model(), tiny_model(), tiny_model()
    bench_loss = training_step_fn(bench, x, y)()

    optimizer = build_optimizer(loop, cfg)
    loop.train()
    lr = poly_lr(cfg.learning_rate, 0, cfg.num_steps, cfg.power)
    loop_loss = train_step(loop, optimizer, iter([(x, y)]), lr=lr, **step_options(cfg, loop, world=1)).loss
    assert bench_loss == loop_loss
    for (name, a), b in zip(bench.named_parameters(), loop.parameters()):
        assert torch.equal(a, b), name

    # By hand: mean CE over valid logit cells; first SGD step with momentum: w -= lr·mult·(g + wd·w).
    logits = ref.train()(x)
    target = nearest_targets(y, logits.shape[-2:], 21)
    loss = F.cross_entropy(logits, target, ignore_index=-100)
    assert loop_loss == pytest.approx(float(loss.detach()), rel=1e-6)
    loss.backward()
    cls_w = {id(p) for p in ref.classifier_parameters()[0]}
    cls_b = {id(p) for p in ref.classifier_parameters()[1]}
    for (name, p), after in zip(ref.named_parameters(), loop.parameters()):
        if not p.requires_grad:  # frozen batch norm
            assert torch.equal(p, after), name
            continue
        mult = 20.0 if id(p) in cls_b else 10.0 if id(p) in cls_w else 1.0
        decay = 0.0 if id(p) in cls_b else cfg.weight_decay  # conv weights only: the tiny model has no conv bias
        expected = p.detach() - cfg.learning_rate * mult * (p.grad + decay * p.detach())
        assert torch.allclose(after, expected, rtol=1e-5, atol=1e-8), name
        assert not torch.equal(after, p.detach()), name


def test_accumulated_image_resolution_step_matches_a_hand_computation():
    """The step with the loop's options for --grad-update-every 2 --loss-resolution image (what
    ``benchmarks/train_step.py`` can now time): one update with the mean of the micro-batches' losses."""
    cfg = TrainConfig(grad_update_every=2, loss_resolution="image")
    x, y = batch()
    a, b = tiny_model(), tiny_model()
    opts = step_options(cfg, a, world=1)
    assert opts["accumulate"] == 2 and opts["upsample"] is not None
    loss_a = train_step(
        a.train(), build_optimizer(a, cfg), iter([(x[:1], y[:1]), (x[1:], y[1:])]), lr=0.01, **opts
    ).loss
    # Independently: the mean of the two micro-batches' full-resolution mean losses, one update.
    opt_b = build_optimizer(b, cfg)
    for group in opt_b.param_groups:
        group["lr"] = 0.01 * group["lr_mult"]
    b.train()
    losses = []
    for i in range(2):
        up = b.upsample(b(x[i : i + 1]), (25, 25))
        losses.append(F.cross_entropy(up, torch.where(y[i : i + 1] < 21, y[i : i + 1], -100), ignore_index=-100))
    ((losses[0] + losses[1]) / 2).backward()
    opt_b.step()
    assert loss_a == pytest.approx(float((losses[0] + losses[1]).detach() / 2), rel=1e-6)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-7), name
