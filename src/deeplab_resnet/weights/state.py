"""Copying a state dict into a model, and whether a file's classifier fits the classes asked for.

Kept apart from :mod:`.loading` (which reads every kind of file, registry names included) so that
the converter, which the registry uses, needs nothing that imports the registry.
"""

from __future__ import annotations

import torch

from ..errors import DeepLabError
from ..models.deeplab import DeepLabV2

CLASSIFIER_PREFIX = "classifier."


def check_classifier_fits(file_classes: int | None, wanted: int, not_restore_last: bool, where: str) -> None:
    """Refuse a classifier of another class count (or none) unless a new one is to be started."""
    if not_restore_last:
        return
    if file_classes is None:
        raise DeepLabError(f"{where}: has no classifier (fc1_voc12_c0..c3); use --not-restore-last to start a new one")
    if file_classes != wanted:
        raise DeepLabError(
            f"{where}: the weights have {file_classes} classes but {wanted} were asked for "
            "(use --not-restore-last to start a new classifier)"
        )


def load_state(
    model: DeepLabV2, state: dict[str, torch.Tensor], *, skip_classifier: bool = False, source: str = "",
    assign: bool = False,
) -> None:  # fmt: skip
    """Copy ``state`` into ``model``, naming every missing, unexpected or mis-shaped tensor.

    With ``skip_classifier`` the classifier tensors are neither required nor loaded (the
    original's ``--not-restore-last``: start a new class count from pretrained weights). With
    ``assign`` the model takes ``state``'s tensors themselves (converted to its dtype, contiguous)
    instead of copies, as a model built on the meta device needs; ``state`` must not be used after.
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
    if assign:
        keep = {k: v.to(expected[k].dtype).contiguous() for k, v in keep.items()}
    model.load_state_dict(keep, strict=not skip_classifier, assign=assign)
