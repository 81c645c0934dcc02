"""Weight files are checked before anything is built from them.

Hostile metadata runs the real CLI in a child process whose address space is capped
(``RLIMIT_AS``): a regression that builds the network the metadata asks for fails there
instead of swapping the machine. Each case must end with exit status 2 and one line on stderr
naming the file and the field, without a traceback.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_model
from fixtures_weights import npy_layers, random_tf_arrays, tf_variables
from PIL import Image
from safetensors.torch import save_file

from deeplab_resnet import DeepLabError, load_model
from deeplab_resnet.cli import main
from deeplab_resnet.models import create_model
from deeplab_resnet.weights.convert import convert
from deeplab_resnet.weights.native import meta_of
from deeplab_resnet.weights.validate import MAX_MODEL_BYTES, model_bytes

ADDRESS_SPACE_LIMIT = 3 << 30  # torch needs well under 1 GiB; the reported case took 22.7 GB


def write_weights(path: Path, *, architecture=None, dataset=None, state=None, strings=None) -> Path:
    """The tiny model's file with parts of its metadata (merged, or whole ``strings``) or tensors replaced."""
    model = tiny_model()
    meta = meta_of(model).to_strings()
    if isinstance(architecture, dict):
        meta["architecture"] = json.dumps({**model.architecture, **architecture})
    elif architecture is not None:
        meta["architecture"] = json.dumps(architecture)
    if dataset is not None:
        meta["dataset"] = json.dumps({**model.dataset.to_dict(), **dataset})
    meta.update(strings or {})
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors.update(state or {})
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def segment_in_child(weights: Path, image: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "deeplab_resnet", "segment", str(image), "--weights", str(weights)]
    return subprocess.run(
        command + ["-o", str(out), "--device", "cpu"], capture_output=True, text=True, env=env,
        preexec_fn=_limit_address_space, timeout=300,
    )  # fmt: skip


def test_a_valid_file_segments_under_the_same_limit(tmp_path, image) -> None:
    """The control: the cap leaves room for real work, so a refusal below is the check's doing."""
    weights = write_weights(tmp_path / "ok.safetensors")
    result = segment_in_child(weights, image, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "out").iterdir())


# Metadata that would allocate a lot if trusted: always run in a capped child.
MEMORY = [
    ("huge-blocks", {"architecture": {"blocks": [1, 1, 100000, 1], "width": 4096}}, "architecture.blocks"),
    ("absurd-size", {"architecture": {"blocks": [64, 64, 64, 64], "width": 512}}, "would take 90.9 GiB"),
    ("huge-rate", {"architecture": {"aspp_rates": [6, 12, 18, 100000]}}, "architecture.aspp_rates"),
    ("300-classes", {"dataset": {"class_names": [f"c{i}" for i in range(300)], "num_classes": 300, "palette": None}},
     "300 class_names"),
]  # fmt: skip
# Metadata of the wrong type or out of range: a traceback (some after inference) before the checks.
MALFORMED = [
    ("blocks-strings", {"architecture": {"blocks": ["3", "4", "23", "3"]}}, "architecture.blocks"),
    ("width-float", {"architecture": {"width": 64.5}}, "architecture.width"),
    ("architecture-list", {"architecture": [3, 4, 23, 3]}, "architecture must be a JSON object"),
    ("unknown-convention", {"strings": {"convention": "pytorch"}}, "convention must be one of caffe, tf"),
    ("palette-300", {"dataset": {"palette": [[300, 0, 0]] * 21}}, "palette colour 0 [300, 0, 0]"),
    ("palette-negative", {"dataset": {"palette": [[0, -5, 0]] * 21}}, "palette colour 0 [0, -5, 0]"),
    ("nan-mean", {"dataset": {"mean_bgr": [float("nan"), 1.0, 2.0]}}, "mean_bgr"),
    ("ignore-is-a-class", {"dataset": {"ignore_label": 3}}, "ignore_label 3"),
    ("dataset-not-json", {"strings": {"dataset": "{not json"}}, "metadata 'dataset' is not valid JSON"),
    ("future-version", {"strings": {"format_version": "2"}}, "format_version '2'"),
]  # fmt: skip


# Each child imports torch (seconds): the malformed cases run in a child only with -m slow, and
# in-process (test_hostile_metadata_in_process) always.
CHILD_CASES = [pytest.param(*c, id=c[0]) for c in MEMORY]
CHILD_CASES += [pytest.param(*c, id=c[0], marks=pytest.mark.slow) for c in MALFORMED]


@pytest.mark.parametrize("case, change, field", CHILD_CASES)
def test_hostile_metadata_in_a_capped_child(tmp_path, image, case, change, field) -> None:
    path = write_weights(tmp_path / f"{case}.safetensors", **change)
    result = segment_in_child(path, image, tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and str(path) in lines[0] and field in lines[0], result.stderr
    assert not (tmp_path / "out").exists()  # refused before any inference


@pytest.mark.parametrize("case, change, field", MEMORY + MALFORMED, ids=[c[0] for c in MEMORY + MALFORMED])
def test_hostile_metadata_in_process(tmp_path, image, capsys, case, change, field) -> None:
    """The same files through ``main``: quick, for every case (the memory cases are refused before building)."""
    path = write_weights(tmp_path / f"{case}.safetensors", **change)
    assert main(["segment", str(image), "--weights", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and field in err, err
    assert not (tmp_path / "out").exists()


def _first_bn_var(model) -> str:
    return next(k for k in model.state_dict() if k.endswith("running_var"))


def test_bad_tensors_are_refused_naming_the_tensor(tmp_path, image, capsys) -> None:
    model = tiny_model()
    state = model.state_dict()
    nan_weight = state["backbone.conv1.weight"].clone()
    nan_weight[0, 0, 0, 0] = float("nan")
    negative = state[_first_bn_var(model)].clone()
    negative[1] = -0.5
    cases = [
        ({"backbone.conv1.weight": nan_weight}, "tensor backbone.conv1.weight has 1 NaN or infinite"),
        ({_first_bn_var(model): negative}, f"tensor {_first_bn_var(model)} has negative batch-norm variances"),
        ({k: v.to(torch.int64) for k, v in state.items()}, "has dtype torch.int64; weights must be floating point"),
        ({k: v > 0 for k, v in state.items()}, "has dtype torch.bool; weights must be floating point"),
    ]
    for i, (tensors, message) in enumerate(cases):
        path = write_weights(tmp_path / f"bad{i}.safetensors", state=tensors)
        with pytest.raises(DeepLabError, match=message):
            load_model(path)
        assert main(["segment", str(image), "--weights", str(path), "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and re.search(message, err), err
        assert not (tmp_path / "out").exists()


def test_original_files_with_bad_values_are_refused(tmp_path) -> None:
    arrays = random_tf_arrays(tf_variables((1, 1, 1, 1), width=8), seed=5)
    arrays["conv1/weights"] = arrays["conv1/weights"].copy()
    arrays["conv1/weights"][0, 0, 0, 0] = np.inf
    np.save(tmp_path / "inf.npy", npy_layers(arrays))
    with pytest.raises(DeepLabError, match="inf.npy: tensor backbone.conv1.weight has 1 NaN or infinite"):
        convert(tmp_path / "inf.npy", tmp_path / "out.safetensors")
    arrays["conv1/weights"] = np.ones(arrays["conv1/weights"].shape, dtype=np.int64)
    np.save(tmp_path / "int.npy", npy_layers(arrays))
    with pytest.raises(DeepLabError, match="int.npy: tensor 'conv1/weights' has dtype int64, not floating point"):
        convert(tmp_path / "int.npy", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    "blocks, width, classes, rates",
    [((1, 1, 1, 1), 8, 21, (6, 12, 18, 24)), ((2, 1, 3, 2), 16, 5, (2, 4)), ((1, 2, 1, 1), 12, 3, (1,))],
)
def test_model_bytes_counts_every_value_of_the_state_dict(blocks, width, classes, rates) -> None:
    with torch.device("meta"):
        model = create_model(blocks=blocks, width=width, num_classes=classes, aspp_rates=rates)
    values = sum(t.numel() for t in model.state_dict().values())
    arch = {"blocks": list(blocks), "width": width, "aspp_rates": list(rates)}
    assert model_bytes(arch, classes) == 4 * values


def test_model_bytes_of_resnet101_is_the_documented_count() -> None:
    # docs/original.md §1: 44,153,876 values with 21 classes.
    arch = {"blocks": [3, 4, 23, 3], "width": 64, "aspp_rates": [6, 12, 18, 24]}
    assert model_bytes(arch, 21) == 4 * 44_153_876
    # The cap leaves real variants alone: a ResNet-152 at twice the width with 255 classes is ~1 GiB.
    wide_152 = {"blocks": [3, 8, 36, 3], "width": 128, "aspp_rates": [6, 12, 18, 24]}
    assert model_bytes(wide_152, 255) < MAX_MODEL_BYTES
