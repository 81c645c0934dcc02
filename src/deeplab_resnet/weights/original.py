"""The original releases' weight files → this package's state dict, by one table.

Names go through :mod:`deeplab_resnet.models.naming` (TF variable ``layer/param`` ↔
state-dict key). What differs per source is only how a tensor is stored:

=====================  ==========================================================
source                 stored as → converted to
=====================  ==========================================================
TF V1 / V2 checkpoint  conv ``weights`` HWIO → OIHW (``transpose(3, 2, 0, 1)``);
                       ``biases``, BN ``gamma/beta/moving_mean/moving_variance`` as is
``.npy`` dictionary    as TF (HWIO); BN params ``scale/offset/mean/variance`` are
                       ``gamma/beta/moving_mean/moving_variance``
``.caffemodel``        ``Convolution`` blobs weight OIHW [+ bias] as is;
                       ``BatchNorm`` blobs ``mean·S, var·S, [S]`` → mean, var divided by S
                       (S = 0 means 0); ``Scale`` layer ``scaleX`` blobs gamma, beta →
                       BN ``bnX``
=====================  ==========================================================

The convention travels with the source: Caffe files → ``caffe``, TF files → ``tf``.
Optimizer state in training snapshots (``*/Momentum``, Adam slots, ``global_step``) is
recognised and left out; every other tensor must map, or it is an error naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..dataset_info import VOC, generic_dataset
from ..errors import DeepLabError
from ..models.aspp import ASPP_RATES
from ..models.deeplab import model_from_architecture
from ..models.naming import original_to_state_key, state_key_to_original
from ..models.resnet import block_names
from .caffe import looks_like_caffemodel, read_caffemodel
from .native import WeightsMeta
from .npy_dict import is_npy, read_npy_dict
from .tf_checkpoint import is_v1, read_v1, read_v2, v2_prefix
from .validate import check_architecture, check_state

NPY_BN_PARAMS = {"scale": "gamma", "offset": "beta", "mean": "moving_mean", "variance": "moving_variance"}
_TRAINING_STATE = re.compile(r"(^|/)(global_step|beta[12]_power)$|/(Momentum|Adam(_\d+)?|ExponentialMovingAverage)$")
_BLOCK = re.compile(r"^res(\d)([a-z]\d*)_branch")
_CLASSIFIER = re.compile(r"^fc1_voc12_c(\d+)$")
_MSC_COPY = re.compile(r"^(.+)_res\d+$")  # multi-scale nets repeat shared layers as NAME_res075, NAME_res05


@dataclass
class OriginalWeights:
    """Tensors of an original file under their TF names, already in this package's layout."""

    tensors: dict[str, np.ndarray]
    convention: str
    kind: str  # "caffe", "tf-v1", "tf-v2", "npy"
    origin: dict[str, str] = field(default_factory=dict)  # name → where it came from (for errors)
    ignored: list[str] = field(default_factory=list)  # optimizer state left out


def detect(spec: str | Path) -> str | None:
    """Which original format ``spec`` is (``caffe``, ``tf-v1``, ``tf-v2``, ``npy``), or None."""
    path = Path(spec)
    if v2_prefix(path) is not None:
        return "tf-v2"
    if not path.is_file():
        return None
    if is_npy(path):
        return "npy"
    if is_v1(path) or path.suffix == ".ckpt":  # a damaged .ckpt still gets the V1 reader's diagnosis
        return "tf-v1"
    if looks_like_caffemodel(path):
        return "caffe"
    return None


def _hwio_to_oihw(name: str, array: np.ndarray) -> np.ndarray:
    if name.endswith("/weights") and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array


def _from_tf(named: dict[str, np.ndarray], kind: str, where: str) -> OriginalWeights:
    tensors, origin, ignored = {}, {}, []
    for name, array in named.items():
        if _TRAINING_STATE.search(name):
            ignored.append(name)
            continue
        tensors[name] = _hwio_to_oihw(name, array)
        origin[name] = f"{where} tensor {name!r} {list(array.shape)}"
    return OriginalWeights(tensors, "tf", kind, origin, ignored)


def _from_npy(layers: dict[str, dict[str, np.ndarray]], where: str) -> OriginalWeights:
    named = {}
    for layer, params in layers.items():
        for param, array in params.items():
            named[f"{layer}/{NPY_BN_PARAMS.get(param, param) if layer.startswith('bn') else param}"] = array
    out = _from_tf(named, "npy", where)
    out.origin = {k: v.replace("tensor", "entry", 1) for k, v in out.origin.items()}
    return out


def _from_caffe(layers, where: str) -> OriginalWeights:
    tensors: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    ignored: list[str] = []
    by_name = {layer.name: layer for layer in layers}

    def put(name: str, array: np.ndarray, layer, index: int) -> None:
        tensors[name] = array
        origin[name] = f"{where} layer {layer.name!r} ({layer.type}) blob {index} {list(array.shape)}"

    for layer in layers:
        name, blobs = layer.name, layer.blobs
        base = by_name.get(m.group(1)) if (m := _MSC_COPY.match(name)) else None
        if base is not None:
            if len(base.blobs) != len(blobs) or not all(np.array_equal(a, b) for a, b in zip(base.blobs, blobs)):
                raise DeepLabError(f"{where}: layer {name!r} should share {base.name!r}'s weights but differs")
            ignored.append(name)  # a shared copy in a multi-scale net: same tensors as its base
            continue
        if name.startswith("scale"):
            bn = "bn" + name[len("scale") :]
            if len(blobs) != 2:
                raise DeepLabError(f"{where}: Scale layer {name!r} has {len(blobs)} blob(s), expected gamma and beta")
            put(f"{bn}/gamma", blobs[0].ravel(), layer, 0)
            put(f"{bn}/beta", blobs[1].ravel(), layer, 1)
        elif name.startswith("bn"):
            if len(blobs) != 3 or blobs[2].size != 1:
                raise DeepLabError(
                    f"{where}: BatchNorm layer {name!r} has blobs {[list(b.shape) for b in blobs]}, "
                    "expected mean·S, variance·S and the scale factor [S]"
                )
            s = float(blobs[2].ravel()[0])
            factor = 0.0 if s == 0 else 1.0 / s  # Caffe: a zero scale factor means zero statistics
            put(f"{name}/moving_mean", (blobs[0].ravel().astype(np.float64) * factor).astype(np.float32), layer, 0)
            put(f"{name}/moving_variance", (blobs[1].ravel().astype(np.float64) * factor).astype(np.float32), layer, 1)
        else:
            if len(blobs) > 2:
                raise DeepLabError(f"{where}: layer {name!r} ({layer.type}) has {len(blobs)} blobs, expected 1 or 2")
            put(f"{name}/weights", blobs[0], layer, 0)
            if len(blobs) == 2:
                put(f"{name}/biases", blobs[1].ravel(), layer, 1)
    return OriginalWeights(tensors, "caffe", "caffe", origin, ignored)


def read_original(spec: str | Path) -> OriginalWeights:
    """Read any original file (format detected from the content) into TF-named tensors."""
    kind = detect(spec)
    where = str(spec)
    if kind == "tf-v2":
        return _from_tf(read_v2(v2_prefix(spec)), kind, where)  # type: ignore[arg-type]
    if kind == "tf-v1":
        return _from_tf(read_v1(spec), kind, where)
    if kind == "npy":
        return _from_npy(read_npy_dict(spec), where)
    if kind == "caffe":
        return _from_caffe(read_caffemodel(spec), where)
    if not Path(spec).exists():
        raise DeepLabError(f"weight file not found: {spec}")
    raise DeepLabError(f"{spec}: not an original weight file (.caffemodel, TF checkpoint or .npy dictionary)")


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def infer_architecture(weights: OriginalWeights, where: str) -> tuple[dict, int | None]:
    """The network the tensors describe: (architecture dict, class count or None).

    Raises a clear error when the names are not DeepLab-v2 ResNet names (another network).
    """
    unknown = []
    for name in weights.tensors:
        try:
            original_to_state_key(name)
        except KeyError:
            unknown.append(name)
    conv1 = weights.tensors.get("conv1/weights")
    if unknown or conv1 is None or conv1.ndim != 4:
        example = _first(unknown) if unknown else "no conv1/weights"
        raise DeepLabError(
            f"{where}: not a DeepLab-v2 ResNet (DeepLab-ResNet) model: "
            f"{len(unknown)} of {len(weights.tensors)} tensors have names it does not use ({example})"
        )
    layers = {name.split("/")[0] for name in weights.tensors}
    blocks = []
    for stage in (2, 3, 4, 5):
        found = sorted(
            {f"res{m.group(1)}{m.group(2)}" for m in map(_BLOCK.match, layers) if m and m.group(1) == str(stage)}
        )
        expected = block_names(stage, len(found))
        if not found or set(found) != set(expected):
            raise DeepLabError(
                f"{where}: not a DeepLab-v2 ResNet model: stage res{stage} has blocks "
                f"[{_first(found, 4) or 'none'}], expected {_first(expected, 4)} (another ResNet depth or naming?)"
            )
        blocks.append(len(found))
    branches = sorted(int(m.group(1)) for m in map(_CLASSIFIER.match, layers) if m)
    num_classes = None
    rates = list(ASPP_RATES)
    if branches:
        if branches != list(range(len(branches))) or len(branches) != len(ASPP_RATES):
            raise DeepLabError(f"{where}: classifier branches fc1_voc12_c{branches}, expected c0..c3 (ASPP-L)")
        num_classes = int(weights.tensors.get("fc1_voc12_c0/weights", np.zeros((0,))).shape[0]) or None
    arch = {"name": "deeplab_v2_resnet101", "blocks": blocks, "width": int(conv1.shape[0]), "aspp_rates": rates}
    return check_architecture(arch, num_classes or VOC.num_classes, where), num_classes


def expected_shapes(architecture: dict, num_classes: int) -> dict[str, tuple[int, ...]]:
    """TF name → shape (this package's layout) of every tensor the architecture holds."""
    with torch.device("meta"):
        model = model_from_architecture(architecture, dataset=generic_dataset(num_classes))
    return {state_key_to_original(k): tuple(v.shape) for k, v in model.state_dict().items()}


def check_tensors(
    weights: OriginalWeights, architecture: dict, num_classes: int, where: str, *, skip_classifier: bool = False
) -> None:
    """Every tensor present, none extra, every shape right; errors name the source tensor."""

    def is_classifier(name: str) -> bool:
        return name.startswith("fc")

    expected = expected_shapes(architecture, num_classes)
    have = {k for k in weights.tensors if not (skip_classifier and is_classifier(k))}
    want = {k for k in expected if not (skip_classifier and is_classifier(k))}
    missing, extra = sorted(want - have), sorted(have - want)
    hint = " (--not-restore-last skips the classifier)" if any(map(is_classifier, missing + extra)) else ""
    if missing:
        raise DeepLabError(f"{where}: {len(missing)} tensor(s) missing: {_first(missing)}{hint}")
    if extra:
        raise DeepLabError(
            f"{where}: {len(extra)} unexpected tensor(s): {_first([weights.origin.get(e, e) for e in extra])}{hint}"
        )
    for name in sorted(want):
        shape = tuple(weights.tensors[name].shape)
        if shape != expected[name]:
            want_shape = expected[name]
            if weights.convention == "tf" and len(want_shape) == 4:  # say it in the file's layout (HWIO)
                want_shape = (want_shape[2], want_shape[3], want_shape[1], want_shape[0])
            raise DeepLabError(
                f"{where}: {weights.origin.get(name, name)} has the wrong shape: expected {list(want_shape)}"
            )


def to_state(weights: OriginalWeights, where: str, *, skip_classifier: bool = False) -> dict[str, torch.Tensor]:
    """TF-named arrays → state dict of float32 tensors (copies, so the file can be closed).

    Refuses non-float arrays (which would turn into garbage weights), NaN/infinite values and
    negative BN variances, naming the tensor.
    """
    state = {}
    for name, array in weights.tensors.items():
        if skip_classifier and name.startswith("fc"):
            continue
        if array.dtype.kind != "f":
            raise DeepLabError(f"{where}: tensor {name!r} has dtype {array.dtype}, not floating point")
        state[original_to_state_key(name)] = torch.from_numpy(np.array(array, dtype=np.float32, order="C", copy=True))
    check_state(state, where)
    return state


def read_original_weights(spec: str | Path) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """A reader for :data:`~deeplab_resnet.weights.loading.READERS`: convert on the fly.

    Checks the backbone fully here; classifier tensors that are absent or of another class
    count are left for ``load_model`` to accept (``not_restore_last``) or refuse.
    """
    where = str(spec)
    weights = read_original(spec)
    architecture, num_classes = infer_architecture(weights, where)
    check_tensors(weights, architecture, num_classes or VOC.num_classes, where, skip_classifier=num_classes is None)
    state = to_state(weights, where)
    meta = WeightsMeta(
        architecture,
        weights.convention,
        generic_dataset(num_classes or VOC.num_classes),
        f"{weights.kind}:{Path(spec).name}",
    )
    return state, meta
