"""The network: sizes in both conventions, the parameter inventory, BN freezing, MSC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE, tiny_model

from deeplab_resnet.models import MSC, BatchNorm, create_model, logit_size, state_key_to_original
from deeplab_resnet.models.layers import MaxPool, same_pads

SIZES = [(1, 1), (7, 9), (8, 8), (16, 17), (33, 32), (41, 40), (64, 63), (65, 65), (100, 75), (121, 96)]


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_output_size_matches_original_arithmetic(convention):
    model = tiny_model(convention)
    for h, w in SIZES:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, h, w))
        assert tuple(out.shape[-2:]) == logit_size(h, w, convention), (h, w)
        if convention == "tf":
            assert tuple(out.shape[-2:]) == (math.ceil(h / 8), math.ceil(w / 8))


def test_known_sizes_from_the_original():
    # docs/original.md §1: TF output is exactly ceil(H/8); Caffe equals it for 8k+1 sizes.
    assert logit_size(500, 334, "tf") == (63, 42)
    assert logit_size(321, 321, "tf") == (41, 41)
    assert logit_size(513, 513, "tf") == (65, 65)
    assert logit_size(366, 500, "tf") == (46, 63)
    for n in (9, 321, 329, 513):
        assert logit_size(n, n, "caffe") == (math.ceil(n / 8),) * 2


def caffe_axis_by_hand(n: int) -> int:
    # conv1 7x7/2 pad 3 (floor), pool1 3x3/2 pad 1 (ceil, last window must start inside), 1x1/2.
    n = (n + 6 - 7) // 2 + 1
    p = -(-(n + 2 - 3) // 2) + 1
    if (p - 1) * 2 >= n + 1:
        p -= 1
    return (p - 1) // 2 + 1


def test_caffe_sizes_against_hand_formula():
    for n in range(1, 80):
        assert logit_size(n, n, "caffe")[0] == caffe_axis_by_hand(n)


def test_full_model_output_size_both_conventions():
    for convention in ("caffe", "tf"):
        model = create_model(convention=convention).eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 50, 41))
        assert tuple(out.shape) == (1, 21, *logit_size(50, 41, convention))


def test_tf_same_pads_as_documented():
    assert same_pads(9, 7, 2) == (3, 3)  # odd n
    assert same_pads(10, 7, 2) == (2, 3)  # even n: extra pixel at the end
    assert same_pads(9, 3, 2) == (1, 1)
    assert same_pads(10, 3, 2) == (0, 1)
    assert same_pads(10, 1, 2) == (0, 0)


def brute_maxpool(x: np.ndarray, pads: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
    top, _, left, _ = pads
    out = np.empty(out_hw)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            r0, c0 = i * 2 - top, j * 2 - left
            window = x[max(r0, 0) : r0 + 3, max(c0, 0) : c0 + 3]
            out[i, j] = window.max()
    return out


@pytest.mark.parametrize("h,w", [(6, 7), (9, 10), (5, 5), (12, 12)])
def test_pool1_against_brute_force(h, w):
    x = torch.randn(1, 1, h, w) - 5  # negative values: padded cells must never win
    tf = MaxPool("tf")(x)[0, 0].numpy()
    th, tw = math.ceil(h / 2), math.ceil(w / 2)
    expect_tf = brute_maxpool(x[0, 0].numpy(), (same_pads(h, 3, 2)[0], 0, same_pads(w, 3, 2)[0], 0), (th, tw))
    np.testing.assert_allclose(tf, expect_tf)
    caffe = MaxPool("caffe")(x)[0, 0].numpy()
    from deeplab_resnet.models.layers import caffe_pool_out

    expect_caffe = brute_maxpool(
        x[0, 0].numpy(), (1, 0, 1, 0), (caffe_pool_out(h, 3, 2, 1), caffe_pool_out(w, 3, 2, 1))
    )
    np.testing.assert_allclose(caffe, expect_caffe)


def test_tf_conv1_pads_asymmetrically():
    model = tiny_model("tf")
    conv = model.backbone.conv1
    x = torch.randn(1, 3, 10, 11)
    expected = F.conv2d(F.pad(x, (3, 3, 2, 3)), conv.weight, stride=2)  # H even: (2,3); W odd: (3,3)
    torch.testing.assert_close(conv(x), expected)


def test_inventory_matches_original_tf_variables():
    model = create_model(num_classes=21)
    state = model.state_dict()
    assert len(state) == 528
    assert sum(v.numel() for v in state.values()) == 44_153_876
    reference = {}
    for line in (REFERENCE / "original_tf_variables.txt").read_text().splitlines():
        name, shape = line.split()
        reference[name] = tuple(int(s) for s in shape.strip("[]").split(","))
    ours = {}
    for key, value in state.items():
        shape = tuple(value.shape)
        if len(shape) == 4:  # OIHW here, HWIO in TF
            shape = (shape[2], shape[3], shape[1], shape[0])
        ours[state_key_to_original(key)] = shape
    assert ours == reference


def test_bn_epsilon_per_convention():
    eps = {
        c: {m.eps for m in create_model("deeplab_v2_resnet_tiny", convention=c).modules() if isinstance(m, BatchNorm)}
        for c in ("caffe", "tf")
    }
    assert eps == {"caffe": {1e-5}, "tf": {1e-3}}


def train_one_step(model, x):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = model(x).square().mean()
    loss.backward()
    opt.step()


def test_frozen_bn_stays_frozen_through_a_training_step():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items() if "bn" in k}
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".bn" in n)
    train_one_step(model, torch.randn(2, 3, 33, 33))
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    # ...while the convs did learn
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "branch2a" in n)


def test_unfrozen_bn_updates_statistics_and_affine():
    model = tiny_model(frozen_bn=False)
    before = model.backbone.bn_conv1.running_mean.clone()
    gamma = model.backbone.bn_conv1.weight.clone()
    train_one_step(model, torch.randn(2, 3, 33, 33))
    assert not torch.equal(before, model.backbone.bn_conv1.running_mean)
    assert not torch.equal(gamma, model.backbone.bn_conv1.weight)


def test_frozen_bn_equals_eval_mode_in_train_mode():
    model = tiny_model()
    x = torch.randn(1, 3, 25, 25)
    with torch.no_grad():
        a = model.eval()(x)
        b = model.train()(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_msc_returns_all_scales_in_training_and_fuses_by_max(convention):
    from deeplab_resnet.resize import resize_bilinear, scaled_size

    model = tiny_model(convention)
    msc = MSC(model)
    x = torch.randn(1, 3, 41, 49)
    with torch.no_grad():
        outs = msc.train()(x)
        fused = msc.eval()(x)
    assert len(outs) == 4
    grid = logit_size(41, 49, convention)
    assert tuple(outs[0].shape[-2:]) == grid
    for scale, out in zip((0.75, 0.5), outs[1:3]):
        h, w = scaled_size(41, 49, scale, convention)
        assert tuple(out.shape[-2:]) == logit_size(h, w, convention)
    manual = torch.maximum(
        outs[0], torch.maximum(resize_bilinear(outs[1], grid, convention), resize_bilinear(outs[2], grid, convention))
    )
    torch.testing.assert_close(fused, manual)
    torch.testing.assert_close(outs[3], manual)


def test_creation_is_deterministic_with_a_seed():
    torch.manual_seed(7)
    a = create_model("deeplab_v2_resnet_tiny").state_dict()
    torch.manual_seed(7)
    b = create_model("deeplab_v2_resnet_tiny").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = tiny_model()
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
