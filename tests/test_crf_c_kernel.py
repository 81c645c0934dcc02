"""The C dense-CRF kernel (``crf/dense_crf.c`` through ``crf/kernel_c.py`` and ``crf/c_meanfield.py``)
against independent code.

- Its lattice is the torch lattice (``crf/permutohedral.py``, itself checked against a dict-based
  splat/blur/slice and a brute-force Gaussian in ``test_permutohedral.py``) vertex for vertex:
  the same vertex ids, neighbours and weights, through the packed-key paths (a table indexed by
  the key for small key spaces, d <= 3 here; hash tables for d = 5) and the generic path, with
  and without several images in one lattice; its filter equals the dict-based reference.
- Its mean-field equals the torch-ops mean-field (and pydensecrf: ``test_crf_builtin.py`` runs the
  agreement tests for both kernels); it does not depend on the number of threads (bit for bit);
  pruning labels changes nothing that matters.
- Compilation: the library is cached and reused; without a compiler ``auto`` falls back to torch
  ops with a warning, and asking for the C kernel is a clear error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_crf_builtin import NAMES, _pair, blurred_probs
from test_permutohedral import _reference_filter

from deeplab_resnet.crf import PRESETS, builtin, c_meanfield, dense_crf, kernel_c, resolve_backend
from deeplab_resnet.crf import permutohedral as P
from deeplab_resnet.crf.meanfield_rules import gain_lower_bound
from deeplab_resnet.errors import DeepLabError


@pytest.fixture(scope="module", autouse=True)
def compiled():
    if not kernel_c.available():
        pytest.fail("the C kernel did not compile (gcc is on every machine this project runs on)")


def _random_features(d: int, n: int = 800, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2.5, size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("images", [1, 3])
@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_lattice_is_the_torch_lattice(d, images, packed):
    f = _random_features(d, 900, seed=d)
    index = np.repeat(np.arange(images), 300).astype(np.int32) if images > 1 else None
    ref = P.build_lattice(torch.from_numpy(f), None if index is None else torch.from_numpy(index).long())
    lat = kernel_c.CLattice(f, index, threads=2, packed=packed)
    vertex, weight, neighbours = lat.export()
    assert lat.num_vertices == ref.num_vertices
    np.testing.assert_array_equal(vertex, ref.vertex.numpy())
    np.testing.assert_array_equal(neighbours, ref.neighbours.numpy())
    np.testing.assert_allclose(weight, ref.weight.numpy(), atol=2e-6)
    np.testing.assert_allclose(weight.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("d", [2, 5, 9])
def test_simplex_of_eight_points_at_once_equals_one_at_a_time(d):
    """Points are put in their simplices 8 at a time (vector lanes), the last n % 8 one at a time:
    shifting the points by 3 moves every point to another lane, and the tail onto lanes, so equal
    weights and vertices bit for bit mean both paths compute the same floats. Features on a grid of
    halves and quarters make rounding ties and equal coordinates (rank ties) common."""
    rng = np.random.default_rng(d)
    f = np.concatenate([_random_features(d, 500, seed=d), rng.integers(-40, 40, (300, d)) / 4.0]).astype(np.float32)
    f = np.concatenate([f, f[:3] * 0.5]).astype(np.float32)  # 803 points: 3 in the scalar tail
    a_vertex, a_weight, _ = kernel_c.CLattice(f).export()
    b = kernel_c.CLattice(np.concatenate([f[-3:], f]))
    b_vertex, b_weight, _ = b.export()
    np.testing.assert_array_equal(b_weight[3:], a_weight)
    # the same simplices: vertex ids differ only by numbering, so compare corner-by-corner identity
    first = {}
    for va, vb in zip(a_vertex.reshape(-1), b_vertex[3:].reshape(-1)):
        assert first.setdefault(int(va), int(vb)) == int(vb)
    assert len(set(first.values())) == len(first)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_filter_equals_dict_based_reference(d):
    rng = np.random.default_rng(d)
    f = rng.normal(0, 1.5, size=(60, d)).astype(np.float32)
    v = rng.random((60, 11))  # 11 columns: one full row of 8 and a padded one
    expected = _reference_filter(torch.from_numpy(f), v)
    got = kernel_c.CLattice(f).filter(v.astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d", [2, 5])
def test_one_column_filter_is_the_general_filter(d):
    """One column (the normalisation) has its own plain-float path: the same numbers, bit for bit,
    as that column filtered among others, and the dict-based reference's."""
    f = _random_features(d, 700, seed=10 + d)
    v = np.random.default_rng(d).random((700, 9)).astype(np.float32)
    lat = kernel_c.CLattice(f, threads=2)
    wide = lat.filter(v)
    for c in (0, 4, 8):
        np.testing.assert_array_equal(lat.filter(v[:, c].copy()), wide[:, c])
    np.testing.assert_allclose(lat.filter(v[:, 0].copy()), _reference_filter(torch.from_numpy(f), v)[:, 0], rtol=1e-5)


def test_filter_on_a_real_image_equals_torch(voc_fixture):
    img, _ = _pair(voc_fixture, NAMES[0])
    h, w, _ = img.shape
    f = P.image_features(h, w, 30.0, torch.from_numpy(img)[None], 5.0)
    v = np.random.default_rng(0).random((h * w, 21)).astype(np.float32)
    expected = P.build_lattice(f).filter(torch.from_numpy(v)).numpy()
    got = kernel_c.CLattice(f.numpy()).filter(v)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_mean_field_equals_torch_ops(voc_fixture, preset):
    params = PRESETS[preset]
    for name in NAMES:
        img, lab = _pair(voc_fixture, name)
        probs = blurred_probs(lab)
        ours = builtin.refine(img, probs, params, device="cpu", kernel="c")
        ref = builtin.refine(img, probs, params, device="cpu", kernel="torch")
        assert ours.shape == ref.shape and ours.dtype == np.float32
        assert np.abs(ours - ref).max() < 1e-4
        assert (ours.argmax(0) == ref.argmax(0)).mean() >= 0.9999
        np.testing.assert_allclose(ours.sum(axis=0), 1.0, atol=1e-5)


def test_result_does_not_depend_on_thread_count(voc_fixture):
    img, lab = _pair(voc_fixture, NAMES[1])
    h, w, _ = img.shape
    params = PRESETS["deeplab-resnet"]
    f = P.image_features(h, w, params.bi_xy, torch.from_numpy(img)[None], params.bi_rgb).numpy()
    probs = blurred_probs(lab).reshape(21, -1)
    runs = []
    for threads in (1, 2, 3):
        lat = kernel_c.CLattice(f, threads=threads)
        norm = 1 / np.sqrt(lat.filter(np.ones(h * w, np.float32), threads) + 1e-20)
        runs.append(kernel_c.mean_field([lat], [norm], [4.0], probs, 5, threads=threads))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_lattices_are_shared_by_threads(voc_fixture):
    """Lattices are read-only once built (each call takes its own tables): mean-field and filtering
    on the same two lattices from four Python threads at once give what one call alone gives."""
    from concurrent.futures import ThreadPoolExecutor

    img, lab = _pair(voc_fixture, NAMES[1])
    h, w, _ = img.shape
    params = PRESETS["deeplab-resnet"]
    gauss = kernel_c.CLattice(P.image_features(h, w, params.pos_xy).numpy())
    bil = kernel_c.CLattice(P.image_features(h, w, params.bi_xy, torch.from_numpy(img)[None], params.bi_rgb).numpy())
    norms = [c_meanfield.normalisation(lat)[0] for lat in (gauss, bil)]
    probs = blurred_probs(lab).reshape(21, -1)
    values = np.random.default_rng(1).random((h * w, 21)).astype(np.float32)

    def both(_):
        q = kernel_c.mean_field([gauss, bil], norms, [3.0, 4.0], probs, 3, threads=1)
        return q, bil.filter(values, threads=1)

    q_alone, f_alone = both(None)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(both, range(8)))
    for q, f in results:
        np.testing.assert_array_equal(q, q_alone)
        np.testing.assert_array_equal(f, f_alone)


def test_pruning_labels_that_cannot_matter_changes_nothing(voc_fixture):
    img, lab = _pair(voc_fixture, NAMES[0], (60, 90))
    probs = blurred_probs(lab, sigma=2.0)
    probs[3:] = 0.0  # 3 labels present, 18 at the clip floor: pruned
    probs[:3] += 1e-3
    probs /= probs.sum(axis=0)
    params = PRESETS["deeplab-resnet"]
    pruned = c_meanfield.refine(img, probs, params)
    full = c_meanfield.refine(img, probs, params, prune=False)
    np.testing.assert_allclose(pruned, full, rtol=1e-3, atol=1e-6)


def test_library_is_compiled_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the user's cache stays as it was
    path = kernel_c._compile(kernel_c.SOURCE.read_bytes(), kernel_c._compiler())
    assert path is not None and path.parent == kernel_c.cache_dir()
    stamp = path.stat().st_mtime_ns
    assert kernel_c._compile(kernel_c.SOURCE.read_bytes(), kernel_c._compiler()) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    edited = kernel_c.SOURCE.read_bytes() + b"\n/* an edit */\n"
    assert kernel_c._compile(edited, kernel_c._compiler()) != path  # a changed source gets its own build


def test_without_a_compiler_auto_falls_back_to_torch_ops(voc_fixture, monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kernel_c.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not compile the CPU CRF kernel"):
            assert not kernel_c.available()
        assert builtin.resolve_kernel("auto", torch.device("cpu")) == "torch"
        with pytest.raises(DeepLabError, match="could not be compiled"):
            builtin.resolve_kernel("c", torch.device("cpu"))
        img, lab = _pair(voc_fixture, NAMES[0], (40, 60))
        probs = blurred_probs(lab)
        params = PRESETS["deeplab-resnet"]
        out = dense_crf(img, probs, params, backend="builtin")  # runs, on torch ops
        np.testing.assert_allclose(out, builtin.refine(img, probs, params, "cpu", kernel="torch"), atol=1e-6)
        assert resolve_backend("auto", device="cpu") in ("builtin", "pydensecrf")
    finally:
        monkeypatch.undo()
        kernel_c.library.cache_clear()
    assert kernel_c.available()
    assert resolve_backend("auto", device="cpu") == "builtin"  # with the C kernel, ours on CPU too


def test_unwritable_cache_and_damaged_library_still_give_a_kernel(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the cache directory cannot be created
    kernel_c.library.cache_clear()
    try:
        assert kernel_c.available()  # compiled into a temporary directory instead
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        kernel_c.library.cache_clear()
        good = kernel_c._compile(kernel_c.SOURCE.read_bytes(), kernel_c._compiler())
        good.write_bytes(b"not a shared library")  # a damaged cached file
        kernel_c.library.cache_clear()
        assert kernel_c.available()  # rebuilt
        assert good.stat().st_size > 1000
    finally:
        monkeypatch.undo()
        kernel_c.library.cache_clear()


@pytest.mark.parametrize("variable", ["DEEPLAB_CRF_C_KERNEL", "DEEPLAB_CRF_NATIVE"])
def test_disabled_by_environment(monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    kernel_c.library.cache_clear()
    try:
        assert kernel_c.library() is None
        assert builtin.resolve_kernel("auto", torch.device("cpu")) == "torch"
    finally:
        monkeypatch.undo()
        kernel_c.library.cache_clear()


@pytest.mark.parametrize(
    "shape, classes",
    [((1, 1), 2), ((1, 37), 3), ((29, 1), 5), ((16, 24), 1), ((16, 24), 40), ((3, 2), 21)],
)
def test_odd_sizes_and_label_counts_equal_torch_ops(shape, classes):
    rng = np.random.default_rng(classes)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    img[: shape[0] // 2] = 128  # a flat region too: many points on one vertex
    probs = rng.random((classes, *shape), dtype=np.float32) + 1e-3
    probs /= probs.sum(axis=0)
    for params in (PRESETS["deeplab-vgg"], PRESETS["tf-branch"]):
        ours = builtin.refine(img, probs, params, device="cpu", kernel="c")
        ref = builtin.refine(img, probs, params, device="cpu", kernel="torch")
        assert ours.shape == (classes, *shape) and np.isfinite(ours).all()
        np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_repulsive_weights_equal_torch_ops(voc_fixture):
    # negative Potts weights: no pruning, energies can grow; the two implementations still agree
    img, lab = _pair(voc_fixture, NAMES[0], (40, 50))
    probs = blurred_probs(lab)
    params = PRESETS["deeplab-resnet"].__class__(
        iterations=5, pos_w=-1.0, pos_xy=2.0, bi_w=-2.0, bi_xy=20.0, bi_rgb=8.0
    )
    ours = builtin.refine(img, probs, params, device="cpu", kernel="c")
    ref = builtin.refine(img, probs, params, device="cpu", kernel="torch")
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_gain_lower_bound_holds(voc_fixture):
    # the bound that lets the pruning skip a filtering must never exceed the exact gain
    img, _ = _pair(voc_fixture, NAMES[0])
    h, w, _ = img.shape
    for sxy, srgb in ((67.0, 3.0), (20.0, 13.0), (3.0, 80.0)):
        f = P.image_features(h, w, sxy, torch.from_numpy(img)[None], srgb).numpy()
        for lattice in (kernel_c.CLattice(f), kernel_c.CLattice(f[:, :2].copy())):
            norm, k1_min = c_meanfield.normalisation(lattice)
            exact = c_meanfield.gain(lattice, norm, 4.0)
            lower = gain_lower_bound(lattice.dim, k1_min, 4.0)
            assert 0 < lower <= exact


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_lattice_of_a_real_image_is_the_torch_lattice(voc_fixture, threads):
    # large enough that the keys are numbered by several threads and merged
    img, _ = _pair(voc_fixture, NAMES[1], (150, 200))
    f = P.image_features(150, 200, 20.0, torch.from_numpy(img)[None], 6.0)
    ref = P.build_lattice(f)
    vertex, weight, neighbours = kernel_c.CLattice(f.numpy(), threads=threads).export()
    np.testing.assert_array_equal(vertex, ref.vertex.numpy())
    np.testing.assert_array_equal(neighbours, ref.neighbours.numpy())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bi_rgb": 1e-6}, "too small"),
        ({"bi_rgb": float("nan")}, "finite"),
        ({"pos_xy": float("inf")}, "finite"),
        ({"bi_w": float("nan")}, "weights must be finite"),
    ],
)
def test_degenerate_parameters_are_a_clear_error_not_a_crash(change, message):
    from dataclasses import replace

    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    probs = np.full((3, 20, 30), 1 / 3, np.float32)
    with pytest.raises(DeepLabError, match=message):
        dense_crf(img, probs, replace(PRESETS["deeplab-resnet"], **change), backend="builtin")


def test_bad_arguments_to_the_kernel_are_value_errors():
    f = _random_features(2, 50)
    with pytest.raises(ValueError, match="finite"):
        kernel_c.CLattice(np.where(np.arange(100).reshape(50, 2) == 7, np.nan, f))
    with pytest.raises(ValueError, match="finite"):
        kernel_c.CLattice(f * 1e7)
    with pytest.raises(ValueError, match="image_index"):
        kernel_c.CLattice(f, np.zeros(49, np.int32))
    with pytest.raises(ValueError, match="d <= 14"):
        kernel_c.CLattice(np.zeros((5, 15), np.float32))
    lat = kernel_c.CLattice(f)
    with pytest.raises(ValueError, match="values"):
        lat.filter(np.zeros((49, 2), np.float32))
    probs = np.full((4, 50), 0.25, np.float32)
    norm = np.ones(50, np.float32)
    with pytest.raises(ValueError, match="active"):
        kernel_c.mean_field([lat], [norm], [1.0], probs, 2, active=np.array([0, 4]))
    with pytest.raises(ValueError, match="one norm and one weight"):
        kernel_c.mean_field([lat], [norm], [1.0, 2.0], probs, 2)


def test_the_c_build_refuses_points_it_cannot_hold():
    # memory safety below the Python checks: huge or NaN coordinates make the build fail cleanly
    lib = kernel_c.library()
    for bad in (np.float32(3e8), np.float32(np.nan)):
        f = _random_features(5, 100)
        f[17, 2] = bad
        handle = lib.dcrf_lattice_new(kernel_c._ptr(f, kernel_c._f32), 100, 5, None, 1, 2)
        assert not handle


@pytest.mark.parametrize("d", [7, 8])
def test_high_dimensional_lattice_is_numbered_by_first_touch_in_both(d):
    # keys too wide for the one-sort trick: the torch lattice's argsort must be stable
    f = _random_features(d, 3000, seed=d)
    ref = P.build_lattice(torch.from_numpy(f))
    vertex, _, neighbours = kernel_c.CLattice(f).export()
    np.testing.assert_array_equal(vertex, ref.vertex.numpy())
    np.testing.assert_array_equal(neighbours, ref.neighbours.numpy())
