"""GTA5 ("Playing for Data"): its labels store Cityscapes IDs, written as the 19 Cityscapes ``trainIds``.

The official download (download.visinf.tu-darmstadt.de/data/from_games): ``NN_images.zip`` and
``NN_labels.zip`` (NN = 01..10), extracted together::

    images/00001.png ... 24966.png      labels/00001.png ...   (palette PNGs of Cityscapes IDs)

Writes ``labels_trainIds/NNNNN.png`` and ``train.txt`` with all 24,966 images: domain-adaptation
work trains on all of GTA5 and evaluates on Cityscapes val. A few GTA5 labels differ in size from
their image; they are reported and left out of the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .prepare_cityscapes import cityscapes_space
from .prepare_common import PreparedDataset, find_root, orphan_warning, pair_by_name, resolve_sources, write_outputs

GTA5_COUNTS = {"train": 24966}


def prepare_gta5(
    sources: Sequence[str | Path],
    *,
    extract_to: str | Path | None = None,
    lists_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """Build the GTA5 ``trainIds`` labels, ``train.txt`` and description (see the module docstring).

    Args:
        sources: the dataset folder (holding ``images/`` and ``labels/``) or the ``NN_*.zip`` parts.
        extract_to, lists_dir, workers, progress: as for :func:`.prepare_cityscapes.prepare_cityscapes`.
    """
    folders = resolve_sources(sources, extract_to)
    root = find_root(folders, ("", "GTA5", "gta5"), ("images", "labels"), "GTA5")
    samples, orphans = pair_by_name(
        (root / "labels").glob("*.png"),
        lambda label: root / "images" / label.name,
        lambda label: root / "labels_trainIds" / label.name,
    )
    result = write_outputs(
        root, lists_dir, cityscapes_space("gta5"), {"train": samples},
        expected=GTA5_COUNTS, official="GTA5", workers=workers, progress=progress,
    )  # fmt: skip
    result.warnings[:0] = orphan_warning(orphans, "labels")
    return result
