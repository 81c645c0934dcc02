"""What a DeepLab-v2 network's inputs and outputs mean, apart from the network itself.

A :class:`ModelSpec` is everything code around a network needs: which original's numerics it
follows (``convention``, docs/original.md §1.1; it decides the bilinear used to resize inputs and
logits), what its classes are (``dataset``: names, colours, the input mean, the ignore label) and
how to rebuild it (``architecture``). A :class:`~deeplab_resnet.models.DeepLabV2` carries one as
``model.spec``; an exported network (ONNX, TorchScript) stores it as metadata, so any callable that
maps a preprocessed batch to stride-8 logits can be used with the spec of the model it came from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..conventions import Convention, check_convention
from ..dataset_info import DatasetInfo
from ..errors import DeepLabError


@dataclass(frozen=True)
class ModelSpec:
    """The convention, dataset and architecture of a network; immutable.

    Args:
        convention: ``"caffe"`` or ``"tf"`` (docs/original.md §1.1).
        dataset: class names, palette, mean and ignore label.
        architecture: how to rebuild the network (``name``, ``blocks``, ``width``, ``aspp_rates``);
            held read-only, :meth:`architecture_dict` gives a copy.
    """

    convention: Convention
    dataset: DatasetInfo
    architecture: MappingProxyType = field(default_factory=lambda: MappingProxyType({}), compare=False)

    def __post_init__(self) -> None:
        check_convention(self.convention)
        # A read-only view of a private copy: a caller's later edits to its dict cannot change the spec.
        object.__setattr__(self, "architecture", MappingProxyType(copy.deepcopy(dict(self.architecture))))

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def mean_bgr(self) -> tuple[float, float, float]:
        return self.dataset.mean_bgr

    def architecture_dict(self) -> dict[str, Any]:
        """A plain (mutable, JSON-serialisable) copy of ``architecture``."""
        return copy.deepcopy(dict(self.architecture))

    # A mapping proxy can be neither deep-copied nor pickled; the spec is immutable, so a deep copy
    # (of a model, say) may share it, and a pickle stores the plain dict.
    def __deepcopy__(self, memo: dict) -> ModelSpec:
        return self

    def __reduce__(self):
        return (type(self), (self.convention, self.dataset, self.architecture_dict()))

    def to_metadata(self) -> dict[str, Any]:
        """The spec as JSON-ready metadata (what exported files store; :meth:`from_metadata` reads it)."""
        return {
            "convention": self.convention,
            "architecture": self.architecture_dict(),
            "num_classes": self.num_classes,
            "mean_bgr": list(self.mean_bgr),
            "dataset": self.dataset.to_dict(),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], where: str = "metadata") -> ModelSpec:
        """The spec stored by :meth:`to_metadata`; ``where`` names the file in error messages."""
        if "convention" not in meta or "dataset" not in meta:
            raise DeepLabError(f"{where}: no deeplab_resnet model description (export it with 'deeplab export')")
        try:
            return cls(meta["convention"], DatasetInfo.from_dict(meta["dataset"]), meta.get("architecture", {}))
        except ValueError as exc:
            raise DeepLabError(f"{where}: {exc}") from exc
