"""What a dataset's labels mean: class names, colours, the mean colour and the ignore label.

A :class:`DatasetInfo` travels with a model (inside its weight file) so that a label map can
be drawn and named without guessing. VOC and CamVid are built in; other datasets are
described by a small JSON (or YAML) file, see :func:`load_dataset_info`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .atomic import atomic_write_text
from .data.descriptions import builtin_description, builtin_description_names
from .errors import DeepLabError
from .mapping_files import is_yaml, read_mapping, yaml_module

# Labels are 8-bit PNG values and one value is kept for "ignore": at most 255 classes.
MAX_CLASSES = 255
# A PIL palette holds 256 colours; a longer one can only be a mistake.
MAX_PALETTE = 256

# The original's IMG_MEAN, in B, G, R order (docs/original.md §2).
IMG_MEAN_BGR: tuple[float, float, float] = (104.00698793, 116.66876762, 122.67891434)

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip

CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The standard PASCAL VOC colour map: the bits of the class index interleaved into R, G, B."""
    palette = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return palette


VOID_COLOUR: tuple[int, int, int] = (224, 224, 192)  # how the official VOC PNGs draw label 255


@dataclass(frozen=True)
class DatasetInfo:
    """The meaning of a dataset's labels.

    Args:
        name: short name, e.g. ``"voc12"``.
        class_names: one name per class index ``0..num_classes-1``.
        palette: one RGB colour per class.
        mean_bgr: per-channel mean subtracted from BGR images before the network.
        ignore_label: label value that marks unlabelled pixels (not scored, not trained on).
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    mean_bgr: tuple[float, float, float] = IMG_MEAN_BGR
    ignore_label: int = 255
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.class_names) == 0:
            raise DeepLabError(f"dataset {self.name!r}: class_names is empty")
        if len(self.palette) < len(self.class_names):
            raise DeepLabError(
                f"dataset {self.name!r}: palette has {len(self.palette)} colours for {len(self.class_names)} classes"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def palette_bytes(self) -> list[int]:
        """A flat 768-entry PIL palette: class colours, the void colour at ``ignore_label``."""
        colours = list(self.palette[: self.num_classes])
        colours += [(0, 0, 0)] * (256 - len(colours))
        if 0 <= self.ignore_label < 256 and self.ignore_label >= self.num_classes:
            colours[self.ignore_label] = VOID_COLOUR
        return [v for rgb in colours for v in rgb]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["num_classes"] = self.num_classes
        if self.extra.get("training"):
            d["training"] = dict(self.extra["training"])
        return d

    @property
    def training_defaults(self) -> dict:
        """The description's own ``deeplab train`` defaults (``input_size``, ``scale_range``), if any."""
        return dict(self.extra.get("training", {}))

    def to_json(self) -> str:
        """The description as a JSON document :func:`load_dataset_info` reads back (palette one colour per line)."""
        d = self.to_dict()
        palette = ",\n".join(f"    {list(rgb)}" for rgb in d.pop("palette"))
        body = json.dumps(d, indent=2)
        return body[: body.rindex("}")].rstrip() + ',\n  "palette": [\n' + palette + "\n  ]\n}\n"

    @classmethod
    def from_dict(cls, d: dict, name: str = "custom", *, strict: bool = False) -> DatasetInfo:
        """Build from a mapping (a description file, or the metadata of a weight file).

        Args:
            d: ``class_names`` and optionally ``name``, ``palette``, ``mean_bgr``, ``ignore_label``,
                ``num_classes`` (checked against ``class_names``).
            name: name used in messages when ``d`` has none.
            strict: also refuse unknown keys and values a training run could not use (what
                :func:`load_dataset_info` does for files a user wrote).
        """
        if strict:
            _validate_keys(d, name)
        try:
            class_names = tuple(str(c) for c in d["class_names"])
        except (KeyError, TypeError) as exc:
            raise DeepLabError(f"dataset {name!r}: needs a list 'class_names'") from exc
        if isinstance(d["class_names"], str):
            raise DeepLabError(f"dataset {name!r}: 'class_names' must be a list of names, not one string")
        if not 1 <= len(class_names) <= MAX_CLASSES:
            raise DeepLabError(f"dataset {name!r}: {len(class_names)} class_names; give 1..{MAX_CLASSES}")
        if "num_classes" in d and _as_int(d["num_classes"], "num_classes", name) != len(class_names):
            raise DeepLabError(f"dataset {name!r}: num_classes={d['num_classes']} but {len(class_names)} class_names")
        palette = d.get("palette")
        if isinstance(palette, list) and len(palette) > MAX_PALETTE:
            raise DeepLabError(f"dataset {name!r}: palette has {len(palette)} colours; at most {MAX_PALETTE}")
        if palette is None:
            palette = voc_palette(len(class_names))
        try:
            palette_t = tuple(tuple(int(v) for v in rgb) for rgb in palette)
            if any(len(rgb) != 3 for rgb in palette_t):
                raise ValueError
            mean = tuple(float(v) for v in d.get("mean_bgr", IMG_MEAN_BGR))
            if len(mean) != 3:
                raise ValueError
        except (TypeError, ValueError) as exc:
            raise DeepLabError(f"dataset {name!r}: palette must be [[r,g,b], ...] and mean_bgr [b,g,r]") from exc
        info = cls(
            name=str(d.get("name", name)),
            class_names=class_names,
            palette=palette_t,
            mean_bgr=mean,  # type: ignore[arg-type]
            ignore_label=_as_int(d.get("ignore_label", 255), "ignore_label", name),
            extra={k: d[k] for k in OPTIONAL_NOTES if k in d} | _training_defaults(d, name),
        )
        if strict:
            check_dataset_values(info)
        return info


# Keys a description file may carry besides the fields: free-form notes kept in ``extra``.
OPTIONAL_NOTES: tuple[str, ...] = ("description", "source", "license", "notes")
DESCRIPTION_KEYS: tuple[str, ...] = (
    "name", "class_names", "num_classes", "palette", "mean_bgr", "ignore_label", "training",
)  # fmt: skip
# "training": the dataset's own defaults for ``deeplab train`` (a flag or config value given wins).
TRAINING_DEFAULTS: tuple[str, ...] = ("input_size", "scale_range")


def _training_defaults(d: dict, name: str) -> dict:
    """``{"training": {...}}`` from a description's ``training`` mapping, checked, or ``{}``:
    ``input_size`` [height, width] of the random crop (1..4096 each) and ``scale_range``
    [low, high] of the random rescaling (0 < low <= high <= 4)."""
    given = d.get("training")
    if given is None:
        return {}
    if not isinstance(given, dict) or set(given) - set(TRAINING_DEFAULTS):
        raise DeepLabError(f"dataset {name!r}: 'training' must be a mapping of {', '.join(TRAINING_DEFAULTS)}")
    out = {}
    try:
        if "input_size" in given:
            h, w = (int(v) for v in given["input_size"])
            if not (1 <= h <= 4096 and 1 <= w <= 4096) or any(isinstance(v, bool) for v in given["input_size"]):
                raise ValueError
            out["input_size"] = [h, w]
        if "scale_range" in given:
            low, high = (float(v) for v in given["scale_range"])
            if not 0 < low <= high <= 4:
                raise ValueError
            out["scale_range"] = [low, high]
    except (TypeError, ValueError) as exc:
        raise DeepLabError(
            f"dataset {name!r}: training.input_size must be [height, width] (1..4096) and training.scale_range "
            "[low, high] with 0 < low <= high <= 4"
        ) from exc
    return {"training": out}


def _as_int(value, key: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
        raise DeepLabError(f"dataset {name!r}: {key} must be an integer, got {value!r}")
    return int(value)


def _validate_keys(d: dict, name: str) -> None:
    unknown = sorted(set(d) - set(DESCRIPTION_KEYS) - set(OPTIONAL_NOTES))
    if "mean_rgb" in unknown:
        raise DeepLabError(f"dataset {name!r}: give the mean as 'mean_bgr' in B, G, R order (not 'mean_rgb')")
    if unknown:
        raise DeepLabError(
            f"dataset {name!r}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(DESCRIPTION_KEYS + OPTIONAL_NOTES)}"
        )


def check_dataset_values(info: DatasetInfo) -> None:
    """What a run needs: labels are uint8 PNG values, the ignore label is no class, colours are bytes.

    Description files (:func:`load_dataset_info`), weight-file metadata and the result of
    :func:`resolve_dataset_info` all pass through here.
    """
    where = f"dataset {info.name!r}"
    if info.num_classes > MAX_CLASSES:
        raise DeepLabError(f"{where}: {info.num_classes} classes; label PNGs hold at most 255 classes besides ignore")
    if len(info.palette) > MAX_PALETTE:
        raise DeepLabError(f"{where}: palette has {len(info.palette)} colours; at most {MAX_PALETTE}")
    duplicates = sorted({c for c in info.class_names if info.class_names.count(c) > 1})
    if duplicates or any(not c.strip() for c in info.class_names):
        raise DeepLabError(f"{where}: class names must be non-empty and distinct (repeated: {', '.join(duplicates)})")
    if not 0 <= info.ignore_label <= 255:
        raise DeepLabError(f"{where}: ignore_label {info.ignore_label} must be 0..255 (labels are 8-bit PNG values)")
    if info.ignore_label < info.num_classes:
        raise DeepLabError(
            f"{where}: ignore_label {info.ignore_label} is class {info.class_names[info.ignore_label]!r}; "
            f"use a value >= num_classes ({info.num_classes}), e.g. 255"
        )
    for index, rgb in enumerate(info.palette):
        if not all(0 <= v <= 255 for v in rgb):
            raise DeepLabError(f"{where}: palette colour {index} {list(rgb)} has values outside 0..255")
    if not all(math.isfinite(v) for v in info.mean_bgr):
        raise DeepLabError(f"{where}: mean_bgr {list(info.mean_bgr)} must be three finite numbers")


VOC = DatasetInfo("voc12", VOC_CLASSES, tuple(voc_palette(21)))
CAMVID = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE, ignore_label=11)
BUILTIN_DATASETS: dict[str, DatasetInfo] = {"voc12": VOC, "voc": VOC, "camvid": CAMVID}


def generic_dataset(num_classes: int) -> DatasetInfo:
    """A description for a model with an unnamed class set: ``class_0..`` and VOC colours."""
    if num_classes == 21:
        return VOC
    return DatasetInfo(
        f"{num_classes}-classes",
        tuple(f"class_{i}" for i in range(num_classes)),
        tuple(voc_palette(num_classes)),
    )


def resolve_dataset_info(
    dataset: str | Path | DatasetInfo | None = None,
    *,
    from_weights: DatasetInfo | None = None,
    num_classes: int | None = None,
    ignore_label: int | None = None,
) -> DatasetInfo:
    """Which classes, ignore label, mean and palette a run uses: the one rule every command follows.

    ``train``, ``evaluate`` (also ``--predictions``), ``data check``, ``convert`` and
    :func:`~deeplab_resnet.weights.load_model` all call this, so the same options mean the same
    thing everywhere:

    1. **Start** from ``dataset`` (``--dataset``: a built-in name, a description file or a
       :class:`DatasetInfo`) when given: an explicit description wins over the weights' metadata
       for what the labels mean. Without it, from the weights' metadata (``from_weights``);
       without weights, from VOC (the original's dataset, docs/original.md §7).
    2. **--num-classes** equal to the start's count changes nothing. A different count keeps the
       start's ignore label and mean (they describe the label files and the images, which have
       not changed) but makes the class names generic (``class_0``, ``class_1``, ...) and the
       palette the VOC colour map: the start's names and colours belonged to other classes.
    3. **--ignore-label** replaces the ignore label.

    The result is checked as description files are (1..255 classes, ignore label 0..255 and not a
    class index, colours 0..255, a finite mean). For example ``--dataset camvid --num-classes 12``
    is refused: CamVid's ignore label 11 would be a class; add ``--ignore-label 255``.

    Raises:
        DeepLabError: naming the option (or the description) that is wrong.
    """
    start = dataset if isinstance(dataset, DatasetInfo) else None
    if dataset not in (None, "") and start is None:  # an empty value (e.g. in a config file) means none given
        start = load_dataset_info(dataset)
    base = start or from_weights or VOC
    info = base
    if num_classes is not None and num_classes != base.num_classes:
        info = _with_generic_classes(base, num_classes)
        if ignore_label is None and 0 <= info.ignore_label < num_classes:
            raise DeepLabError(
                f"--num-classes {num_classes} makes the ignore label {info.ignore_label} of dataset {base.name!r} "
                "a class; give --ignore-label (e.g. 255)"
            )
    if ignore_label is not None:
        if isinstance(ignore_label, bool) or not 0 <= ignore_label <= 255:
            raise DeepLabError(f"--ignore-label {ignore_label}: must be 0..255 (labels are 8-bit PNG values)")
        if ignore_label < info.num_classes:
            raise DeepLabError(
                f"--ignore-label {ignore_label} is class {info.class_names[ignore_label]!r} (of {info.num_classes}); "
                f"use a value >= {info.num_classes}, e.g. 255"
            )
        info = replace(info, ignore_label=int(ignore_label))
    check_dataset_values(info)
    return info


def _with_generic_classes(info: DatasetInfo, num_classes: int) -> DatasetInfo:
    """``info``'s ignore label and mean with ``num_classes`` generic classes in VOC colours."""
    if isinstance(num_classes, bool) or not 1 <= num_classes <= MAX_CLASSES:
        raise DeepLabError(
            f"--num-classes {num_classes}: must be 1..{MAX_CLASSES} (labels are 8-bit PNG values, one kept for ignore)"
        )
    return DatasetInfo(
        f"{info.name}-{num_classes}-classes",
        tuple(f"class_{i}" for i in range(num_classes)),
        tuple(voc_palette(num_classes)),
        mean_bgr=info.mean_bgr,
        ignore_label=info.ignore_label,
    )


def load_dataset_info(spec: str | Path) -> DatasetInfo:
    """A built-in name (``voc12``, ``camvid``) or the path of a JSON/YAML description.

    The file holds ``class_names`` (required), and optionally ``name``, ``palette``
    (``[[r, g, b], ...]``, default: the VOC colours), ``mean_bgr`` (B, G, R; default: the
    original's ImageNet mean), ``ignore_label`` (default 255; must not be a class index) and
    ``num_classes`` (checked against ``class_names``); ``description``, ``source``, ``license``
    and ``notes`` are free text. Any other key is an error (a typo would otherwise be ignored).
    """
    key = str(spec)
    if key.lower() in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[key.lower()]
    shipped = builtin_description(key)
    if shipped is not None:  # cityscapes, gta5, synthia, cocostuff, ade20k ... (data/descriptions/)
        return DatasetInfo.from_dict(shipped, name=key.lower(), strict=True)
    path = Path(spec)
    if not path.is_file():
        names = sorted(set(BUILTIN_DATASETS) | set(builtin_description_names()))
        raise DeepLabError(f"dataset description not found: {path} (built-in names: {', '.join(names)})")
    data = read_mapping(path, "dataset description", "'class_names' and optional keys")
    return DatasetInfo.from_dict(data, name=path.stem, strict=True)


def save_dataset_info(info: DatasetInfo, path: str | Path) -> None:
    """Write ``info`` as JSON (or YAML for ``.yaml`` / ``.yml``) that :func:`load_dataset_info` reads back."""
    path = Path(path)
    if is_yaml(path):
        yaml = yaml_module(path, "writing")
        d = info.to_dict()
        d["palette"] = [list(rgb) for rgb in d["palette"]]
        d["class_names"] = list(d["class_names"])
        d["mean_bgr"] = list(d["mean_bgr"])
        text = yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
    else:
        text = info.to_json()
    atomic_write_text(path, text)
