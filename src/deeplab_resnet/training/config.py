"""What defines a training run: :class:`TrainConfig`, its checks, and the ``--config`` file.

Each field of :class:`TrainConfig` carries its command-line help, its type and its valid range,
so that the ``deeplab train`` flags are generated from it (``commands/train.py``) and a value
from a flag, from a config file or from Python goes through the same check, :func:`check_value`.
The original's flags keep their names and defaults (docs/original.md §4).

This module does not import torch: ``deeplab train --help`` builds its flags from it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeepLabError
from ..mapping_files import read_mapping

ORIGINAL = "the original's flags"
DEFAULT_INPUT_SIZE = "321,321"  # the original recipe (docs/original.md §4)
DEFAULT_SCALE_RANGE = (0.5, 1.5)
MORE = "more"


def setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    group: str = MORE,
) -> Any:
    """A :class:`TrainConfig` field: its default, help text and valid range (``minimum`` ≤ value
    ≤ ``maximum``, value > ``above``, value in ``choices``; for lists, each item)."""
    meta = {"help": help, "minimum": minimum, "above": above, "maximum": maximum, "choices": choices, "group": group}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines a run. Field names are the command-line flags with ``_`` for ``-``.

    Every value is checked when the config is made (:func:`check_value`): a wrong type or a value
    out of range is a :class:`DeepLabError` naming the flag.
    """

    data_dir: str = setting("", "directory the list's paths are relative to", group=ORIGINAL)
    data_list: str = setting("", "list file: '/JPEGImages/x.jpg /SegmentationClassAug/x.png' lines", group=ORIGINAL)
    batch_size: int = setting(10, "global batch", minimum=1, group=ORIGINAL)
    input_size: str | None = setting(
        None, "crop HEIGHT,WIDTH (default: the --dataset description's, else 321,321)", group=ORIGINAL
    )
    learning_rate: float = setting(2.5e-4, "base learning rate", above=0, group=ORIGINAL)
    momentum: float = setting(0.9, "SGD momentum", minimum=0, maximum=1, group=ORIGINAL)
    num_steps: int = setting(20001, "training steps", minimum=1, group=ORIGINAL)
    power: float = setting(0.9, "poly learning rate power", minimum=0, group=ORIGINAL)
    random_mirror: bool = setting(False, "random horizontal flip", group=ORIGINAL)
    random_scale: bool = setting(False, "random rescaling, U(0.5, 1.5) or --scale-range", group=ORIGINAL)
    random_seed: int = setting(1234, "seed of the initialisation and the data order", minimum=0, group=ORIGINAL)
    restore_from: str | None = setting(
        None, "initial weights (.safetensors, or an original .caffemodel/.ckpt); none: from scratch", group=ORIGINAL
    )
    save_num_images: int = setting(2, "images in the image summary (0: no summary)", minimum=0, group=ORIGINAL)
    save_pred_every: int = setting(
        1000, "image summary, checkpoint and validation interval in steps", minimum=1, group=ORIGINAL
    )
    snapshot_dir: str = setting("./snapshots/", "run directory (one run per directory)", group=ORIGINAL)
    weight_decay: float = setting(5e-4, "L2 weight decay of the conv weights", minimum=0, group=ORIGINAL)
    num_classes: int | None = setting(
        None, "classes (default: 21, or the --dataset's; checked by the dataset rule)", group=ORIGINAL
    )
    ignore_label: int | None = setting(
        None, "label not trained on (default: 255, or the --dataset's; checked by the dataset rule)", group=ORIGINAL
    )
    not_restore_last: bool = setting(False, "do not restore the classifier (new class count)", group=ORIGINAL)
    is_training: bool = setting(False, "train batch norm (default: frozen)", group=ORIGINAL)
    grad_update_every: int = setting(1, "micro-batches per update (Caffe iter_size)", minimum=1, group=ORIGINAL)
    # Ours.
    scale_range: list[float] | None = setting(
        None, "LOW,HIGH of the random rescaling (default: the --dataset description's, else 0.5,1.5)", above=0
    )
    msc: bool = setting(False, "multi-scale training: one loss per scale and one for the max-fused logits")
    msc_scales: list[float] = setting([1.0, 0.75, 0.5], "input scales of --msc, comma-separated", above=0)
    scale_mode: str = setting(
        "continuous", "random scale: TF U(0.5,1.5) or Caffe's {0.5,...,1.5}", choices=("continuous", "discrete")
    )
    fine_tune: bool = setting(False, "train only the classifier (the original's fine_tune.py)")
    optimizer: str = setting("sgd", "fine_tune.py used adam, lr 1e-4, batch 4", choices=("sgd", "adam"))
    model: str = setting(
        "deeplab_v2_resnet101", "architecture when training from scratch (deeplab_v2_resnet_tiny for quick tests)"
    )
    model_blocks: list[int] | None = setting(
        None, "from scratch: residual blocks per stage, comma-separated (reduced-depth variants)", minimum=1
    )
    model_width: int | None = setting(None, "from scratch: width of the first stage's bottleneck", minimum=1)
    convention: str | None = setting(None, "numerics (default: the weights', or caffe)", choices=("caffe", "tf"))
    dataset: str | None = setting(None, "voc12, camvid or a JSON/YAML description (classes, palette, mean, ignore)")
    keep_checkpoints: int = setting(3, "checkpoints of this run kept (0: all)", minimum=0)
    checkpoint_every: int | None = setting(None, "checkpoint interval (default: --save-pred-every)", minimum=1)
    num_workers: int = setting(2, "data loading processes", minimum=0)
    device: str = setting("auto", "cpu, cuda, cuda:1, mps (auto: cuda if available)")
    amp: bool = setting(False, "bfloat16 autocast")
    channels_last: bool = setting(False, "channels_last memory format")
    val_list: str | None = setting(None, "list to score (mIoU) every --val-every steps")
    val_data_dir: str | None = setting(None, "data directory of --val-list (default: --data-dir)")
    val_every: int | None = setting(None, "validation interval (default: --save-pred-every)", minimum=1)
    strict_labels: bool = setting(False, "label values outside the classes are an error, not a warning")
    loss_resolution: str = setting(
        "logits",
        "cross-entropy on the stride-8 logit grid (the original) or on logits upsampled to the crop size",
        choices=("logits", "image"),
    )
    class_weights: str | None = setting(
        None, "weighted cross-entropy: JSON of one weight per class (from 'deeplab data stats --class-weights')"
    )
    ohem_keep: float = setting(
        1.0, "hard-example mining: per loss term, keep the top fraction of valid pixels by loss (1: all)",
        above=0, maximum=1,
    )  # fmt: skip
    ohem_min_kept: int = setting(0, "hard-example mining: keep at least this many pixels per loss term", minimum=0)
    check_data: bool = setting(True, "check every pair before training")
    progress: bool = setting(True, "progress bar")
    tensorboard: bool = setting(True, "TensorBoard events, if installed")
    log_every: int = setting(10, "steps between logged scalars", minimum=1)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(f.name, getattr(self, f.name), flag_name(f.name)))

    @property
    def crop_size(self) -> tuple[int, int]:
        return parse_size(self.input_size or DEFAULT_INPUT_SIZE, flag_name("input_size"))

    @property
    def scale_bounds(self) -> tuple[float, float]:
        low, high = self.scale_range or DEFAULT_SCALE_RANGE
        return float(low), float(high)

    def with_dataset_defaults(self, defaults: dict) -> TrainConfig:
        """This config with the dataset description's ``training`` defaults where nothing was given."""
        changes = {}
        if self.input_size is None and "input_size" in defaults:
            changes["input_size"] = ",".join(str(v) for v in defaults["input_size"])
        if self.scale_range is None and "scale_range" in defaults:
            changes["scale_range"] = list(defaults["scale_range"])
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Settings that may change between a run and its resumption without changing the result.
RUNTIME_KEYS = frozenset(
    {"num_workers", "device", "progress", "tensorboard", "log_every", "check_data", "snapshot_dir"}
)


def flag_name(name: str) -> str:
    """``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(TrainConfig)


@functools.cache
def field_type(name: str) -> tuple[type, type | None, bool]:
    """``(base, item, optional)``: ``list[int] | None`` → ``(list, int, True)``, ``float`` → ``(float, None, False)``."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return list, typing.get_args(hint)[0], optional
    return hint, None, optional


def parse_size(text: str, where: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).split(","))
    except ValueError as exc:
        raise DeepLabError(f"{where} must be 'HEIGHT,WIDTH', got {text!r}") from exc
    if h < 1 or w < 1:
        raise DeepLabError(f"{where} must be positive, got {text!r}")
    return h, w


def type_name(kind: type, plural: bool = False) -> str:
    if plural:
        return {int: "integers", float: "numbers", str: "strings"}[kind]
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]


def check_scalar(kind: type, value: Any, where: str) -> Any:
    """``value`` as ``kind``; booleans are never numbers and strings never booleans or numbers."""
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if kind is float and isinstance(value, str) else ""
        raise DeepLabError(f"{where} must be {type_name(kind)}, got {value!r}{hint}")
    return value


def check_range(f: dataclasses.Field, value: Any, where: str) -> None:
    meta = f.metadata
    if meta["choices"] is not None and value not in meta["choices"]:
        raise DeepLabError(f"{where} must be one of {', '.join(meta['choices'])}, got {value!r}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise DeepLabError(f"{where} must be at least {meta['minimum']}, got {value!r}")
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise DeepLabError(f"{where} must be at most {meta['maximum']}, got {value!r}")
    if meta["above"] is not None and value <= meta["above"]:
        raise DeepLabError(f"{where} must be greater than {meta['above']}, got {value!r}")


def check_value(name: str, value: Any, where: str) -> Any:
    """``value`` for the field ``name``, type- and range-checked; ``where`` names it in errors
    (``--batch-size``, or ``run.yaml: batch-size``)."""
    f = next(f for f in fields() if f.name == name)
    kind, item, optional = field_type(name)
    if value is None:
        if optional:
            return None
        raise DeepLabError(f"{where} must be set (it has no 'none' value)")
    if kind is list:
        if not isinstance(value, (list, tuple)) or not value:
            raise DeepLabError(f"{where} must be a non-empty list of {type_name(item, plural=True)}, got {value!r}")
        values = [check_scalar(item, v, where) for v in value]
        for v in values:
            check_range(f, v, where)
        if name == "scale_range":
            _check_scale_range(values, where)
        return values
    value = check_scalar(kind, value, where)
    check_range(f, value, where)
    if name == "input_size":
        parse_size(value, where)
    return value


def _check_scale_range(values: list[float], where: str) -> None:
    if len(values) != 2 or values[0] > values[1] or values[1] > 4:
        raise DeepLabError(f"{where} must be LOW,HIGH with LOW <= HIGH <= 4, got {values!r}")


def parse_flag(name: str, text: str) -> Any:
    """A command-line string for the field ``name`` → its value (lists are comma-separated)."""
    kind, item, _ = field_type(name)
    where = flag_name(name)
    convert = item if kind is list else kind
    if convert is str:
        return text
    try:
        if kind is list:
            return [convert(t) for t in text.split(",") if t.strip()]
        return convert(text)
    except ValueError as exc:
        raise DeepLabError(f"{where} must be {type_name(convert)}, got {text!r}") from exc


def field_metavar(name: str) -> str:
    f = next(f for f in fields() if f.name == name)
    kind, item, _ = field_type(name)
    if f.metadata["choices"]:
        return "{" + ",".join(f.metadata["choices"]) + "}"
    if kind is list:
        return f"{item.__name__.upper()},..."
    return {int: "INT", float: "FLOAT"}.get(kind, name.upper())


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML mapping of flag names (``batch-size`` or ``batch_size``) to values,
    each checked as a flag's; returns field names → values."""
    path = Path(path)
    if not path.is_file():
        raise DeepLabError(f"--config: file not found: {path}")
    data = read_mapping(path, "config file", "flag names to values")
    known = {f.name for f in fields()}
    out = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in known:
            raise DeepLabError(f"{path}: unknown setting {key!r} (the settings are the flags of 'deeplab train')")
        out[name] = check_value(name, value, f"{path}: {key}")
    return out


def config_from_sources(file_values: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < flags given on the command line (given ones win even when they
    equal the default)."""
    return TrainConfig(**{**file_values, **given})
