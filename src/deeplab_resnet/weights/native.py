"""The package's own weight file: safetensors tensors plus metadata that makes it self-describing.

Metadata (all strings, as safetensors requires): ``format`` = ``deeplab_resnet``,
``format_version``, ``architecture`` (JSON), ``convention`` (``caffe``/``tf``), ``dataset``
(JSON: class names, palette, mean in BGR, ignore label), ``channel_order`` (``BGR``) and
``source`` (where the weights came from). Reading checks all of it, and the tensors, before
anything is built from them (:mod:`.validate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ..atomic import atomic_write_bytes
from ..dataset_info import DatasetInfo, check_dataset_values
from ..errors import DeepLabError
from ..models.deeplab import DeepLabV2
from .validate import check_architecture, check_convention, check_state

FORMAT = "deeplab_resnet"
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class WeightsMeta:
    """What a weight file says about itself."""

    architecture: dict
    convention: str
    dataset: DatasetInfo
    source: str = ""

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def to_strings(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": json.dumps(self.architecture),
            "convention": self.convention,
            "dataset": json.dumps(self.dataset.to_dict()),
            "channel_order": "BGR",
            "source": self.source,
        }

    @classmethod
    def from_strings(cls, meta: dict[str, str], path: str = "") -> WeightsMeta:
        """Parse and check the metadata (see :mod:`.validate`): errors name ``path`` and the field."""
        if meta.get("format") != FORMAT:
            raise DeepLabError(f"{path}: a safetensors file, but not a deeplab_resnet weight file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DeepLabError(
                f"{path}: format_version {meta.get('format_version')!r}; this deeplab_resnet reads version "
                f"{FORMAT_VERSION} (a newer release wrote it? upgrade deeplab_resnet)"
            )
        for key in ("architecture", "convention", "dataset"):
            if key not in meta:
                raise DeepLabError(f"{path}: damaged deeplab_resnet metadata (no {key!r})")
        dataset = _parse_dataset(meta["dataset"], path)
        return cls(
            architecture=check_architecture(_json_field(meta, "architecture", path), dataset.num_classes, path),
            convention=check_convention(meta["convention"], path),
            dataset=dataset,
            source=meta.get("source", ""),
        )


def _json_field(meta: dict[str, str], key: str, path: str) -> object:
    try:
        return json.loads(meta[key])
    except (ValueError, RecursionError) as exc:
        raise DeepLabError(f"{path}: metadata {key!r} is not valid JSON ({exc.__class__.__name__})") from exc


def _parse_dataset(text: str, path: str) -> DatasetInfo:
    """The dataset metadata, held to the same value checks as a description file.

    Unknown keys are allowed (a newer release may add notes); values are not let through.
    """
    data = _json_field({"dataset": text}, "dataset", path)
    if not isinstance(data, dict):
        raise DeepLabError(f"{path}: metadata 'dataset' must be a JSON object")
    try:
        info = DatasetInfo.from_dict(data)
        check_dataset_values(info)
    except DeepLabError as exc:
        raise DeepLabError(f"{path}: metadata 'dataset': {exc}") from exc
    return info


def meta_of(model: DeepLabV2, source: str = "") -> WeightsMeta:
    return WeightsMeta(model.architecture, model.convention, model.dataset, source)


def save_weights(model: DeepLabV2, path: str | Path, *, source: str = "") -> None:
    """Write ``model``'s weights and metadata to ``path`` (atomically)."""
    save_state(model.state_dict(), meta_of(model, source), path)


def save_state(state: dict[str, torch.Tensor], meta: WeightsMeta, path: str | Path) -> None:
    """Write a complete state dict with its metadata (what :func:`save_weights` writes for a model).

    The caller guarantees that ``state`` is exactly the state dict of the model ``meta``
    describes (the converters check every name and shape first).
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    strings = meta.to_strings()
    atomic_write_bytes(path, save(tensors, metadata=strings))


def read_native(path: str | Path) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """Read a native weight file: (state dict, metadata). Clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DeepLabError(f"weight file not found: {path}")
    # The metadata is checked before the tensors are read: it bounds what gets built from them.
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DeepLabError(f"{path}: not a readable safetensors file ({exc})") from exc
    meta = WeightsMeta.from_strings(raw_meta, str(path))
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DeepLabError(f"{path}: not a readable safetensors file ({exc})") from exc
    check_state(state, str(path))
    return state, meta


def is_native(path: str | Path) -> bool:
    """True when ``path`` looks like a safetensors file (by its header, not its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len < 100_000_000 and head[8:9] == b"{"
