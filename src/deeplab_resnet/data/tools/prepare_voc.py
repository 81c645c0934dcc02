"""Build PASCAL VOC 2012 ``train_aug`` from the official VOC 2012 and SBD downloads.

The labels: ``SegmentationClassAug/NAME.png``, palette PNGs of class indices. Where VOC 2012
annotates an image (``SegmentationClass/NAME.png``) its annotation wins, keeping its 255
borders; the other images take SBD's ``cls/NAME.mat`` (``GTcls.Segmentation``, no borders).

The lists, derived from the official split files, never copied:

- ``train``, ``val``, ``trainval``: VOC 2012 ``ImageSets/Segmentation``;
- ``train_aug`` = (VOC train ∪ SBD train ∪ SBD val) − VOC val, restricted to images with a label;
- ``trainval_aug`` = ``train_aug`` ∪ VOC val; ``test`` (images only) when VOC's test split is there.

With the full official downloads this gives the standard 10,582 / 1,449 / 1,464 / 2,913 /
12,031 entries. Re-running rewrites nothing that is already correct.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...atomic import atomic_write
from ...dataset_info import VOC
from ...errors import DeepLabError, missing_extra
from ...images import label_image, read_label, save_image
from ..lists import list_entries
from .archives import extract_archive, is_archive
from .label_files import label_png_is_current
from .parallel import parallel_map
from .prepare_common import write_list

# Entry counts of the standard lists built from the full official downloads.
STANDARD_COUNTS = {"train": 1464, "val": 1449, "trainval": 2913, "train_aug": 10582, "trainval_aug": 12031}
LABEL_DIR = "SegmentationClassAug"
NUM_CLASSES = 21
IGNORE = 255


# ---------------------------------------------------------------- locating the downloads


def _find_dir(path: Path, candidates: tuple[str, ...], required: tuple[str, ...], what: str) -> Path:
    for rel in candidates:
        root = path / rel if rel else path
        if all((root / r).exists() for r in required):
            return root
    needed = ", ".join(required)
    raise DeepLabError(f"{path}: not a {what} folder (looked for {needed} in {path} and {', '.join(candidates[1:])})")


def locate_voc(path: str | Path) -> Path:
    """``VOCdevkit/VOC2012`` (the folder holding ``JPEGImages`` and ``ImageSets/Segmentation``)."""
    return _find_dir(
        Path(path),
        ("", "VOC2012", "VOCdevkit/VOC2012"),
        ("JPEGImages", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt"),
        "VOC 2012",
    )


def locate_sbd(path: str | Path) -> Path:
    """SBD's ``benchmark_RELEASE/dataset`` (the folder holding ``cls/``, ``train.txt``, ``val.txt``)."""
    return _find_dir(Path(path), ("", "dataset", "benchmark_RELEASE/dataset"), ("cls", "train.txt", "val.txt"), "SBD")


def _source_dir(spec: str | Path, extract_to: Path | None, locate) -> Path:
    spec = Path(spec)
    if is_archive(spec):
        dest = extract_to if extract_to is not None else spec.parent
        return locate(extract_archive(spec, dest))
    if not spec.exists():
        raise DeepLabError(f"not found: {spec}")
    return locate(spec)


# ---------------------------------------------------------------- the lists


def read_ids(path: str | Path) -> list[str]:
    """The image IDs of a split file (one ID per line; SBD and VOC use the same format)."""
    return [fields[0] for _, fields in list_entries(path, what="split file")]


def derive_splits(
    voc_train: list[str], voc_val: list[str], sbd_train: list[str], sbd_val: list[str], labelled: set[str]
) -> dict[str, list[str]]:
    """The standard splits as sorted ID lists (see the module docstring for the rule).

    Args:
        voc_train, voc_val: VOC 2012 ``ImageSets/Segmentation`` train / val IDs.
        sbd_train, sbd_val: SBD's ``train.txt`` / ``val.txt`` IDs.
        labelled: IDs that have a segmentation (a VOC PNG or an SBD .mat).
    """
    train, val = set(voc_train), set(voc_val)
    train_aug = ((train | set(sbd_train) | set(sbd_val)) - val) & labelled
    return {
        "train": sorted(train),
        "val": sorted(val),
        "trainval": sorted(train | val),
        "train_aug": sorted(train_aug),
        "trainval_aug": sorted(train_aug | val),
    }


def list_lines(ids: list[str], *, labels: bool = True) -> list[str]:
    """The original list-file format, one ``/JPEGImages/ID.jpg /SegmentationClassAug/ID.png`` per line."""
    if labels:
        return [f"/JPEGImages/{i}.jpg /{LABEL_DIR}/{i}.png\n" for i in ids]
    return [f"/JPEGImages/{i}.jpg\n" for i in ids]


# ---------------------------------------------------------------- the labels


def _mat_segmentation(obj) -> np.ndarray:
    """``GTcls.Segmentation`` whichever way scipy returned the MATLAB struct.

    ``struct_as_record=False`` gives an object with attributes; the default gives a 1x1 record
    array whose field is a 1x1 object array around the matrix.
    """
    if hasattr(obj, "Segmentation"):
        return _mat_segmentation(obj.Segmentation)
    arr = np.asarray(obj)
    if arr.dtype.names is not None:
        if "Segmentation" not in arr.dtype.names:
            raise DeepLabError(f"GTcls has no Segmentation field (fields: {', '.join(arr.dtype.names)})")
        return _mat_segmentation(arr["Segmentation"].reshape(-1)[0])
    if arr.dtype == object and arr.size == 1:
        return _mat_segmentation(arr.reshape(-1)[0])
    return arr


def read_sbd_mat(path: str | Path) -> np.ndarray:
    """The class labels of an SBD ``cls/NAME.mat`` as ``H x W`` uint8."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise missing_extra(
            exc, "reading SBD's .mat files needs scipy: pip install 'deeplab_resnet[data]' (or pip install scipy)"
        ) from exc
    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False, variable_names=["GTcls"])
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError ... for damaged files
        raise DeepLabError(f"{path}: cannot read the .mat file ({exc.__class__.__name__}: {exc})") from exc
    if "GTcls" not in mat:
        raise DeepLabError(f"{path}: no GTcls struct (is this SBD's cls/ folder, not inst/?)")
    try:
        seg = _mat_segmentation(mat["GTcls"])
    except DeepLabError as exc:
        raise DeepLabError(f"{path}: {exc}") from exc
    if seg.ndim != 2 or seg.dtype.kind not in "ui":
        raise DeepLabError(f"{path}: GTcls.Segmentation is not a 2-D integer array ({seg.dtype}, shape {seg.shape})")
    return seg.astype(np.uint8)


@dataclass(frozen=True)
class LabelTask:
    """One label to produce: ``source`` is a VOC PNG or an SBD .mat."""

    image_id: str
    source: Path
    output: Path


def _labels_of(source: Path) -> np.ndarray:
    labels = read_sbd_mat(source) if source.suffix == ".mat" else read_label(source)
    bad = (labels >= NUM_CLASSES) & (labels != IGNORE)
    if bad.any():
        raise DeepLabError(f"{source}: label values {sorted(set(labels[bad].tolist()))} outside 0..20 and 255")
    return labels


def build_label(task: LabelTask) -> tuple[str, str]:
    """Write one label PNG unless an identical one is there. Returns (id, 'written'|'unchanged'|error)."""
    try:
        labels = _labels_of(task.source)
        if label_png_is_current(task.output, labels, VOC.palette_bytes()):
            return task.image_id, "unchanged"
        save_image(label_image(labels, VOC), task.output)
        return task.image_id, "written"
    except DeepLabError as exc:
        return task.image_id, f"error: {exc}"


# ---------------------------------------------------------------- the whole build


@dataclass
class PrepareResult:
    """What :func:`prepare_voc` did."""

    data_dir: Path
    lists_dir: Path
    counts: dict[str, int]
    written: int = 0
    unchanged: int = 0
    lists_written: list[str] = field(default_factory=list)
    images_copied: int = 0
    warnings: list[str] = field(default_factory=list)


def _ensure_images(voc: Path, sbd: Path, ids: list[str]) -> int:
    """Every listed image in ``JPEGImages``; an image only SBD has is copied from its ``img/``."""
    copied, missing = 0, []
    for image_id in ids:
        target = voc / "JPEGImages" / f"{image_id}.jpg"
        if target.is_file():
            continue
        source = sbd / "img" / f"{image_id}.jpg"
        if source.is_file():
            atomic_write(target, lambda tmp, s=source: shutil.copyfile(s, tmp))
            copied += 1
        else:
            missing.append(image_id)
    if missing:
        raise DeepLabError(
            f"{len(missing)} listed images are in neither {voc / 'JPEGImages'} nor {sbd / 'img'} "
            f"(e.g. {', '.join(missing[:3])}); is the VOC download complete?"
        )
    return copied


def _label_sources(voc: Path, sbd: Path, ids: set[str]) -> dict[str, Path]:
    """For each ID with a segmentation: VOC's PNG where it exists (it wins), else SBD's .mat."""
    sources = {}
    for image_id in ids:
        png = voc / "SegmentationClass" / f"{image_id}.png"
        mat = sbd / "cls" / f"{image_id}.mat"
        if png.is_file():
            sources[image_id] = png
        elif mat.is_file():
            sources[image_id] = mat
    return sources


def _read_voc_splits(voc: Path) -> tuple[list[str], list[str], list[str] | None]:
    seg = voc / "ImageSets" / "Segmentation"
    train, val = read_ids(seg / "train.txt"), read_ids(seg / "val.txt")
    if (seg / "trainval.txt").is_file() and set(read_ids(seg / "trainval.txt")) != set(train) | set(val):
        raise DeepLabError(f"{seg}: trainval.txt is not train.txt + val.txt; the split files are inconsistent")
    test = read_ids(seg / "test.txt") if (seg / "test.txt").is_file() else None
    return train, val, test


def prepare_voc(
    voc: str | Path,
    sbd: str | Path,
    *,
    extract_to: str | Path | None = None,
    lists_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Build ``SegmentationClassAug`` and the standard lists inside the VOC 2012 folder.

    Args:
        voc: ``VOCdevkit/VOC2012`` (or a parent of it) or the ``VOCtrainval_11-May-2012.tar`` archive.
        sbd: SBD's ``benchmark_RELEASE`` (or its ``dataset/``) or the ``benchmark.tgz`` archive.
        extract_to: where archives are extracted (default: beside each archive).
        lists_dir: where the list files go (default: ``VOC2012/lists``).
        workers: worker processes (None: one per core, at most 8).
        progress: show a progress bar on stderr.

    Returns:
        A :class:`PrepareResult`; the data directory for training is ``result.data_dir``.
    """
    extract = Path(extract_to) if extract_to is not None else None
    voc_root = _source_dir(voc, extract, locate_voc)
    sbd_root = _source_dir(sbd, extract, locate_sbd)
    voc_train, voc_val, voc_test = _read_voc_splits(voc_root)
    sbd_train, sbd_val = read_ids(sbd_root / "train.txt"), read_ids(sbd_root / "val.txt")

    wanted = set(voc_train) | set(voc_val) | set(sbd_train) | set(sbd_val)
    sources = _label_sources(voc_root, sbd_root, wanted)
    # val is scored against VOC's own annotation (with its borders), never against SBD's.
    missing_val = sorted(i for i in voc_val if sources.get(i, Path()).suffix != ".png")
    if missing_val:
        raise DeepLabError(f"{len(missing_val)} VOC val images have no SegmentationClass PNG (e.g. {missing_val[0]})")
    splits = derive_splits(voc_train, voc_val, sbd_train, sbd_val, set(sources))
    result = PrepareResult(voc_root, Path(lists_dir) if lists_dir else voc_root / "lists", {})
    unlabelled = sorted(wanted - set(sources) - set(voc_val))
    if unlabelled:
        result.warnings.append(
            f"{len(unlabelled)} listed images have no segmentation and are left out (e.g. {unlabelled[0]})"
        )

    needed = sorted(set(splits["trainval_aug"]))
    result.images_copied = _ensure_images(voc_root, sbd_root, needed)
    tasks = [LabelTask(i, sources[i], voc_root / LABEL_DIR / f"{i}.png") for i in needed]
    _build_labels(result, tasks, workers, progress)

    for name, ids in splits.items():
        write_list(result, name, list_lines(ids))
    if voc_test is not None:
        write_list(result, "test", list_lines(sorted(voc_test), labels=False))
    _compare_with_standard(result, len(voc_train), len(voc_val))
    return result


def _build_labels(result: PrepareResult, tasks: list[LabelTask], workers: int | None, progress: bool) -> None:
    """Write the label PNGs in parallel, counting written and unchanged ones; any failure is an error."""
    errors = []
    for image_id, status in parallel_map(build_label, tasks, workers=workers, desc=LABEL_DIR, progress=progress):
        if status == "written":
            result.written += 1
        elif status == "unchanged":
            result.unchanged += 1
        else:
            errors.append(f"{image_id}: {status}")
    if errors:
        raise DeepLabError(f"{len(errors)} labels could not be built; first: {errors[0]}")


def _compare_with_standard(result: PrepareResult, n_train: int, n_val: int) -> None:
    """With the full official splits, every count must be the standard one."""
    if (n_train, n_val) != (STANDARD_COUNTS["train"], STANDARD_COUNTS["val"]):
        return  # a subset or another release: nothing to compare with
    for name, expected in STANDARD_COUNTS.items():
        if result.counts.get(name) != expected:
            result.warnings.append(
                f"{name}.txt has {result.counts.get(name)} entries, the standard list has {expected}; "
                "is the SBD download complete?"
            )
