"""Class subsets for ``deeplab evaluate --classes``: which classes a subset mIoU is taken over.

The SYNTHIA->Cityscapes domain-adaptation papers report mIoU over 16 and over 13 of the 19
Cityscapes classes; ``synthia16`` and ``synthia13`` name those subsets (the tables live in
:mod:`deeplab_resnet.data.tools.label_tables`). Any other subset is a comma-separated list of
class names or indices.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..data.tools.label_tables import CITYSCAPES_CLASSES, SYNTHIA_13_CLASSES, SYNTHIA_16_CLASSES
from ..errors import DeepLabError

NAMED_SUBSETS: dict[str, tuple[int, ...]] = {"synthia16": SYNTHIA_16_CLASSES, "synthia13": SYNTHIA_13_CLASSES}


def parse_class_subset(text: str, class_names: Sequence[str]) -> tuple[int, ...]:
    """``--classes`` → sorted class indices: a named subset, or names/indices separated by commas."""
    key = text.strip().lower()
    if key in NAMED_SUBSETS:
        subset = NAMED_SUBSETS[key]
        if len(class_names) != len(CITYSCAPES_CLASSES):
            raise DeepLabError(
                f"--classes {key}: a subset of the {len(CITYSCAPES_CLASSES)} Cityscapes classes, "
                f"but the model has {len(class_names)} classes"
            )
        return subset
    lookup = {name.lower(): i for i, name in enumerate(class_names)}
    indices = set()
    for item in (part.strip() for part in text.split(",")):
        if item.isdigit() and int(item) < len(class_names):
            indices.add(int(item))
        elif item.lower() in lookup:
            indices.add(lookup[item.lower()])
        else:
            raise DeepLabError(
                f"--classes: {item!r} is neither a class name nor an index below {len(class_names)} "
                f"(names: {', '.join(class_names)}; or one of {', '.join(NAMED_SUBSETS)})"
            )
    return tuple(sorted(indices))
