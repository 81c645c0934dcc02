"""One entry point for every kind of weight file: :func:`load_model`.

:func:`read_weights` turns a user's ``--weights`` argument into a state dict plus metadata.
It reads the native safetensors format, the original releases' files (``.caffemodel``, TF V1/V2
checkpoints, ``.npy`` dictionaries: converted on the fly, see :mod:`.original`) and registry
names (``voc12``, ...: downloaded and converted once, see :mod:`.registry`) and Hugging Face
Hub repositories (``hf://owner/repo[@revision]``: downloaded, verified and cached, see
:mod:`.hf_hub`), through
:data:`READERS` (each a ``(can_read, read)`` pair).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from ..dataset_info import DatasetInfo, resolve_dataset_info
from ..errors import DeepLabError
from ..models.deeplab import DeepLabV2, model_from_architecture
from .hf_hub import is_hf_spec, read_hf
from .native import WeightsMeta, is_native, read_native
from .original import detect, read_original_weights
from .registry import REGISTRY, is_registered_name, read_registered
from .state import check_classifier_fits, load_state

__all__ = ["READERS", "load_model", "load_state", "read_weights"]

Reader = tuple[Callable[[str], bool], Callable[[str], tuple[dict[str, torch.Tensor], WeightsMeta]]]

# Tried in order; the first whose predicate accepts the spec reads it.
READERS: list[Reader] = [
    (is_hf_spec, read_hf),
    (is_native, read_native),
    (lambda spec: detect(spec) is not None, read_original_weights),
    (is_registered_name, read_registered),
]


def read_weights(spec: str | Path) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """A weight file path, registered name or ``hf://owner/repo[@revision]`` → (state dict, metadata)."""
    spec = str(spec)
    for can_read, read in READERS:
        if can_read(spec):
            return read(spec)
    if not Path(spec).exists():
        raise DeepLabError(
            f"weight file not found: {spec} (known weights names: {', '.join(REGISTRY)}; "
            "or hf://OWNER/REPO for a Hugging Face Hub repository)"
        )
    raise DeepLabError(
        f"{spec}: unsupported weight file (expected a deeplab_resnet .safetensors file, a .caffemodel, "
        "a TensorFlow checkpoint or an .npy weight dictionary; 'deeplab weights list' shows the names)"
    )


def load_model(
    weights: str | Path,
    *,
    num_classes: int | None = None,
    dataset: DatasetInfo | str | None = None,
    ignore_label: int | None = None,
    not_restore_last: bool = False,
    frozen_bn: bool = True,
    device: str | torch.device = "cpu",
) -> DeepLabV2:
    """Build the model a weight file describes and load it.

    The file is checked before anything is built (metadata bounds, model size, finite float
    tensors: see :mod:`deeplab_resnet.weights.validate`).

    Args:
        weights: a weight file (``.safetensors`` written by this package, or an original file
            that a registered reader understands).
        num_classes: the class count you expect. A different count in the file is an error
            unless ``not_restore_last`` is set.
        dataset: a description (or its name or file) to use instead of the file's metadata.
        ignore_label: replaces the dataset's ignore label.
        not_restore_last: load everything but the classifier, which is freshly initialised for
            the class count asked for.
        frozen_bn: build with frozen batch norm (the original's default).
        device: where to put the model.

    ``dataset``, ``num_classes`` and ``ignore_label`` combine with the file's metadata as in
    every command: :func:`deeplab_resnet.dataset_info.resolve_dataset_info`.
    """
    state, meta = read_weights(weights)
    info = resolve_dataset_info(dataset, from_weights=meta.dataset, num_classes=num_classes, ignore_label=ignore_label)
    check_classifier_fits(meta.num_classes, info.num_classes, not_restore_last, str(weights))
    # Everything comes from the file: build the model without values and make the file's tensors its own.
    fresh = not not_restore_last
    model = _build(meta, info, frozen_bn, without_values=fresh)
    load_state(model, state, skip_classifier=not_restore_last, source=str(weights), assign=fresh)
    return model.to(device).eval()


def _build(meta: WeightsMeta, info: DatasetInfo, frozen_bn: bool, *, without_values: bool) -> DeepLabV2:
    """The model the metadata describes; ``without_values``: on the meta device, to be given the
    file's tensors. Drawing 44 M random initial values that the weights then overwrite took about
    as long as reading the file, and copying the file's tensors into them as long again."""
    with torch.device("meta") if without_values else contextlib.nullcontext():
        return model_from_architecture(
            meta.architecture,
            convention=meta.convention,
            dataset=info,
            frozen_bn=frozen_bn,  # type: ignore[arg-type]
        )
