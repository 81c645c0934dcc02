"""One entry point for every kind of weight file: :func:`load_model`.

:func:`read_weights` turns a user's ``--weights`` argument into a state dict plus metadata.
It reads the native safetensors format, the original releases' files (``.caffemodel``, TF V1/V2
checkpoints, ``.npy`` dictionaries: converted on the fly, see :mod:`.original`) and registry
names (``voc12``, ...: downloaded and converted once, see :mod:`.registry`), through
:data:`READERS` (each a ``(can_read, read)`` pair).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..dataset_info import DatasetInfo
from ..errors import DeepLabError
from ..models.deeplab import DeepLabV2, model_from_architecture
from .native import WeightsMeta, is_native, read_native
from .original import detect, read_original_weights
from .registry import is_registered_name, read_registered

Reader = tuple[Callable[[str], bool], Callable[[str], tuple[dict[str, torch.Tensor], WeightsMeta]]]

# Tried in order; the first whose predicate accepts the spec reads it.
READERS: list[Reader] = [
    (is_native, read_native),
    (lambda spec: detect(spec) is not None, read_original_weights),
    (is_registered_name, read_registered),
]


def read_weights(spec: str | Path) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """A weight file path (or registered name) → (state dict, metadata)."""
    spec = str(spec)
    for can_read, read in READERS:
        if can_read(spec):
            return read(spec)
    if not Path(spec).exists():
        from .registry import REGISTRY

        raise DeepLabError(f"weight file not found: {spec} (known weights names: {', '.join(REGISTRY)})")
    raise DeepLabError(
        f"{spec}: unsupported weight file (expected a deeplab_resnet .safetensors file, a .caffemodel, "
        "a TensorFlow checkpoint or an .npy weight dictionary; 'deeplab weights list' shows the names)"
    )


CLASSIFIER_PREFIX = "classifier."


def load_state(
    model: DeepLabV2, state: dict[str, torch.Tensor], *, skip_classifier: bool = False, source: str = ""
) -> None:
    """Copy ``state`` into ``model``, naming every missing, unexpected or mis-shaped tensor.

    With ``skip_classifier`` the classifier tensors are neither required nor loaded (the
    original's ``--not-restore-last``: start a new class count from pretrained weights).
    """
    expected = model.state_dict()
    keep = {k: v for k, v in state.items() if not (skip_classifier and k.startswith(CLASSIFIER_PREFIX))}
    wanted = {k for k in expected if not (skip_classifier and k.startswith(CLASSIFIER_PREFIX))}
    missing = sorted(wanted - keep.keys())
    unexpected = sorted(keep.keys() - wanted)
    where = f"{source}: " if source else ""
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[0]}")
        raise DeepLabError(f"{where}weights do not fit this model: {'; '.join(parts)}")
    for key, value in keep.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise DeepLabError(
                f"{where}tensor {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(keep, strict=not skip_classifier)


def load_model(
    weights: str | Path,
    *,
    num_classes: int | None = None,
    dataset: DatasetInfo | None = None,
    not_restore_last: bool = False,
    frozen_bn: bool = True,
    device: str | torch.device = "cpu",
) -> DeepLabV2:
    """Build the model a weight file describes and load it.

    Args:
        weights: a weight file (``.safetensors`` written by this package, or an original file
            that a registered reader understands).
        num_classes: the class count you expect. A different count in the file is an error
            unless ``not_restore_last`` is set.
        dataset: class names/palette to use instead of the file's (must match the class count).
        not_restore_last: load everything but the classifier, which is freshly initialised for
            ``num_classes`` (or ``dataset``) classes.
        frozen_bn: build with frozen batch norm (the original's default).
        device: where to put the model.
    """
    state, meta = read_weights(weights)
    wanted_classes = num_classes if num_classes is not None else (dataset.num_classes if dataset else None)
    if wanted_classes is not None and wanted_classes != meta.num_classes and not not_restore_last:
        raise DeepLabError(
            f"{weights}: the weights have {meta.num_classes} classes but {wanted_classes} were asked for "
            "(use --not-restore-last to start a new classifier)"
        )
    if dataset is None:
        dataset = meta.dataset
        if wanted_classes is not None and wanted_classes != meta.num_classes:
            from ..dataset_info import generic_dataset

            dataset = generic_dataset(wanted_classes)
    elif dataset.num_classes != (wanted_classes or dataset.num_classes):
        raise DeepLabError(f"dataset has {dataset.num_classes} classes but num_classes={wanted_classes}")
    model = model_from_architecture(
        meta.architecture,
        convention=meta.convention,
        dataset=dataset,
        frozen_bn=frozen_bn,  # type: ignore[arg-type]
    )
    load_state(model, state, skip_classifier=not_restore_last, source=str(weights))
    return model.to(device).eval()
