"""Multi-scale inputs against independent emulations of the originals' graphs
(``evaluate_msc.py`` and the authors' MSC prototxt; tests/original_emulation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model
from original_emulation import AUTHORS_BRANCHES, bgr_input, caffe_interp, evaluate_msc_tf, interp_out, rel_l2

from deeplab_resnet.inference.segmenter import Segmenter
from deeplab_resnet.models import MSC
from deeplab_resnet.models.msc import DEFAULT_SCALES


def numpy_net(model):
    """The package's single-scale network on a numpy batch: the one piece the emulations reuse."""

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    return run


def photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth image with edges (upsampled coarse noise), like a photo more than noise is."""
    from PIL import Image

    coarse = np.random.default_rng(seed).integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


TF_CASES = {
    "500x334 photo": lambda: photo_like(334, 500, 1),
    "321 crop": lambda: photo_like(321, 321, 2),
    "321 noise": lambda: noise(321, 321, 3),
    "odd 77x93": lambda: noise(77, 93, 4),
}


@pytest.mark.parametrize("case", TF_CASES)
def test_tf_msc_equals_evaluate_msc_py(case):
    """Fused stride-8 logits and the upsampled ones, to rel-L2 <= 1e-6 (the resizes are the same
    float32 operations, so in practice equal)."""
    model = tiny_model("tf")
    rgb = TF_CASES[case]()
    x = bgr_input(rgb, model.mean_bgr)
    ref_fused, ref_up = evaluate_msc_tf(numpy_net(model), x)
    with torch.no_grad():
        fused = MSC(model, DEFAULT_SCALES).eval()(torch.from_numpy(x)).numpy()
    assert fused.shape == ref_fused.shape
    assert rel_l2(fused, ref_fused) <= 1e-6
    _, up = Segmenter(model, scales=DEFAULT_SCALES).predict(rgb, full=True)
    assert rel_l2(up.numpy(), ref_up[0]) <= 1e-6


@pytest.mark.parametrize("size", [(513, 513), (321, 321), (545, 609)])
def test_caffe_msc_equals_the_authors_graph_where_it_runs(size):
    """At sizes where the prototxt's fixed Interp factors bring every branch back onto the 1x grid
    (513, 321, 32k+1), the package's MSC is that graph: shrink-then-zoom branches, the logits
    zoomed back, Eltwise MAX."""
    model = tiny_model("caffe")
    x = bgr_input(noise(*size, seed=size[1]), model.mean_bgr)
    net = numpy_net(model)
    raw = net(x)
    outs = [raw]
    for (zoom, shrink), (zoom_back, shrink_back) in AUTHORS_BRANCHES.values():
        branch = net(caffe_interp(x, *[interp_out(n, zoom, shrink) for n in size]))
        back = [interp_out(n, zoom_back, shrink_back) for n in branch.shape[-2:]]
        assert tuple(back) == raw.shape[-2:]
        outs.append(caffe_interp(branch, *back))
    ref = np.max(np.stack(outs), axis=0)
    with torch.no_grad():
        ours = MSC(model, DEFAULT_SCALES).eval()(torch.from_numpy(x)).numpy()
    assert rel_l2(ours, ref) <= 1e-6


def test_msc_refuses_a_branch_below_the_minimum_input():
    model = tiny_model("tf")
    with pytest.raises(ValueError, match="scale 0.01 of a 41x49 input gives a 0x0 branch"):
        MSC(model, (1.0, 0.01)).eval()(torch.zeros(1, 3, 41, 49))


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_the_network_takes_any_input_from_one_pixel(convention):
    """MIN_INPUT_SIZE is what the network accepts: 1x1 (and every size above) runs in both conventions."""
    from deeplab_resnet.models.msc import MIN_INPUT_SIZE

    model = tiny_model(convention)
    with torch.no_grad():
        for h, w in [(MIN_INPUT_SIZE, MIN_INPUT_SIZE), (1, 9), (2, 3), (5, 1)]:
            out = model(torch.randn(1, 3, h, w))
            assert tuple(out.shape[-2:]) == model.logit_size(h, w) and min(out.shape[-2:]) >= 1
