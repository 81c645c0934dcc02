"""``convert``: an original weight file → the package's native file, checked tensor by tensor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..dataset_info import DatasetInfo
from ..errors import DeepLabError
from ..models.deeplab import model_from_architecture
from .loading import load_state
from .native import WeightsMeta, save_state, save_weights
from .original import check_tensors, dataset_for, infer_architecture, read_original, to_state


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion did (printed by ``deeplab convert``)."""

    kind: str
    convention: str
    tensors: int
    num_classes: int
    architecture: dict
    ignored: tuple[str, ...] = ()
    classifier_skipped: bool = False

    def summary(self) -> str:
        depth = (
            "ResNet-101"
            if self.architecture.get("blocks") == [3, 4, 23, 3]
            else f"blocks {self.architecture['blocks']}"
        )
        text = (
            f"{self.kind}: {self.tensors} tensors ({depth}, {self.num_classes} classes), convention {self.convention}"
        )
        if self.classifier_skipped:
            text += "; classifier not restored (newly initialised)"
        if self.ignored:
            text += f"; left out {len(self.ignored)} optimizer tensor(s) / shared multi-scale copies"
        return text


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    not_restore_last: bool = False,
    num_classes: int | None = None,
    dataset: DatasetInfo | None = None,
    source: str | None = None,
    expect_architecture: dict | None = None,
    expect_convention: str | None = None,
) -> ConvertReport:
    """Convert an original ``.caffemodel`` / TF checkpoint / ``.npy`` dictionary to ``dst``.

    Every source tensor must map onto the model with the right shape (errors name it);
    nothing is written unless all of them do. The result carries the source's convention.

    Args:
        src: the file (a V2 checkpoint: its prefix, ``.index`` or directory).
        dst: the ``.safetensors`` file to write (atomically).
        not_restore_last: skip the classifier (the original's ``--not-restore-last``): it
            is initialised afresh for ``num_classes``.
        num_classes: expected class count; a different count in the file needs
            ``not_restore_last``.
        dataset: class names/palette to store (default: VOC for 21 classes, else generic).
        source: text for the file's ``source`` metadata (default: the file name).
        expect_architecture: keys (``blocks``, ``width``) the file must match (the registry's check).
        expect_convention: the convention the file must have.
    """
    where = str(src)
    if Path(dst).resolve() == Path(src).resolve():
        raise DeepLabError(f"{dst}: the output would overwrite the input")
    weights = read_original(src)
    architecture, file_classes = infer_architecture(weights, where)
    for key, value in (expect_architecture or {}).items():
        if architecture.get(key) != value:
            raise DeepLabError(f"{where}: {key} is {architecture.get(key)}, expected {value} (not the expected model)")
    if expect_convention is not None and weights.convention != expect_convention:
        raise DeepLabError(f"{where}: a {weights.kind} file, expected one in the {expect_convention} convention")
    if dataset is not None and num_classes is not None and dataset.num_classes != num_classes:
        raise DeepLabError(f"the dataset has {dataset.num_classes} classes but --num-classes is {num_classes}")
    classes = num_classes or (dataset.num_classes if dataset else None) or file_classes
    if not not_restore_last:
        if file_classes is None:
            raise DeepLabError(
                f"{where}: has no classifier (fc1_voc12_c0..c3); use --not-restore-last to start a new one"
            )
        if classes != file_classes:
            raise DeepLabError(
                f"{where}: the classifier has {file_classes} classes but {classes} were asked for "
                "(use --not-restore-last to start a new classifier)"
            )
    classes = classes or 21
    check_tensors(weights, architecture, classes, where, skip_classifier=not_restore_last)
    state = to_state(weights, skip_classifier=not_restore_last)
    source = source or f"{weights.kind}:{Path(src).name}"
    if not_restore_last:  # the new classifier needs the model's initialisation
        model = model_from_architecture(
            architecture, convention=weights.convention, dataset=dataset or dataset_for(classes)
        )
        load_state(model, state, skip_classifier=True, source=where)
        save_weights(model, dst, source=source)
    else:  # every tensor was checked above: write them as they are (no model to build)
        meta = WeightsMeta(architecture, weights.convention, dataset or dataset_for(classes), source)
        save_state(state, meta, dst)
    return ConvertReport(
        weights.kind, weights.convention, len(state), classes, architecture, tuple(weights.ignored), not_restore_last
    )
