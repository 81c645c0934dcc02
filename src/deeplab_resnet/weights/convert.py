"""``convert``: an original weight file → the package's native file, checked tensor by tensor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..dataset_info import DatasetInfo, generic_dataset, resolve_dataset_info
from ..errors import DeepLabError
from ..models.deeplab import model_from_architecture
from .native import WeightsMeta, save_state, save_weights
from .original import OriginalWeights, check_tensors, infer_architecture, read_original, to_state
from .state import check_classifier_fits, load_state


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
    dataset: DatasetInfo | str | None = None,
    ignore_label: int | None = None,
    source: str | None = None,
    expect_architecture: dict | None = None,
    expect_convention: str | None = None,
) -> ConvertReport:
    """Convert an original ``.caffemodel`` / TF checkpoint / ``.npy`` dictionary to ``dst``.

    Every source tensor must map onto the model with the right shape and hold finite float
    values (errors name it); nothing is written unless all of them do. The result carries the
    source's convention.

    Args:
        src: the file (a V2 checkpoint: its prefix, ``.index`` or directory).
        dst: the ``.safetensors`` file to write (atomically).
        not_restore_last: skip the classifier (the original's ``--not-restore-last``): it
            is initialised afresh for the class count asked for.
        num_classes: expected class count; a different count in the file needs
            ``not_restore_last``.
        dataset: the description to store. ``dataset``, ``num_classes`` and ``ignore_label``
            combine as in every command (:func:`~deeplab_resnet.dataset_info.resolve_dataset_info`);
            the original files carry no class names, so the file's own are VOC's for 21 classes,
            generic otherwise.
        ignore_label: replaces the dataset's ignore label.
        source: text for the file's ``source`` metadata (default: the file name).
        expect_architecture: keys (``blocks``, ``width``) the file must match (the registry's check).
        expect_convention: the convention the file must have.
    """
    where = str(src)
    if Path(dst).resolve() == Path(src).resolve():
        raise DeepLabError(f"{dst}: the output would overwrite the input")
    weights = read_original(src)
    architecture, file_classes = infer_architecture(weights, where)
    _check_expected(weights, architecture, expect_architecture, expect_convention, where)
    info = resolve_dataset_info(
        dataset,
        from_weights=generic_dataset(file_classes) if file_classes else None,
        num_classes=num_classes,
        ignore_label=ignore_label,
    )
    check_classifier_fits(file_classes, info.num_classes, not_restore_last, where)
    check_tensors(weights, architecture, info.num_classes, where, skip_classifier=not_restore_last)
    state = to_state(weights, where, skip_classifier=not_restore_last)
    meta = WeightsMeta(architecture, weights.convention, info, source or f"{weights.kind}:{Path(src).name}")
    _write(state, meta, dst, fresh_classifier=not_restore_last, where=where)
    return ConvertReport(
        weights.kind, weights.convention, len(state), info.num_classes, architecture, tuple(weights.ignored),
        not_restore_last,
    )  # fmt: skip


def _check_expected(
    weights: OriginalWeights,
    architecture: dict,
    expect_architecture: dict | None,
    expect_convention: str | None,
    where: str,
) -> None:
    """Refuse a file that is not the model the caller (the registry) expects."""
    for key, value in (expect_architecture or {}).items():
        if architecture.get(key) != value:
            raise DeepLabError(f"{where}: {key} is {architecture.get(key)}, expected {value} (not the expected model)")
    if expect_convention is not None and weights.convention != expect_convention:
        raise DeepLabError(f"{where}: a {weights.kind} file, expected one in the {expect_convention} convention")


def _write(state: dict, meta: WeightsMeta, dst: str | Path, *, fresh_classifier: bool, where: str) -> None:
    """Write the converted tensors; with ``fresh_classifier`` the classifier gets the model's initialisation."""
    if fresh_classifier:
        model = model_from_architecture(meta.architecture, convention=meta.convention, dataset=meta.dataset)
        load_state(model, state, skip_classifier=True, source=where)
        save_weights(model, dst, source=meta.source)
    else:  # every tensor was checked before: write them as they are (no model to build)
        save_state(state, meta, dst)
