"""TF checkpoints written by TensorFlow's own Saver (V1 and V2), .npy dictionaries, CRC-32C."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import torch
from fixtures_weights import (
    copy_without,
    flip_byte,
    npy_layers,
    random_tf_arrays,
    reference_tf,
    rel_l2,
    tf_variables,
    write_tf_checkpoints,
)  # fmt: skip
from PIL import Image

from deeplab_resnet import DeepLabError, load_model
from deeplab_resnet.cli import main
from deeplab_resnet.models.naming import original_to_state_key
from deeplab_resnet.weights.convert import convert
from deeplab_resnet.weights.crc32c import crc32c
from deeplab_resnet.weights.native import read_native

TINY = (1, 1, 1, 1)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A tiny-variant V1 file, a V2 snapshot with Momentum slots, and a foreign V1, all by TF."""
    tmp = tmp_path_factory.mktemp("tf")
    arrays = random_tf_arrays(tf_variables(TINY, width=8), seed=5)
    foreign = {
        "resnet_v1_101/conv1/weights": arrays["conv1/weights"],
        "resnet_v1_101/logits/biases": np.zeros(21, np.float32),
    }
    write_tf_checkpoints(
        tmp,
        [
            (arrays, tmp / "deeplab_resnet.ckpt", tmp / "snap" / "model.ckpt", True),
            (foreign, tmp / "v3.ckpt", None, False),
        ],
    )
    return tmp, arrays


def _check_state(state, arrays):
    assert len(state) == len(arrays)
    for name, a in arrays.items():
        expected = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a  # HWIO → OIHW
        assert np.array_equal(state[original_to_state_key(name)].numpy(), expected), name


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_tf_checkpoint_converts_exactly(tmp_path, ckpts, which):
    tmp, arrays = ckpts
    src = tmp / "deeplab_resnet.ckpt" if which == "v1" else tmp / "snap" / "model.ckpt-20000"
    dst = tmp_path / "out.safetensors"
    report = convert(src, dst)
    assert report.kind == f"tf-{which}" and report.convention == "tf"
    assert len(report.ignored) == (3 if which == "v2" else 0)  # the Momentum slots
    state, meta = read_native(dst)
    assert meta.convention == "tf"
    _check_state(state, arrays)
    x = np.random.default_rng(2).uniform(-100, 100, (1, 38, 31, 3)).astype(np.float32)  # even and odd sizes
    with torch.no_grad():
        logits = load_model(dst)(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    reference = reference_tf(arrays, x, TINY).transpose(0, 3, 1, 2)
    assert logits.shape == reference.shape == (1, 21, 5, 4)
    assert rel_l2(logits, reference) <= 1e-5


def test_v2_is_found_as_the_user_names_it(ckpts):
    tmp, arrays = ckpts
    snap = tmp / "snap"
    for spec in (snap, snap / "model.ckpt-20000.index", snap / "model.ckpt-20000.data-00000-of-00001"):
        state, meta = read_native_like(spec)
        assert meta.convention == "tf" and len(state) == len(arrays)


def read_native_like(spec):
    from deeplab_resnet.weights import read_weights

    return read_weights(spec)


def test_segment_with_a_v1_file_without_tensorflow(tmp_path, ckpts, monkeypatch):
    tmp, _ = ckpts
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(photo)
    assert "tensorflow" not in sys.modules  # the writers ran in a subprocess
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # any 'import tensorflow' now fails
    args = ["segment", str(photo), "--weights", str(tmp / "deeplab_resnet.ckpt"), "-o", str(tmp_path / "out")]
    assert main(args) == 0
    labels = np.array(Image.open(tmp_path / "out" / "photo.png"))
    assert labels.shape == (40, 50) and labels.max() < 21


def test_damaged_checkpoints_and_another_architecture(tmp_path, ckpts):
    tmp, _ = ckpts
    dst = tmp_path / "never.safetensors"

    def expect(src, pattern):
        with pytest.raises(DeepLabError, match=pattern):
            convert(src, dst)
        assert not dst.exists()

    v1 = tmp / "deeplab_resnet.ckpt"
    size = v1.stat().st_size
    expect(copy_without(v1, tmp_path / "a.ckpt", size - 10), "not a readable TensorFlow V1 checkpoint.*truncated")
    expect(copy_without(v1, tmp_path / "b.ckpt", size // 2), "not a readable TensorFlow V1 checkpoint.*truncated")
    expect(flip_byte(v1, tmp_path / "c.ckpt", size // 3), "checksum mismatch")
    expect(tmp / "v3.ckpt", r"not a DeepLab-v2 ResNet .*resnet_v1_101/")
    # V2: a corrupt byte in the data shard, a truncated shard, a missing shard.
    snap = tmp_path / "snap"
    snap.mkdir()
    index, data = tmp / "snap" / "model.ckpt-20000.index", tmp / "snap" / "model.ckpt-20000.data-00000-of-00001"
    (snap / index.name).write_bytes(index.read_bytes())
    flip_byte(data, snap / data.name, data.stat().st_size // 2)
    expect(snap / "model.ckpt-20000", "checksum mismatch in tensor")
    copy_without(data, snap / data.name, data.stat().st_size - 100)
    expect(snap / "model.ckpt-20000", "past the end of its data file")
    (snap / data.name).unlink()
    expect(snap / "model.ckpt-20000", "data file missing")
    flip_byte(index, snap / index.name, 20)
    expect(snap / "model.ckpt-20000", "V2 checkpoint index")


def test_npy_dictionary_as_the_original_convert_wrote_it(tmp_path):
    arrays = random_tf_arrays(tf_variables(TINY, width=8), seed=7)
    layers = npy_layers(arrays)
    src = tmp_path / "deeplab_resnet.npy"
    np.save(src, layers)
    py2 = tmp_path / "py2.npy"  # protocol 2, as Python 2's np.save wrote it
    with open(py2, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(layers, dtype=object), f, protocol=2)
    for path in (src, py2):
        report = convert(path, tmp_path / "o.safetensors")
        assert report.kind == "npy" and report.convention == "tf"
        _check_state(read_native(tmp_path / "o.safetensors")[0], arrays)
    layers["res3a_branch2b"]["weights"] = layers["res3a_branch2b"]["weights"][:, :, :4]
    np.save(src, layers)
    with pytest.raises(
        DeepLabError,
        match=r"entry 'res3a_branch2b/weights' \[3, 3, 4, 16\] has the wrong shape: expected \[3, 3, 16, 16\]",
    ):
        convert(src, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_npy_with_code_in_its_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "evil.npy", {"conv1": {"weights": _Evil()}})
    with pytest.raises(DeepLabError, match="refusing to load .*system"):
        convert(tmp_path / "evil.npy", tmp_path / "o.safetensors")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o.safetensors").exists()


def test_crc32c_against_known_values_and_a_bitwise_reference():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0

    def bitwise(data: bytes) -> int:
        crc = 0xFFFFFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        return crc ^ 0xFFFFFFFF

    rng = np.random.default_rng(0)
    for n in (1, 1000, 1024 * 16, 1024 * 16 + 7, 1024 * 37 + 3):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == bitwise(data), n
        assert crc32c(data[n // 3 :], crc32c(data[: n // 3])) == bitwise(data)
