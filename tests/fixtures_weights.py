"""Helpers that make original-format weight files for tests, and an independent forward pass.

* Source arrays in the originals' own layouts (TF: HWIO weights; Caffe: OIHW blobs with
  BatchNorm ``mean*S, var*S, [S]`` and separate Scale layers).
* Writers: caffemodels through a protobuf schema built here with Caffe's field numbers (the
  ``protobuf`` package serializes), ``.npy`` dictionaries with ``np.save``, and TF
  checkpoints through TensorFlow's own ``Saver`` in a subprocess (``tf_python()``).
* ``reference_tf`` / ``reference_caffe``: the network written again in numpy float64 from
  the source arrays, in the source's layout and numerics (no package code).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REFERENCE_VARIABLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "original_tf_variables.txt"


# ---------------------------------------------------------------- architecture (names, shapes)


def stage_blocks(stage: int, count: int) -> list[str]:
    if stage in (3, 4):
        return [f"res{stage}a"] + [f"res{stage}b{i}" for i in range(1, count)]
    return [f"res{stage}{chr(97 + i)}" for i in range(count)]


def tf_variables(blocks=(3, 4, 23, 3), width=64, num_classes=21) -> list[tuple[str, tuple[int, ...]]]:
    """(name, TF shape) of every variable, in the original's order (as original_tf_variables.txt)."""
    out: list[tuple[str, tuple[int, ...]]] = []

    def conv(name, k, cin, cout):
        out.append((f"{name}/weights", (k, k, cin, cout)))

    def bn(name, c):
        out.extend((f"{name}/{p}", (c,)) for p in ("beta", "gamma", "moving_mean", "moving_variance"))

    conv("conv1", 7, 3, width)
    bn("bn_conv1", width)
    cin = width
    for stage, count, base in zip((2, 3, 4, 5), blocks, (64, 128, 256, 512)):
        w = base * width // 64
        for i, block in enumerate(stage_blocks(stage, count)):
            tag = block[3:]
            if i == 0:
                conv(f"{block}_branch1", 1, cin, 4 * w)
                bn(f"bn{tag}_branch1", 4 * w)
            conv(f"{block}_branch2a", 1, cin, w)
            bn(f"bn{tag}_branch2a", w)
            conv(f"{block}_branch2b", 3, w, w)
            bn(f"bn{tag}_branch2b", w)
            conv(f"{block}_branch2c", 1, w, 4 * w)
            bn(f"bn{tag}_branch2c", 4 * w)
            cin = 4 * w
    for c in range(4):
        out.append((f"fc1_voc12_c{c}/weights", (3, 3, cin, num_classes)))
        out.append((f"fc1_voc12_c{c}/biases", (num_classes,)))
    return out


def reference_variables() -> list[tuple[str, tuple[int, ...]]]:
    """The real list beside the repository (528 tensors)."""
    out = []
    for line in REFERENCE_VARIABLES.read_text().splitlines():
        name, shape = line.split()
        out.append((name, tuple(json.loads(shape))))
    return out


def random_tf_arrays(variables, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays in TF layout whose activations stay O(1) through the network."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in variables:
        layer, param = name.split("/")
        if param == "weights":
            fan_in = shape[0] * shape[1] * shape[2]
            std = 0.01 if layer.startswith("fc1") else np.sqrt(2.0 / fan_in)
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        elif param == "biases":
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
        elif param == "gamma":
            a = rng.uniform(0.5, 1.5, shape).astype(np.float32) * np.float32(0.3 if layer.endswith("2c") else 1.0)
        elif param in ("beta", "moving_mean"):
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
        else:  # moving_variance
            a = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        arrays[name] = a
    return arrays


# ---------------------------------------------------------------- caffemodel writer (protobuf)


def caffe_pb2():
    """Message classes with Caffe's field numbers (docs/original.md §3), built at runtime."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="caffe_test.proto", package="caffe", syntax="proto2")
    F = descriptor_pb2.FieldDescriptorProto

    def msg(name, *fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("BlobShape", ("dim", 1, F.TYPE_INT64, rep, None, True))
    msg(
        "BlobProto",
        ("num", 1, F.TYPE_INT32, opt, None, False), ("channels", 2, F.TYPE_INT32, opt, None, False),
        ("height", 3, F.TYPE_INT32, opt, None, False), ("width", 4, F.TYPE_INT32, opt, None, False),
        ("data", 5, F.TYPE_FLOAT, rep, None, True), ("shape", 7, F.TYPE_MESSAGE, opt, ".caffe.BlobShape", False),
    )  # fmt: skip
    msg(
        "LayerParameter",
        ("name", 1, F.TYPE_STRING, opt, None, False), ("type", 2, F.TYPE_STRING, opt, None, False),
        ("bottom", 3, F.TYPE_STRING, rep, None, False), ("top", 4, F.TYPE_STRING, rep, None, False),
        ("blobs", 7, F.TYPE_MESSAGE, rep, ".caffe.BlobProto", False),
    )  # fmt: skip
    msg(
        "V1LayerParameter",
        ("bottom", 2, F.TYPE_STRING, rep, None, False), ("top", 3, F.TYPE_STRING, rep, None, False),
        ("name", 4, F.TYPE_STRING, opt, None, False), ("type", 5, F.TYPE_INT32, opt, None, False),
        ("blobs", 6, F.TYPE_MESSAGE, rep, ".caffe.BlobProto", False),
    )  # fmt: skip
    msg(
        "NetParameter",
        ("name", 1, F.TYPE_STRING, opt, None, False),
        ("layers", 2, F.TYPE_MESSAGE, rep, ".caffe.V1LayerParameter", False),
        ("layer", 100, F.TYPE_MESSAGE, rep, ".caffe.LayerParameter", False),
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}")) for n in
            ("BlobShape", "BlobProto", "LayerParameter", "V1LayerParameter", "NetParameter")}  # fmt: skip


def caffe_layers(tf_arrays: dict[str, np.ndarray], scale_factor: float = 1.0):
    """TF-layout arrays → Caffe layers [(name, type, [blobs])] as the Caffe release stores them."""
    layers, bn_done = [], set()
    for name, a in tf_arrays.items():
        layer, param = name.split("/")
        if param == "weights":
            blobs = [a.transpose(3, 2, 0, 1).copy()]
            if f"{layer}/biases" in tf_arrays:
                blobs.append(tf_arrays[f"{layer}/biases"])
            layers.append((layer, "Convolution", blobs))
        elif layer.startswith("bn") and layer not in bn_done:
            bn_done.add(layer)
            s = np.float32(scale_factor)
            mean, var = tf_arrays[f"{layer}/moving_mean"], tf_arrays[f"{layer}/moving_variance"]
            layers.append((layer, "BatchNorm", [mean * s, var * s, np.array([s], np.float32)]))
            scale = "scale" + layer[2:]
            layers.append((scale, "Scale", [tf_arrays[f"{layer}/gamma"], tf_arrays[f"{layer}/beta"]]))
    return layers


def write_caffemodel(path: Path, layers, fmt: str = "layer", legacy_shapes: bool = False) -> None:
    """Serialize ``layers`` as a NetParameter: ``layer`` (current) or ``layers`` (V1) format."""
    pb = caffe_pb2()
    net = pb["NetParameter"](name="deeplab_test")
    for name, kind, blobs in [("data", "Input", []), *layers, ("relu", "ReLU", [])]:
        if fmt == "layer":
            lp = net.layer.add(name=name, type=kind, bottom=["x"], top=["y"])
        else:  # V1: enum types (CONVOLUTION = 4; others only need to be some number)
            lp = net.layers.add(name=name, type=4 if kind == "Convolution" else 39, bottom=["x"], top=["y"])
        for b in blobs:
            blob = lp.blobs.add()
            if legacy_shapes and b.ndim <= 4:
                dims = (1,) * (4 - b.ndim) + b.shape
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(b.shape)
            blob.data.extend(b.ravel().tolist())
    path.write_bytes(net.SerializeToString())


# ---------------------------------------------------------------- TF checkpoints (real TensorFlow)


def tf_python() -> str | None:
    """An interpreter with TensorFlow: $DEEPLAB_TF_PYTHON, or this one if it imports tensorflow."""
    env = os.environ.get("DEEPLAB_TF_PYTHON")
    if env:
        return env
    import importlib.util

    return sys.executable if importlib.util.find_spec("tensorflow") else None


def require_tf() -> str:
    """The TensorFlow interpreter; in CI its absence fails the test instead of skipping it."""
    exe = tf_python()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("TensorFlow is needed for the real-writer tests in CI: install '.[tf-test]'")
        pytest.skip("TensorFlow not installed (pip install '.[tf-test]' or set DEEPLAB_TF_PYTHON)")
    return exe


_TF_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, numpy as np
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    for src, v1, v2, momentum in json.loads(sys.argv[1]):
        arrays = np.load(src)
        with tf.Graph().as_default():
            variables = [tf.compat.v1.get_variable(n, initializer=arrays[n]) for n in arrays.files]
            if v1:
                saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V1)
            extra = []
            if momentum:  # a training snapshot also holds optimizer slots
                extra = [tf.compat.v1.get_variable(n + "/Momentum", initializer=np.zeros_like(arrays[n]))
                         for n in arrays.files[:3]]
            saver2 = tf.compat.v1.train.Saver(variables + extra)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                if v1:
                    saver.save(sess, v1, write_meta_graph=False)
                if v2:
                    saver2.save(sess, v2, global_step=20000)
    """
)


def write_tf_checkpoints(tmp: Path, jobs: list[tuple[dict[str, np.ndarray], Path | None, Path | None, bool]]) -> None:
    """Write checkpoints with TensorFlow's own Saver, one subprocess for all ``jobs``.

    Each job is ``(arrays, v1_path or None, v2_prefix or None, add_momentum_slots)``; the V2
    checkpoint lands at ``v2_prefix-20000`` (as training snapshots are named).
    """
    exe = require_tf()
    spec = []
    for i, (arrays, v1, v2, momentum) in enumerate(jobs):
        npz = tmp / f"arrays{i}.npz"
        np.savez(npz, **arrays)
        spec.append([str(npz), str(v1 or ""), str(v2 or ""), momentum])
    done = subprocess.run([exe, "-c", _TF_SCRIPT, json.dumps(spec)], capture_output=True, text=True, timeout=400)
    if done.returncode != 0:
        raise RuntimeError(f"TensorFlow writer failed:\n{done.stderr[-3000:]}")
    for npz, *_ in spec:
        Path(npz).unlink()


def copy_without(src: Path, dst: Path, keep: int) -> Path:
    """``dst`` = the first ``keep`` bytes of ``src`` (a truncated file)."""
    with open(src, "rb") as f:
        dst.write_bytes(f.read(keep))
    return dst


def flip_byte(src: Path, dst: Path, offset: int) -> Path:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x55]))
    return dst


# ---------------------------------------------------------------- independent forward (numpy, float64)


def _conv(x, w, stride, dilation, pads, layout):
    """Direct convolution. layout "tf": x NHWC, w HWIO; "caffe": x NCHW, w OIHW."""
    top, bottom, left, right = pads
    if layout == "tf":
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        kh, kw = w.shape[:2]
        H, W = x.shape[1], x.shape[2]
    else:
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        kh, kw = w.shape[2:]
        H, W = x.shape[2], x.shape[3]
    oh = (H - dilation * (kh - 1) - 1) // stride + 1
    ow = (W - dilation * (kw - 1) - 1) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            ys = slice(i * dilation, i * dilation + stride * (oh - 1) + 1, stride)
            xs = slice(j * dilation, j * dilation + stride * (ow - 1) + 1, stride)
            if layout == "tf":
                out = out + np.einsum("nhwc,co->nhwo", x[:, ys, xs, :], w[i, j], optimize=True)
            else:
                out = out + np.einsum("nchw,oc->nohw", x[:, :, ys, xs], w[:, :, i, j], optimize=True)
    return out


def _same(size, k, s, d=1):
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def reference_tf(a: dict[str, np.ndarray], x_nhwc: np.ndarray, blocks=(3, 4, 23, 3)) -> np.ndarray:
    """Logits (NHWC) of the TF re-implementation from its variables: SAME padding, BN eps 1e-3."""
    a = {k: v.astype(np.float64) for k, v in a.items()}

    def conv(x, layer, k, s=1, d=1):
        w = a[f"{layer}/weights"]
        pads = (*_same(x.shape[1], k, s, d), *_same(x.shape[2], k, s, d))
        y = _conv(x, w, s, d, pads, "tf")
        return y + a[f"{layer}/biases"] if f"{layer}/biases" in a else y

    def bn(x, layer):
        g, b, m, v = (a[f"{layer}/{p}"] for p in ("gamma", "beta", "moving_mean", "moving_variance"))
        return (x - m) / np.sqrt(v + 1e-3) * g + b

    x = np.maximum(bn(conv(x_nhwc.astype(np.float64), "conv1", 7, 2), "bn_conv1"), 0)
    t, b_ = _same(x.shape[1], 3, 2)
    l_, r = _same(x.shape[2], 3, 2)
    x = np.pad(x, ((0, 0), (t, b_), (l_, r), (0, 0)), constant_values=-np.inf)
    oh, ow = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    x = np.max(
        [x[:, i : i + 2 * (oh - 1) + 1 : 2, j : j + 2 * (ow - 1) + 1 : 2] for i in range(3) for j in range(3)], 0
    )
    return _body(x, a, blocks, conv, bn)


def reference_caffe(layers, x_nchw: np.ndarray, blocks=(3, 4, 23, 3)) -> np.ndarray:
    """Logits (NCHW) of the Caffe release from its blobs: symmetric pads, ceil-mode pool, eps 1e-5."""
    blobs = {name: [b.astype(np.float64) for b in bl] for name, _, bl in layers}

    def conv(x, layer, k, s=1, d=1):
        w = blobs[layer][0]
        p = d * (k - 1) // 2
        y = _conv(x, w, s, d, (p, p, p, p), "caffe")
        return y + blobs[layer][1][None, :, None, None] if len(blobs[layer]) > 1 else y

    def bn(x, layer):
        mean, var, s = blobs[layer]
        f = 0.0 if s[0] == 0 else 1.0 / s[0]
        g, b = blobs["scale" + layer[2:]]
        c = (None, slice(None), None, None)
        return (x - (mean * f)[c]) / np.sqrt(var * f + 1e-5)[c] * g[c] + b[c]

    x = np.maximum(bn(conv(x_nchw.astype(np.float64), "conv1", 7, 2), "bn_conv1"), 0)
    H, W = x.shape[2:]

    def pool_out(n):
        o = -(-(n + 2 - 3) // 2) + 1
        return o - 1 if (o - 1) * 2 >= n + 1 else o

    oh, ow = pool_out(H), pool_out(W)
    x = np.pad(x, ((0, 0), (0, 0), (1, 2 * oh + 1 - H), (1, 2 * ow + 1 - W)), constant_values=-np.inf)
    x = np.max(
        [x[:, :, i : i + 2 * (oh - 1) + 1 : 2, j : j + 2 * (ow - 1) + 1 : 2] for i in range(3) for j in range(3)], 0
    )
    return _body(x, None, blocks, conv, bn)


def _body(x, _unused, blocks, conv, bn):
    for stage, count, stride, dil in zip((2, 3, 4, 5), blocks, (1, 2, 1, 1), (1, 1, 2, 4)):
        for i, block in enumerate(stage_blocks(stage, count)):
            tag = block[3:]
            s = stride if i == 0 else 1
            short = bn(conv(x, f"{block}_branch1", 1, s), f"bn{tag}_branch1") if i == 0 else x
            y = np.maximum(bn(conv(x, f"{block}_branch2a", 1, s), f"bn{tag}_branch2a"), 0)
            y = np.maximum(bn(conv(y, f"{block}_branch2b", 3, 1, dil), f"bn{tag}_branch2b"), 0)
            y = bn(conv(y, f"{block}_branch2c", 1), f"bn{tag}_branch2c")
            x = np.maximum(y + short, 0)
    return sum(conv(x, f"fc1_voc12_c{c}", 3, 1, r) for c, r in enumerate((6, 12, 18, 24)))


def npy_layers(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """TF variables → the original convert.py's ``{layer: {param: array}}`` (BN: scale/offset/mean/variance)."""
    bn_names = {"gamma": "scale", "beta": "offset", "moving_mean": "mean", "moving_variance": "variance"}
    layers: dict[str, dict[str, np.ndarray]] = {}
    for name, a in arrays.items():
        layer, param = name.split("/")
        layers.setdefault(layer, {})[bn_names.get(param, param)] = a
    return layers


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


if __name__ == "__main__":
    # Write the full 528-tensor network in every original format, for timing ``deeplab convert``:
    #   DEEPLAB_TF_PYTHON=... python tests/fixtures_weights.py OUTDIR
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    arrays = random_tf_arrays(reference_variables(), seed=1)
    write_caffemodel(out / "train_iter_20000.caffemodel", caffe_layers(arrays, 999.0))
    write_caffemodel(out / "v1format.caffemodel", caffe_layers(arrays, 999.0), "layers")
    np.save(out / "deeplab_resnet.npy", npy_layers(arrays))
    write_tf_checkpoints(out, [(arrays, out / "deeplab_resnet.ckpt", out / "model.ckpt", True)])
