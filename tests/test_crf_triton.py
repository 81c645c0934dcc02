"""The Triton dense CRF (``crf/triton_lattice.py``) on the CPU, under Triton's interpreter.

Each stage (splat, blur, slice) is checked against the torch-ops lattice of the same points
(``crf/permutohedral.py``, a different code path: ``embedding_bag`` over CSR bags), the run
splitting against a dense matrix built here, and the whole mean field against the C kernel, the
torch-ops kernel and ``pydensecrf`` on real VOC regions. Both kernels are also compiled for an
H100 (sm_90) without a GPU, which catches what the interpreter does not (types, layouts).

``TRITON_INTERPRET=1`` is set per test (``triton.jit`` reads it when the kernels are made), so
nothing else in the session runs interpreted. ``triton`` (extra ``[gpu-crf]``) is in the ``[test]``
extra on Linux (its only platform with wheels: a 286 MB download, ~1 GB installed, ~30 s to
install): without it these tests skip, except in CI on Linux, where they fail.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_crf_builtin import NAMES, _pair, blurred_probs, pydensecrf_reference

from deeplab_resnet.crf import PRESETS, builtin, c_meanfield, permutohedral, torch_meanfield, triton_lattice
from deeplab_resnet.crf.meanfield_rules import labels_worth_filtering
from deeplab_resnet.errors import DeepLabError


def _triton_missing() -> bool:
    if triton_lattice.available():
        return False
    if os.environ.get("CI") == "true" and sys.platform.startswith("linux"):
        pytest.fail("triton (in the [test] extra on Linux) is missing in CI")
    return True


needs_triton = pytest.mark.skipif(_triton_missing(), reason="triton not installed (extra [gpu-crf])")


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.set_num_threads(1)


def _lattice(points: int = 300, dim: int = 3, seed: int = 0) -> permutohedral.Lattice:
    g = torch.Generator().manual_seed(seed)
    return permutohedral.build_lattice(torch.rand(points, dim, generator=g) * torch.linspace(1.0, 6.0, dim))


def _small_image_lattice() -> permutohedral.Lattice:
    rgb = torch.from_numpy(
        np.asarray([[[40 * (x // 5), 200 - 30 * (y // 4), 90] for x in range(20)] for y in range(16)])
    )
    feats = permutohedral.image_features(16, 20, 3.0, rgb.to(torch.uint8)[None], 20.0)
    return permutohedral.build_lattice(feats)


@needs_triton
@pytest.mark.parametrize("make", [_lattice, _small_image_lattice])
def test_splat_blur_slice_match_torch_ops(interpret, make):
    lattice = make()
    ours, ref = triton_lattice.from_lattice(lattice), lattice.operator()
    x = torch.rand(lattice.num_points, 5, generator=torch.Generator().manual_seed(1))
    splat = ours.splat_values(x)
    torch.testing.assert_close(splat, ref.splat_values(x), rtol=1e-6, atol=1e-5)
    blurred = ours.blur_values(splat)
    torch.testing.assert_close(blurred, ref.blur_values(splat), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ours.slice(blurred), ref(x), rtol=1e-6, atol=1e-5)
    assert ours.slice.width == lattice.dim + 1 and len(ours.blur) == lattice.dim + 1


@needs_triton
def test_long_runs_are_summed_in_levels(interpret, monkeypatch):
    # width 2 sends every run of more than 2 entries through segment sums in the workspace
    monkeypatch.setattr(triton_lattice, "SPLAT_WIDTH", 2)
    lattice = _small_image_lattice()
    ours = triton_lattice.from_lattice(lattice)
    assert len(ours.splat.partial) >= 2 and ours.splat.final.width == 2
    x = torch.rand(lattice.num_points, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ours.splat_values(x), lattice.operator().splat_values(x), rtol=1e-6, atol=1e-5)


@needs_triton
def test_splat_of_runs_against_a_dense_matrix(interpret):
    g = torch.Generator().manual_seed(3)
    counts = torch.tensor([1, 7, 3, 12, 2, 5, 40])
    src = torch.randint(0, 9, (int(counts.sum()),), generator=g)
    weight = torch.rand(src.numel(), generator=g)
    dense = torch.zeros(len(counts), 9, dtype=torch.float64)
    row = torch.repeat_interleave(torch.arange(len(counts)), counts)
    for r, s, w in zip(row.tolist(), src.tolist(), weight.tolist()):
        dense[r, s] += w
    splat = triton_lattice.splat_from_runs(src, weight, counts, inputs=9, width=4)
    # runs of 7, 12, 5, 40 -> 2, 3, 2, 10 segments; the 10 -> 3 more; runs of <= 4 read the input directly
    assert [level.rows for level, _ in splat.partial] == [2 + 3 + 2 + 10, 3] and splat.final.rows == len(counts)
    x = torch.rand(9, 4, generator=g)
    workspace = torch.full((splat.workspace_rows, 4), float("nan"))
    workspace[:9] = x
    torch.testing.assert_close(splat.run(workspace), (dense @ x.double()).float(), rtol=1e-6, atol=1e-6)
    factor = torch.rand(9, generator=g)  # scaled: every input row times its factor
    torch.testing.assert_close(
        splat.scaled(factor).run(workspace), (dense @ (factor[:, None] * x).double()).float(), rtol=1e-6, atol=1e-6
    )


def _three_iterations(preset: str = "deeplab-resnet"):
    return dataclasses.replace(PRESETS[preset], iterations=3)


@needs_triton
def test_mean_field_matches_c_and_torch_kernels(voc_fixture, interpret):
    img, lab = _pair(voc_fixture, NAMES[0], (30, 40))
    probs = blurred_probs(lab, classes=8, sigma=3.0)
    params = _three_iterations()
    ours = builtin.refine(img, probs, params, device="cpu", kernel="triton")
    c = c_meanfield.refine(img, probs, params)
    assert (ours.argmax(0) == c.argmax(0)).mean() >= 0.995
    assert np.abs(ours - c).max() < 1e-4  # the same operators; float summation order only
    torch_ops = torch_meanfield.refine_batch(torch.from_numpy(img)[None], torch.from_numpy(probs)[None], params)
    assert np.abs(ours - torch_ops[0].numpy()).max() < 1e-5
    assert (c.argmax(0) != probs.argmax(0)).any()  # the CRF changed labels: agreement is not trivial


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_mean_field_matches_pydensecrf(voc_fixture, interpret, preset):
    params = PRESETS[preset]
    img, lab = _pair(voc_fixture, NAMES[1], (60, 90))
    probs = blurred_probs(lab)
    ref = pydensecrf_reference(img, probs, params)
    ours = builtin.refine(img, probs, params, device="cpu", kernel="triton")
    assert (ours.argmax(0) == ref.argmax(0)).mean() >= 0.995
    assert np.abs(ours - ref).max() < 1e-3


@needs_triton
@pytest.mark.slow  # the default suite checks against the C and torch kernels, which match pydensecrf
def test_mean_field_matches_pydensecrf_small(voc_fixture, interpret):
    params = _three_iterations()
    img, lab = _pair(voc_fixture, NAMES[1], (30, 40))
    probs = blurred_probs(lab, sigma=3.0)
    ref = pydensecrf_reference(img, probs, params)
    ours = builtin.refine(img, probs, params, device="cpu", kernel="triton")
    assert (ours.argmax(0) == ref.argmax(0)).mean() >= 0.995
    assert np.abs(ours - ref).max() < 1e-3


@needs_triton
def test_batch_of_different_sizes_equals_one_at_a_time(voc_fixture, interpret):
    params = dataclasses.replace(PRESETS["tf-branch"], iterations=2)
    sizes = [(18, 30), (24, 16)]
    images, probs = [], []
    for i, size in enumerate(sizes):
        img, lab = _pair(voc_fixture, NAMES[i % 2], size)
        images.append(torch.from_numpy(img))
        probs.append(torch.from_numpy(blurred_probs(lab, classes=6, sigma=3.0, seed=i)))
    batch = triton_lattice.refine_list(images, probs, params, prune=False)
    for image, p, out in zip(images, probs, batch):
        (one,) = triton_lattice.refine_list([image], [p], params, prune=False)
        assert out.shape == p.shape
        torch.testing.assert_close(out, one, rtol=0, atol=1e-6)


@needs_triton
def test_pruned_labels_as_torch_kernel(voc_fixture, interpret):
    # 3 labels present, the other 18 at the clip floor: both kernels prune them the same way
    img, lab = _pair(voc_fixture, NAMES[0], (24, 30))
    probs = blurred_probs(lab, sigma=2.0)
    probs[3:] = 0.0
    probs[:3] += 1e-3
    probs /= probs.sum(axis=0)
    params = _three_iterations()
    images, p = torch.from_numpy(img)[None], torch.from_numpy(probs)[None]
    kernels = (triton_lattice._gaussian(((24, 30),), 1.0, 3.0, "cpu"), triton_lattice._bilateral(list(images), params))
    q0_max = torch.from_numpy(probs).clamp(1e-5, 1).amax(dim=(1, 2)).numpy()
    assert labels_worth_filtering(q0_max, kernels[0].gain + kernels[1].gain).tolist() == [0, 1, 2]
    pruned = builtin.refine_batch(images, p, params, kernel="triton")
    torch.testing.assert_close(pruned, torch_meanfield.refine_batch(images, p, params), rtol=1e-5, atol=1e-6)


@needs_triton
def test_zero_iterations_is_the_clipped_input(voc_fixture, interpret):
    img, lab = _pair(voc_fixture, NAMES[0], (10, 12))
    probs = blurred_probs(lab)
    out = builtin.refine(
        img, probs, dataclasses.replace(PRESETS["deeplab-resnet"], iterations=0), "cpu", kernel="triton"
    )
    clipped = np.clip(probs, 1e-5, 1.0)
    np.testing.assert_allclose(out, clipped / clipped.sum(axis=0), atol=1e-6)


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from deeplab_resnet.crf import triton_lattice

ell_gather, step = triton_lattice._kernels(False)
blocks = {"BLOCK_R": 64, "BLOCK_C": 32}
signature = {"x": "*fp32", "index": "*i32", "weight": "*fp32", "out": "*fp32", "rows": "i32", "cols": "i32"}
ell = ASTSource(ell_gather, {**signature, "K": "constexpr", **dict.fromkeys(blocks, "constexpr")}, {"K": 8, **blocks})
flags = {"HAS_MESSAGE": True, "WRITE_ALL": False, "KA": 3, "KB": 6, **blocks}
signature = dict.fromkeys(["neg_unary", "q", "q_active"], "*fp32")
signature["slot_of"] = "*i32"
for side in "ab":
    signature.update({f"idx_{side}": "*i32", f"w_{side}": "*fp32", f"blur_{side}": "*fp32"})
signature.update(dict.fromkeys(["rows", "labels", "active"], "i32"), **dict.fromkeys(flags, "constexpr"))
for source in (ell, ASTSource(step, signature, flags)):
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    print(".target sm_90" in compiled.asm["ptx"], len(compiled.asm["cubin"]) > 0)
"""


@needs_triton
def test_kernels_compile_for_h100():
    """The real compiler (not the interpreter), for sm_90: no GPU is needed to build the binary. In a
    fresh process: the interpreter leaves Triton's language patched for the rest of its process."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out = subprocess.run([sys.executable, "-c", COMPILE_FOR_H100], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True", "True", "True"]


def test_kernel_choice_and_errors(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cuda = torch.device("cuda")
    expected = "triton" if triton_lattice.available() else "torch"
    assert builtin.resolve_kernel("auto", cuda) == expected
    assert builtin.resolve_kernel("auto", torch.device("cpu")) in ("c", "torch")
    with pytest.raises(DeepLabError, match="TRITON_INTERPRET"):
        if not triton_lattice.available():
            pytest.skip("triton not installed")
        builtin.resolve_kernel("triton", torch.device("cpu"))


def test_package_imports_and_chooses_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from deeplab_resnet.crf import builtin, triton_lattice, dense_crf\n"
        "from deeplab_resnet.errors import DeepLabError\n"
        "assert not triton_lattice.available()\n"
        "assert builtin.resolve_kernel('auto', torch.device('cuda')) == 'torch'\n"
        "try:\n    builtin.resolve_kernel('triton', torch.device('cuda'))\n"
        "except DeepLabError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "deeplab_resnet[gpu-crf]" in out.stdout
