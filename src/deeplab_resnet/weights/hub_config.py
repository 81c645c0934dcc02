"""``config.json`` of a model folder for the Hub: what the network is, beside its weight file.

The weight file (``model.safetensors``) is self-describing (:mod:`.native`); ``config.json``
repeats what :func:`deeplab_resnet.models.create_model` needs (model name, architecture, class
count, convention, dataset with class names and palette) for the Hub's tools and for people
reading the repository, and records the weight file's SHA-256, which is checked after every
download. Reading it checks the fields this package relies on; the two files must agree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import DeepLabError
from .native import WeightsMeta

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
LIBRARY_NAME = "deeplab_resnet"
CONFIG_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


def build_config(meta: WeightsMeta, weights_sha256: str) -> dict:
    """The ``config.json`` of the weights ``meta`` describes, whose file has ``weights_sha256``."""
    return {
        "library_name": LIBRARY_NAME,
        "config_version": CONFIG_VERSION,
        "model": meta.architecture.get("name", "deeplab_v2_resnet101"),
        "architecture": meta.architecture,
        "num_classes": meta.num_classes,
        "convention": meta.convention,
        "dataset": meta.dataset.to_dict(),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": weights_sha256,
        "source": meta.source,
    }


def read_config(path: str | Path, where: str = "") -> dict:
    """Read and check a ``config.json``: one-line errors that name ``where`` (or the file)."""
    where = where or str(path)
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DeepLabError(f"{where}: {CONFIG_FILE} is not readable JSON ({exc.__class__.__name__})") from exc
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY_NAME:
        raise DeepLabError(
            f"{where}: {CONFIG_FILE} was not written by deeplab_resnet (library_name is not {LIBRARY_NAME!r})"
        )
    if config.get("config_version") != CONFIG_VERSION:
        raise DeepLabError(
            f"{where}: {CONFIG_FILE} version {config.get('config_version')!r}; this deeplab_resnet reads "
            f"version {CONFIG_VERSION} (upgrade deeplab_resnet)"
        )
    sha = config.get("weights_sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise DeepLabError(f"{where}: {CONFIG_FILE} has no valid weights_sha256")
    return config


def check_config_matches(config: dict, meta: WeightsMeta, where: str) -> None:
    """The config and the weight file's own metadata must describe the same network."""
    for key, value in (
        ("architecture", meta.architecture), ("num_classes", meta.num_classes), ("convention", meta.convention),
    ):  # fmt: skip
        if config.get(key) != value:
            raise DeepLabError(
                f"{where}: {CONFIG_FILE} says {key} {config.get(key)!r} but {WEIGHTS_FILE} says {value!r}; "
                "the folder is inconsistent (save it again with deeplab weights save-hub)"
            )
