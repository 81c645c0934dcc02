"""How well an int8 model agrees with float32, measured on held-out images and recorded beside it.

Whether int8 keeps the labels depends on the weights (a trained network damps rounding noise, a
random one amplifies it) and on the CPU (without VNNI, AVX2's u8 x s8 dot products saturate), so
no fixed rule can promise the accuracy bar. ``deeplab quantize --check IMAGES`` runs eager float32
and each installed int8 engine on images that were not used for calibration, and writes the
result as ``<int8 file>.check.json``; ``--backend auto`` takes an int8 engine only when that
record shows it within the bar (:func:`~.agreement.meets_target`) on a CPU of the same int8 kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..models.deeplab import DeepLabV2
from . import cpu_features
from .agreement import agreement_over, meets_target
from .quantize import network_inputs
from .runtime import ONNX_ENGINES, installed, make_backend

INT8_ENGINES = tuple(f"{engine}-int8" for engine in ONNX_ENGINES)  # in auto's order of preference


def check_file(int8_path: str | Path) -> Path:
    """Where the check of ``int8_path`` is recorded."""
    return Path(int8_path).with_suffix(".check.json")


def check_int8(
    model: DeepLabV2, int8_path: str | Path, images: Sequence[str | Path], *, threads: int | None = None
) -> dict:  # fmt: skip
    """Agreement of each installed int8 engine with eager float32 over ``images``; recorded and returned.

    The images go through the network as the segmenter sends them (the weights' test protocol);
    the pixels counted are the images' own, not their padding.
    """
    engines = {
        name: make_backend(name, model, onnx_path=int8_path, threads=threads)
        for name in INT8_ENGINES if installed(name.removesuffix("-int8"))
    }  # fmt: skip
    inputs = network_inputs(model, images)
    stats = agreement_over(model.eval(), engines, (torch.from_numpy(x) for x, _ in inputs), [s for _, s in inputs])
    record = {
        "images": len(images),
        "pixels": "the images' own (their protocol padding not counted)",
        "cpu": cpu_features.cpu_model(),
        "vnni": cpu_features.has_vnni(),
        "engines": {
            name: {k: s[k] for k in ("argmax_agreement", "worst_image_agreement", "rel_l2", "per_image")}
            for name, s in stats.items()
        },
    }
    atomic_write_text(check_file(int8_path), json.dumps(record, indent=2) + "\n")
    return record


def read_check(int8_path: str | Path) -> dict | None:
    """The recorded check of ``int8_path``, or ``None`` when there is none or it is not a record
    this module wrote (a hand-edited or damaged file never makes auto take int8)."""
    try:
        record = json.loads(check_file(int8_path).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("engines"), dict):
        return None
    images, vnni = record.get("images"), record.get("vnni")
    if type(images) is not int or images < 1 or type(vnni) is not bool:
        return None
    record["engines"] = {  # entries whose numbers are fractions (a hand-edited file may have others)
        name: stats for name, stats in record["engines"].items()
        if isinstance(stats, dict) and all(_fraction(stats.get(k)) for k in ("argmax_agreement", "worst_image_agreement"))
    }  # fmt: skip
    return record


def _fraction(value: object) -> bool:
    """Whether ``value`` is a number from 0 to 1 (not a bool, not NaN or infinite)."""
    return type(value) in (int, float) and 0.0 <= value <= 1.0


def engines_within_bar(record: dict | None, *, vnni: bool | None = None) -> tuple[str, ...]:
    """The int8 engines whose recorded agreement meets the bar, if it was measured on a CPU of this
    int8 kind (with or without VNNI: the kernels, and so the rounding, differ)."""
    if not record or record.get("vnni") is not (cpu_features.has_vnni() if vnni is None else vnni):
        return ()
    stats = {name: record["engines"].get(name) for name in INT8_ENGINES}
    return tuple(
        name for name, s in stats.items()
        if isinstance(s, dict) and _fraction(s.get("argmax_agreement")) and meets_target(s, "int8")
    )  # fmt: skip


def summary(record: dict) -> str:
    """One line per engine, e.g. ``openvino-int8: 99.71% of pixels (worst image 99.20%) over 10 images``."""
    return "\n".join(
        f"{name}: {s['argmax_agreement']:.2%} of pixels agree with float32 (worst image "
        f"{s['worst_image_agreement']:.2%}) over {record['images']} image{'' if record['images'] == 1 else 's'}"
        + ("" if meets_target(s, "int8") else ", below the 99.5% bar")
        for name, s in record["engines"].items()
    )
