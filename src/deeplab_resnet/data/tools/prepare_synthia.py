"""SYNTHIA-RAND-CITYSCAPES: its 16-bit labels, written as the 19 Cityscapes ``trainIds``.

The official download (synthia-dataset.net) is ``SYNTHIA_RAND_CITYSCAPES.rar``; Python cannot
read RAR, so extract it first (``unrar x`` or ``7z x``) and pass the folder::

    RAND_CITYSCAPES/RGB/0000000.png ...           9,400 images, 1280x760
    RAND_CITYSCAPES/GT/LABELS/0000000.png ...     16-bit-per-channel RGB PNGs

The class ID is in the *first* channel of each label (the second holds instance IDs), stored in
16 bits: PIL keeps only the high byte of such files, so they are decoded here with both bytes.
Writes ``GT/LABELS_trainIds/NAME.png`` in the Cityscapes label space (the 16 classes SYNTHIA
shares with Cityscapes; every other ID is 255, see :mod:`.label_tables`) and ``train.txt`` with
all images, as the SYNTHIA→Cityscapes papers train on all of them. Those papers report mIoU over
16 classes and over 13; the classes are ``SYNTHIA_16_CLASSES`` / ``SYNTHIA_13_CLASSES``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...dataset_info import load_dataset_info
from ...errors import DeepLabError
from .label_tables import SYNTHIA_ID_TO_TRAIN
from .prepare_common import DatasetLayout, FoundSplits, LabelSpace, orphan_warning, pair_by_name

SYNTHIA_COUNTS = {"train": 9400}
# PIL decodes 16-bit PNG samples through these raw modes, which keep the high byte; the
# little-endian modes of the same width pick the other byte of each big-endian sample.
_LOW_BYTE_MODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def _decode(path: Path, *, low_bytes: bool) -> np.ndarray:
    with Image.open(path) as img:
        if low_bytes:
            tile = img.tile[0]
            raw = tile[3] if isinstance(tile[3], str) else tile[3][0]
            img.tile = [(tile[0], tile[1], tile[2], _LOW_BYTE_MODES[raw])]
        img.load()
        return np.asarray(img)


def _raw_mode(path: Path) -> tuple[str, str]:
    with Image.open(path) as img:
        args = img.tile[0][3] if img.tile else ""
        return img.mode, args if isinstance(args, str) else args[0]


def read_synthia_label(path: Path) -> np.ndarray:
    """The class IDs of a SYNTHIA ``GT/LABELS`` file (its first channel, all 16 bits) as int32."""
    try:
        mode, raw = _raw_mode(path)
        if raw in _LOW_BYTE_MODES:
            high = _decode(path, low_bytes=False)[..., 0].astype(np.int32)
            low = _decode(path, low_bytes=True)[..., 0].astype(np.int32)
            return high * 256 + low
        array = _decode(path, low_bytes=False)
    except UnidentifiedImageError as exc:
        raise DeepLabError(f"{path}: not an image file PIL can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DeepLabError(f"{path}: damaged or truncated label ({exc})") from exc
    # An 8-bit or single-channel copy (some re-distributions) holds the IDs directly.
    return (array[..., 0] if array.ndim == 3 else array).astype(np.int32)


def _refuse_rar(path: Path) -> str | None:
    if path.suffix.lower() == ".rar":
        return "SYNTHIA is distributed as RAR, which Python cannot read; extract it (unrar x FILE) and pass the folder"
    return None


def _find_splits(root: Path) -> FoundSplits:
    samples, orphans = pair_by_name(
        (root / "GT" / "LABELS").glob("*.png"),
        lambda label: root / "RGB" / label.name,
        lambda label: root / "GT" / "LABELS_trainIds" / label.name,
    )
    return FoundSplits({"train": samples}, notes=orphan_warning(orphans, "labels"))


def layout() -> DatasetLayout:
    """SYNTHIA for :func:`.prepare_common.prepare_dataset`: the extracted ``RAND_CITYSCAPES`` folder
    (or its parent)."""
    return DatasetLayout(
        official="SYNTHIA-RAND-CITYSCAPES", what="SYNTHIA-RAND-CITYSCAPES",
        root_names=("", "RAND_CITYSCAPES", "SYNTHIA_RAND_CITYSCAPES/RAND_CITYSCAPES"), required=("RGB", "GT/LABELS"),
        space=LabelSpace(load_dataset_info("synthia"), dict(SYNTHIA_ID_TO_TRAIN), read_synthia_label),
        find_splits=_find_splits, counts=SYNTHIA_COUNTS, refuse=_refuse_rar,
    )  # fmt: skip
