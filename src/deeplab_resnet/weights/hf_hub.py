"""Weights on the Hugging Face Hub: ``--weights hf://owner/repo[@revision]``.

A Hub repository written by :func:`deeplab_resnet.weights.pretrained.save_pretrained` holds
``model.safetensors`` (the native weight file, the same format as ``--weights PATH``) and a
``config.json`` that records the file's SHA-256. Both are downloaded with
``huggingface_hub.hf_hub_download`` (which honours ``HF_ENDPOINT``, ``HF_TOKEN`` and
``HF_HUB_OFFLINE``) into the package's cache folder (``<cache>/hub``, see :mod:`deeplab_resnet.cache`),
and the weight file is used only if its SHA-256 is the one ``config.json`` records: a damaged or
substituted download is deleted from the cache and refused. A revision (branch, tag or commit)
pins what is downloaded; without one the repository's ``main`` is used.

``huggingface_hub`` is an optional dependency (``pip install 'deeplab_resnet[hub]'``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from ..cache import cache_dir
from ..errors import DeepLabError, missing_extra
from .hub_config import CONFIG_FILE, WEIGHTS_FILE, check_config_matches, read_config
from .native import WeightsMeta, read_native
from .registry import sha256_of

SCHEME = "hf://"
INSTALL_HINT = "pip install 'deeplab_resnet[hub]'"
# owner/name as the Hub allows them (letters, digits, '-', '_', '.'); a revision is a branch, tag or commit.
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_hf_spec(spec: str) -> bool:
    return str(spec).startswith(SCHEME)


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """``hf://owner/repo[@revision]`` → ``(repo_id, revision or None)``; a one-line error otherwise."""
    body = str(spec)[len(SCHEME) :] if is_hf_spec(spec) else str(spec)
    repo_id, at, revision = body.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or (at and not _REVISION.fullmatch(revision)):
        raise DeepLabError(
            f"{spec}: not a Hub weights name; expected hf://OWNER/REPO or hf://OWNER/REPO@REVISION "
            "(a branch, tag or commit)"
        )
    return repo_id, revision or None


def hub_cache() -> Path:
    """Where downloads from the Hub are kept (``huggingface_hub``'s cache layout, in the package's cache)."""
    return cache_dir("hub")


def _offline() -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _manual_steps(repo_id: str, revision: str | None) -> str:
    at = f" --revision {revision}" if revision else ""
    return (
        f"connect to the Hub and run again, or download the repository elsewhere "
        f"('huggingface-cli download {repo_id}{at} --local-dir DIR') and pass --weights DIR/{WEIGHTS_FILE} "
        f"(with HF_HUB_OFFLINE=1 only files already in {hub_cache()} are used)"
    )


def download_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """One file of a Hub model repository, from the cache or downloaded into it (atomically)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as exc:
        raise missing_extra(
            exc, f"hf://{repo_id}: reading weights from the Hub needs huggingface_hub: {INSTALL_HINT}"
        ) from exc
    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    steps = _manual_steps(repo_id, revision)
    try:
        with _no_partial_file_left(repo_id):
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=str(hub_cache()), local_files_only=_offline(),
                endpoint=os.environ.get("HF_ENDPOINT") or None, library_name="deeplab_resnet",
            )  # fmt: skip
    except RevisionNotFoundError as exc:
        raise DeepLabError(f"{where}: the repository has no revision {revision!r}") from exc
    except RepositoryNotFoundError as exc:
        raise DeepLabError(f"{where}: no such repository on the Hub (or it is private: set HF_TOKEN)") from exc
    except LocalEntryNotFoundError as exc:
        raise DeepLabError(f"{where}: {filename} is not cached and the Hub cannot be reached; {steps}") from exc
    except EntryNotFoundError as exc:
        raise DeepLabError(f"{where}: the repository has no {filename} (not saved by deeplab_resnet?)") from exc
    except Exception as exc:
        # Connection failures and HTTP errors: huggingface_hub's are OSErrors, but its HTTP client's
        # own (httpx, requests: a connection dropped mid-file) share no base class with them.
        raise DeepLabError(f"{where}: downloading {filename} failed ({_first_line(exc)}); {steps}") from exc
    return Path(path)


@contextlib.contextmanager
def _no_partial_file_left(repo_id: str) -> Iterator[None]:
    """On any failure (Ctrl-C, SIGTERM, a dropped connection) remove the partial download this call
    started: ``huggingface_hub`` keeps ``*.incomplete`` files to resume, but nothing half-written
    stays in the cache (the next run downloads the file again)."""
    blobs = hub_cache() / f"models--{repo_id.replace('/', '--')}" / "blobs"
    before = set(blobs.glob("*.incomplete"))
    try:
        yield
    except BaseException:
        for partial in set(blobs.glob("*.incomplete")) - before:
            partial.unlink(missing_ok=True)
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _commit_of(path: Path) -> str | None:
    """The commit a file in huggingface_hub's cache belongs to (``snapshots/<commit>/<file>``)."""
    name = path.parent.name
    return name if _COMMIT.fullmatch(name) else None


def fetch_repo_weights(repo_id: str, revision: str | None = None) -> tuple[Path, dict]:
    """The verified weight file of a Hub repository and its ``config.json``.

    The weight file is taken from the commit ``config.json`` came from (so a push between the two
    downloads cannot pair one commit's config with another's weights), and is refused, and
    removed from the cache, unless its SHA-256 is the one the config records and (for a file the
    cache keeps under its Hub hash) the one the Hub reported.
    """
    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    config_path = download_file(repo_id, CONFIG_FILE, revision)
    config = read_config(config_path, where)
    weights = download_file(repo_id, WEIGHTS_FILE, _commit_of(config_path) or revision)
    actual = sha256_of(weights)
    blob = Path(os.path.realpath(weights))
    hub_hash = blob.name if _SHA256.fullmatch(blob.name) else actual
    recorded = config["weights_sha256"]
    if actual != recorded or actual != hub_hash:
        weights.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise DeepLabError(
            f"{where}: {WEIGHTS_FILE} downloaded with SHA-256 {actual[:12]}..., but {CONFIG_FILE} records "
            f"{recorded[:12]}... and the Hub {hub_hash[:12]}...: damaged or replaced; removed from the cache, "
            "run again to download it anew"
        )
    return weights, config


def read_hf(spec: str) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """A reader for ``READERS``: ``hf://owner/repo[@revision]`` → its verified weights."""
    repo_id, revision = parse_hf_spec(spec)
    weights, config = fetch_repo_weights(repo_id, revision)
    state, meta = read_native(weights)
    check_config_matches(config, meta, spec)
    return state, meta
