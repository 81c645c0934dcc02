"""The official label tables of the datasets ``deeplab data prepare-*`` converts, with their sources.

Only facts are taken from the sources (IDs, names, colours, counts); every table maps a dataset's
stored label value to its index in the training label space, 255 meaning "ignore". See
``docs/datasets.md`` for the tables in prose.

Sources:

- Cityscapes: cityscapesScripts ``cityscapesscripts/helpers/labels.py`` (github.com/mcordts/
  cityscapesScripts): 34 IDs stored in ``*_gtFine_labelIds.png`` (0..33; "license plate" has ID
  -1 and is never drawn), 19 of them evaluated as ``trainId`` 0..18, the rest 255.
- GTA5 ("Playing for Data", download.visinf.tu-darmstadt.de/data/from_games): its label PNGs
  store the Cityscapes IDs, so they take the Cityscapes table.
- SYNTHIA-RAND-CITYSCAPES: the README shipped with the download: class IDs 0..22 in the *first*
  channel of a 16-bit-per-channel RGB PNG (``GT/LABELS``); the second channel holds instance IDs.
  Parking-slot, terrain, truck and train never occur in this subset, which is why the
  domain-adaptation papers evaluate SYNTHIA→Cityscapes on 16 classes (and on 13, also without
  wall, fence and pole).
- COCO-Stuff: github.com/nightrome/cocostuff ``labels.md`` and README: IDs 1..182 (91 thing,
  91 stuff), 0 = unlabeled; 11 thing IDs have no annotation in COCO. The
  ``stuffthingmaps_trainval2017`` PNGs store ``ID - 1`` (0..181) and 255 for unlabeled.
- ADE20K (the SceneParsing benchmark, ``ADEChallengeData2016``): ``objectInfo150.csv`` of
  github.com/CSAILVision/sceneparsing: annotation PNGs hold 1..150, 0 = "other" (not scored).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...atomic import atomic_write_text

IGNORE = 255


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int  # 255: not evaluated
    colour: tuple[int, int, int]


# cityscapesScripts labels.py: name, id, trainId, colour (category and flags left out).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, (0, 0, 0)),
    CityscapesLabel("static", 4, 255, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, (70, 130, 180)),
    CityscapesLabel("person", 24, 11, (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, (255, 0, 0)),
    CityscapesLabel("car", 26, 13, (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, (119, 11, 32)),
)  # "license plate" (ID -1) is not listed: no pixel carries it in the label PNGs.

CITYSCAPES_CLASSES: tuple[str, ...] = tuple(
    lab.name for lab in sorted(CITYSCAPES_LABELS, key=lambda lab: lab.train_id) if lab.train_id != IGNORE
)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    lab.colour for lab in sorted(CITYSCAPES_LABELS, key=lambda lab: lab.train_id) if lab.train_id != IGNORE
)
CITYSCAPES_ID_TO_TRAIN: dict[int, int] = {lab.id: lab.train_id for lab in CITYSCAPES_LABELS}

# SYNTHIA-RAND-CITYSCAPES README: the class ID stored in GT/LABELS.
SYNTHIA_IDS: dict[int, str] = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation",
    7: "pole", 8: "car", 9: "traffic sign", 10: "pedestrian", 11: "bicycle", 12: "motorcycle",
    13: "parking-slot", 14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider",
    18: "truck", 19: "bus", 20: "train", 21: "wall", 22: "lanemarking",
}  # fmt: skip

# The 16 SYNTHIA classes that also are Cityscapes classes, by their Cityscapes name ("pedestrian"
# is Cityscapes' "person"). Void, parking-slot, road-work and lanemarking have no Cityscapes
# class; terrain, truck and train never occur in SYNTHIA-RAND-CITYSCAPES and are left out as the
# 16-class protocol does, so a SYNTHIA-trained model is never told those pixels are absent.
_SYNTHIA_AS_CITYSCAPES: dict[int, str] = {
    1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
    8: "car", 9: "traffic sign", 10: "person", 11: "bicycle", 12: "motorcycle",
    15: "traffic light", 17: "rider", 19: "bus", 21: "wall",
}  # fmt: skip
SYNTHIA_ID_TO_TRAIN: dict[int, int] = {
    sid: CITYSCAPES_CLASSES.index(_SYNTHIA_AS_CITYSCAPES[sid]) if sid in _SYNTHIA_AS_CITYSCAPES else IGNORE
    for sid in SYNTHIA_IDS
}

# SYNTHIA→Cityscapes evaluation protocols, as Cityscapes trainIds: mIoU over these classes only.
SYNTHIA_16_CLASSES: tuple[int, ...] = tuple(sorted(v for v in SYNTHIA_ID_TO_TRAIN.values() if v != IGNORE))
SYNTHIA_13_CLASSES: tuple[int, ...] = tuple(
    c for c in SYNTHIA_16_CLASSES if CITYSCAPES_CLASSES[c] not in ("wall", "fence", "pole")
)

# COCO-Stuff labels.md: ID 1..182 (index 0 here is ID 1).
COCOSTUFF_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window",
    "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip
# The thing IDs COCO never annotated ("Removed from COCO" in labels.md).
COCOSTUFF_UNUSED_IDS: tuple[int, ...] = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
COCOSTUFF_USED_IDS: tuple[int, ...] = tuple(i for i in range(1, 183) if i not in COCOSTUFF_UNUSED_IDS)
# The stored value of ID i is i - 1, unlabeled is stored as 255; the 171-class space numbers the
# used IDs in order (the unused ones, should they occur, are ignored like unlabeled).
COCOSTUFF_STORED_TO_171: dict[int, int] = {
    **{sid - 1: IGNORE for sid in COCOSTUFF_UNUSED_IDS},
    **{sid - 1: k for k, sid in enumerate(COCOSTUFF_USED_IDS)},
    IGNORE: IGNORE,
}
COCOSTUFF_STORED_TO_182: dict[int, int] = {**{i: i for i in range(182)}, IGNORE: IGNORE}

# ADE20K SceneParsing objectInfo150.csv: the first name of each class, Idx 1..150.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step",
    "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip
# Stored 0 ("other") is ignored; stored k is class k - 1.
ADE20K_STORED_TO_TRAIN: dict[int, int] = {0: IGNORE, **{k: k - 1 for k in range(1, 151)}}


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A ``size``-entry uint8 table: ``table[stored value] = training label``, 255 where unmapped."""
    table = np.full(size, IGNORE, dtype=np.uint8)
    for stored, label in mapping.items():
        if 0 <= stored < size:
            table[stored] = label
    return table


# ---------------------------------------------------------------- the built-in descriptions

_CITYSCAPES_SOURCE = "cityscapesScripts helpers/labels.py (github.com/mcordts/cityscapesScripts)"
_SUBSETS = (
    "SYNTHIA->Cityscapes papers report mIoU over 16 classes (trainIds "
    + " ".join(map(str, SYNTHIA_16_CLASSES))
    + ") and over 13 (trainIds "
    + " ".join(map(str, SYNTHIA_13_CLASSES))
    + ")."
)


def builtin_description_dicts() -> dict[str, dict]:
    """The built-in dataset descriptions, derived from the tables above.

    ``src/deeplab_resnet/data/descriptions/*.json`` are these, written by
    ``python -m deeplab_resnet.data.tools.label_tables``; a test checks that they agree.
    """
    cityscapes = {"class_names": list(CITYSCAPES_CLASSES), "palette": [list(c) for c in CITYSCAPES_PALETTE]}
    return {
        "cityscapes": {
            "name": "cityscapes", **cityscapes,
            "description": "Cityscapes fine annotations, the 19 evaluated classes (trainIds); 255 = ignore",
            "source": _CITYSCAPES_SOURCE,
            "notes": "Labels from 'deeplab data prepare-cityscapes': gtFine/*/*_gtFine_labelTrainIds.png.",
        },
        "gta5": {
            "name": "gta5", **cityscapes,
            "description": "GTA5 (Playing for Data) in the 19 Cityscapes classes; 255 = ignore",
            "source": "download.visinf.tu-darmstadt.de/data/from_games; IDs as " + _CITYSCAPES_SOURCE,
            "notes": "Train on all 24,966 images, evaluate on Cityscapes val (GTA5->Cityscapes).",
        },
        "synthia": {
            "name": "synthia", **cityscapes,
            "description": "SYNTHIA-RAND-CITYSCAPES in the 19 Cityscapes classes (16 occur); 255 = ignore",
            "source": "the README of SYNTHIA-RAND-CITYSCAPES (synthia-dataset.net)",
            "notes": _SUBSETS,
        },
        "cocostuff": {
            "name": "cocostuff", "class_names": [COCOSTUFF_NAMES[i - 1] for i in COCOSTUFF_USED_IDS],
            "description": "COCO-Stuff-164k, the 171 annotated classes in ID order; 255 = unlabeled",
            "source": "labels.md of github.com/nightrome/cocostuff",
        },
        "cocostuff182": {
            "name": "cocostuff182", "class_names": list(COCOSTUFF_NAMES),
            "description": "COCO-Stuff-164k, all 182 IDs as stored (ID - 1); 255 = unlabeled",
            "source": "labels.md of github.com/nightrome/cocostuff",
            "notes": "IDs " + " ".join(map(str, COCOSTUFF_UNUSED_IDS)) + " are not annotated in COCO.",
        },
        "ade20k": {
            "name": "ade20k", "class_names": list(ADE20K_CLASSES),
            "description": "ADE20K SceneParsing, 150 classes; 'other' (stored 0) = 255",
            "source": "objectInfo150.csv of github.com/CSAILVision/sceneparsing",
        },
    }  # fmt: skip


def write_builtin_descriptions(folder: str | Path) -> list[Path]:
    """Write :func:`builtin_description_dicts` as ``NAME.json`` files (for maintainers)."""

    def value(v) -> str:  # lists one item a line, so that a diff shows which class changed
        if isinstance(v, list):
            return "[\n" + ",\n".join(f"    {json.dumps(item)}" for item in v) + "\n  ]"
        return json.dumps(v)

    written = []
    for name, d in builtin_description_dicts().items():
        path = Path(folder) / f"{name}.json"
        atomic_write_text(path, "{\n" + ",\n".join(f"  {json.dumps(k)}: {value(v)}" for k, v in d.items()) + "\n}\n")
        written.append(path)
    return written


if __name__ == "__main__":
    from .. import descriptions

    for p in write_builtin_descriptions(Path(descriptions.__file__).parent):
        print(f"wrote {p}")
