"""The CRF backends' names on the command line and in ``dense_crf``, and the shape of the ``crf``
package: ``builtin`` is ours, ``torch`` its old name (still accepted and meaning exactly the same),
an unknown name is a one-line error, and the package's modules import each other without a circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from deeplab_resnet.cli import build_parser, main
from deeplab_resnet.commands.common import crf_params_from_args
from deeplab_resnet.crf import PRESETS, check_backend, dense_crf, resolve_backend
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.images import read_image

CRF_DIR = REPO / "src" / "deeplab_resnet" / "crf"


@pytest.fixture
def small_image(voc_fixture, tmp_path) -> Path:
    """A 64 x 80 crop of a real image around an object edge, as a PNG file (lossless: both runs read
    the same pixels)."""
    rgb = read_image(voc_fixture / "JPEGImages" / "2007_000032.jpg")[100:164, 150:230]
    path = tmp_path / "crop.png"
    Image.fromarray(rgb).save(path)
    return path


def test_torch_is_the_old_name_of_builtin():
    with pytest.warns(DeprecationWarning, match="'torch' is now called 'builtin'"):
        assert check_backend("torch") == "builtin"
    with pytest.warns(DeprecationWarning):
        assert resolve_backend("torch", device="cpu") == "builtin"
    assert check_backend("builtin") == "builtin" and check_backend("auto") == "auto"
    with pytest.raises(DeepLabError, match="unknown CRF backend 'nonsense'; choose one of auto, builtin, pydensecrf"):
        check_backend("nonsense")


def test_dense_crf_with_the_old_name_computes_what_builtin_does():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    probs = rng.random((4, 24, 30), dtype=np.float32) + 0.05
    probs /= probs.sum(axis=0)
    with pytest.warns(DeprecationWarning):
        old = dense_crf(image, probs, PRESETS["tf-branch"], backend="torch")
    new = dense_crf(image, probs, PRESETS["tf-branch"], backend="builtin")
    np.testing.assert_array_equal(old, new)
    assert np.abs(new - probs).max() > 0.01  # the CRF changed the probabilities: the comparison means something


def _segment_probs(image: Path, weights: Path, out: Path, *crf_options: str) -> np.ndarray:
    argv = ["segment", str(image), "--weights", str(weights), "--device", "cpu", "--save-probs", "-o", str(out)]
    assert main([*argv, *crf_options]) == 0
    return np.load(out / f"{image.stem}_probs.npy")


def test_cli_crf_backend_torch_runs_builtin(small_image, tiny_weights, tmp_path):
    with pytest.warns(DeprecationWarning):
        old = _segment_probs(small_image, tiny_weights, tmp_path / "old", "--crf", "--crf-backend", "torch")
    new = _segment_probs(small_image, tiny_weights, tmp_path / "new", "--crf", "--crf-backend", "builtin")
    plain = _segment_probs(small_image, tiny_weights, tmp_path / "plain")
    np.testing.assert_array_equal(old, new)
    assert np.abs(new - plain).max() > 1e-3  # the CRF ran
    # and the name the rest of the command sees (evaluate records it in its report) is the new one
    args = build_parser().parse_args(["segment", str(small_image), "--crf", "--crf-backend", "torch"])
    with pytest.warns(DeprecationWarning):
        crf_params_from_args(args)
    assert args.crf_backend == "builtin"


@pytest.mark.parametrize("crf_flag", [[], ["--crf"]])
def test_cli_unknown_crf_backend_is_one_line_exit_2(small_image, tmp_path, crf_flag):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    command = ["segment", str(small_image), "--crf-backend", "nonsense", *crf_flag, "-o", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_resnet", *command], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        "deeplab segment: error: unknown CRF backend 'nonsense'; choose one of auto, builtin, pydensecrf"
    )
    assert not (tmp_path / "out").exists()


def test_help_names_the_backends(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--crf-backend {auto,builtin,pydensecrf}" in text
    assert "builtin (ours: a C kernel on CPU" in text and "torch is the old name of builtin" in text


def _sibling_imports(path: Path) -> tuple[set[str], list[str]]:
    """The ``crf`` modules ``path`` imports at module level, and every import made inside a function."""
    modules = {p.stem for p in CRF_DIR.glob("*.py")}
    tree = ast.parse(path.read_text())
    top_level, nested = set(), []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if node not in tree.body:
            nested.extend(a.name if isinstance(node, ast.Import) else f"{node.module}" for a in node.names)
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from . import x / from .x import y
            if node.module:
                top_level.add(node.module.split(".")[0])
            else:
                top_level.update(a.name if a.name in modules else "__init__" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 2 and (node.module or "").startswith("crf"):
            top_level.add("__init__")
    return top_level, nested


def test_crf_modules_import_each_other_without_a_circle():
    graph = {}
    for path in sorted(CRF_DIR.glob("*.py")):
        graph[path.stem], nested = _sibling_imports(path)
        # a function-level import only keeps the optional pydensecrf and triton optional
        assert set(nested) <= {"pydensecrf.densecrf", "triton", "triton.language"}, (path.name, nested)
    assert "torch_meanfield" not in graph["c_meanfield"] and "c_meanfield" not in graph["torch_meanfield"]
    kernels = graph["c_meanfield"] | graph["torch_meanfield"] | graph["triton_lattice"]
    assert "builtin" not in kernels  # kernels don't know the dispatcher
    visiting, done = set(), set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in visiting, f"import circle: {' -> '.join([*path, name])}"
        if name in done:
            return
        visiting.add(name)
        for other in sorted(graph[name]):
            visit(other, [*path, name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])
    assert graph["__init__"] >= {"builtin", "pydensecrf_adapter", "params"}  # and the walk above really ran
