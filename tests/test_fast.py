"""Fast inference paths: BN folding exactness and each path's agreement with the eager model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.inference.agreement import agreement, meets_target
from deeplab_resnet.inference.fold import fold_batchnorm, fold_conv_bn
from deeplab_resnet.inference.optimize import FastInference, InferenceOptions, default_options, parse_options
from deeplab_resnet.models import BatchNorm
from deeplab_resnet.models.layers import Conv


def test_fold_conv_bn_equals_conv_then_batch_norm_in_float64():
    torch.manual_seed(0)
    conv = Conv(5, 7, 3, dilation=2, convention="caffe")
    bn = BatchNorm(7, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.normal_(0, 2)
        bn.running_var.uniform_(0.1, 3)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    x = torch.randn(2, 5, 11, 9, dtype=torch.float64)
    w = conv.weight.double()
    # The independent computation: conv, then the BN formula written out, all in float64.
    y = F.conv2d(x, w, padding=2, dilation=2)
    mean, var = bn.running_mean.double().view(1, -1, 1, 1), bn.running_var.double().view(1, -1, 1, 1)
    expected = bn.weight.double().view(1, -1, 1, 1) * (y - mean) / torch.sqrt(var + 1e-3) + bn.bias.double().view(
        1, -1, 1, 1
    )
    fold_conv_bn(conv, bn)
    got = F.conv2d(x, conv.weight.double(), conv.bias.double(), padding=2, dilation=2)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_fold_batchnorm_on_the_model_is_exact_up_to_rounding(convention):
    model = tiny_model(convention)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, BatchNorm) for m in folded.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # original untouched
    x = torch.randn(2, 3, 41, 36) * 50
    with torch.no_grad():
        ref64 = model.double()(x.double())
        out = folded(x)
    stats = agreement(ref64, out)
    assert stats["rel_l2"] < 2e-6
    assert stats["argmax_agreement"] == 1.0


@pytest.mark.parametrize("spec", ["fold", "cl", "fold+cl", "bf16", "fp16", "fold+cl+bf16"])
def test_each_fast_path_agrees_with_eager_float32(spec):
    model = tiny_model("tf")
    x = torch.randn(2, 3, 47, 38) * 50
    with torch.no_grad():
        ref = model(x)
    options = parse_options(spec)
    out = FastInference(model, options).logits(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    stats = agreement(ref, out)
    if options.dtype == "float32":
        assert stats["rel_l2"] < 1e-5 and stats["argmax_agreement"] == 1.0
    else:  # bf16 keeps ~3 significant digits, fp16 ~4
        assert 1e-5 < stats["rel_l2"] < 5e-2
        assert stats["argmax_agreement"] > 0.9


def test_agreement_hand_computed():
    ref = torch.zeros(1, 2, 1, 2)
    ref[0, :, 0, 0] = torch.tensor([3.0, 0.0])  # argmax 0
    ref[0, :, 0, 1] = torch.tensor([0.0, 4.0])  # argmax 1
    out = ref.clone()
    out[0, 0, 0, 1] = 5.0  # now argmax 0 at the second pixel
    stats = agreement(ref, out)
    assert stats["rel_l2"] == pytest.approx(5.0 / 5.0)  # |diff| = 5, |ref| = 5
    assert stats["argmax_agreement"] == 0.5
    assert stats["max_abs"] == 5.0
    assert meets_target({"rel_l2": 5e-5, "argmax_agreement": 0.0}, "float32")
    assert not meets_target({"rel_l2": 0.0, "argmax_agreement": 0.99}, "bfloat16")
    with pytest.raises(DeepLabError):
        agreement(ref, out[..., :1])


def test_parse_options_and_defaults():
    o = parse_options("fold+cl+bf16+compile")
    assert (o.fold_bn, o.channels_last, o.dtype, o.compile, o.cuda_graphs) == (True, True, "bfloat16", True, False)
    assert o.describe() == "fold+cl+compile+bf16"
    assert parse_options("eager") == InferenceOptions()
    assert parse_options("default", "cpu") == default_options("cpu")
    assert default_options("cuda").dtype == "bfloat16" and default_options("cpu").dtype == "float32"
    with pytest.raises(DeepLabError, match="unknown fast-path option"):
        parse_options("fold+turbo")


def test_cuda_only_options_are_refused_on_cpu():
    with pytest.raises(DeepLabError, match="CUDA"):
        FastInference(tiny_model(), InferenceOptions(cuda_graphs=True), "cpu")


@pytest.mark.slow
def test_compiled_path_agrees_and_uses_the_cache_dir(tmp_path):
    model = tiny_model("tf")
    x = torch.randn(1, 3, 33, 40) * 50
    with torch.no_grad():
        ref = model(x)
    fast = FastInference(model, InferenceOptions(fold_bn=True, compile=True, compile_cache_dir=str(tmp_path)))
    assert agreement(ref, fast.logits(x))["rel_l2"] < 1e-5
