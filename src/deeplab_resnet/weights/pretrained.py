"""Model folders for the Hugging Face Hub: :func:`save_pretrained`, :func:`push_to_hub`, :func:`from_pretrained`.

A folder holds ``model.safetensors`` (the native weight file, what ``--weights PATH`` reads),
``config.json`` (:mod:`.hub_config`: the network, and the weight file's SHA-256) and a
``README.md`` model card (:mod:`.model_card`). Pushed to a Hub repository, it is read back by
``--weights hf://owner/repo[@revision]`` in every command (:mod:`.hf_hub`).

Pushing needs ``huggingface_hub`` (``pip install 'deeplab_resnet[hub]'``) and a token
(``HF_TOKEN`` or ``huggingface-cli login``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..errors import DeepLabError, missing_extra
from ..models.deeplab import DeepLabV2
from .hf_hub import INSTALL_HINT, is_hf_spec, parse_hf_spec, sha256_of
from .hub_config import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, build_config, check_config_matches, read_config
from .loading import load_model, read_weights
from .model_card import check_report_classes, model_card, read_report
from .native import WeightsMeta, meta_of, save_state

FOLDER_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)


def _weights_of(model: DeepLabV2 | str | Path, source: str) -> tuple[dict[str, torch.Tensor], WeightsMeta, str]:
    """(state, metadata, the input file if there is one) of a model or of weights named as ``--weights`` takes them."""
    if isinstance(model, DeepLabV2):
        return model.state_dict(), meta_of(model, source), ""
    state, meta = read_weights(model)
    if source:
        meta = WeightsMeta(meta.architecture, meta.convention, meta.dataset, source)
    return state, meta, "" if is_hf_spec(str(model)) else str(model)


def _check_outputs(folder: Path, input_file: str, overwrite: bool) -> None:
    targets = [folder / name for name in FOLDER_FILES]
    if input_file and Path(input_file).exists() and any(t.exists() and t.samefile(input_file) for t in targets):
        raise DeepLabError(f"{folder}: the weights to save are {input_file} itself; choose another folder")
    existing = [t.name for t in targets if t.exists()]
    if existing and not overwrite:
        raise DeepLabError(
            f"{folder} already holds {', '.join(existing)}; choose an empty folder (or replace them: --force, overwrite=True)"
        )
    if folder.exists() and not folder.is_dir():
        raise DeepLabError(f"{folder} exists and is not a folder")


def save_pretrained(
    model: DeepLabV2 | str | Path, folder: str | Path, *, report: str | Path | dict | None = None, source: str = "",
    repo_id: str | None = None, license: str | None = None, datasets: Sequence[str] = (), tags: Sequence[str] = (),
    overwrite: bool = False,
) -> list[Path]:  # fmt: skip
    """Write a model folder for the Hub: weights, ``config.json`` and a model card. Returns the files.

    Args:
        model: a model, or weights as ``--weights`` takes them (a file, a registered name,
            ``hf://...``: their metadata, the source included, is kept).
        folder: created if missing; files already there are refused unless ``overwrite``.
        report: a ``report.json`` of ``deeplab evaluate`` on these weights (path or its dict):
            its scores go into the card.
        source: where the weights came from (replaces the file's own record; for a model, the
            only record).
        repo_id, license, datasets, tags: for the card (``license`` and ``datasets`` are Hub ids).
        overwrite: replace the folder's files of an earlier save.
    """
    folder = Path(folder)
    state, meta, input_file = _weights_of(model, source)
    if isinstance(report, (str, Path)):
        report = read_report(report)
    if report is not None:
        check_report_classes(report, meta.dataset.class_names, "--report")
    _check_outputs(folder, input_file, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    save_state(state, meta, weights)
    atomic_write_text(folder / CONFIG_FILE, json.dumps(build_config(meta, sha256_of(weights)), indent=2) + "\n")
    card = model_card(meta, report=report, repo_id=repo_id, license=license, datasets=datasets, tags=tags)
    atomic_write_text(folder / CARD_FILE, card)
    return [folder / name for name in FOLDER_FILES]


def _hf_api(token: str | None):
    """``huggingface_hub.HfApi`` (a function of its own so that tests can stand a fake in)."""
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise missing_extra(exc, f"pushing to the Hub needs huggingface_hub: {INSTALL_HINT}") from exc
    return HfApi(token=token)


def push_to_hub(
    model: DeepLabV2 | str | Path, repo_id: str, *, report: str | Path | dict | None = None,
    private: bool | None = None, token: str | None = None, commit_message: str | None = None,
    license: str | None = None, datasets: Sequence[str] = (), tags: Sequence[str] = (), source: str = "",
) -> str:  # fmt: skip
    """Save the model folder (:func:`save_pretrained`) to a temporary folder and upload it as one commit.

    Creates the repository if needed (``private`` applies then). ``token``: default ``HF_TOKEN``
    or the ``huggingface-cli login`` token. Returns the commit's URL.
    """
    parse_hf_spec(repo_id)  # a one-line error for a malformed id, before any network or work
    if "@" in repo_id:
        raise DeepLabError(f"{repo_id}: give the repository id without a revision")
    api = _hf_api(token)
    with tempfile.TemporaryDirectory(prefix="deeplab-hub-") as tmp:
        save_pretrained(
            model, tmp, report=report, repo_id=repo_id, license=license, datasets=datasets, tags=tags, source=source
        )
        try:
            api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=tmp, repo_type="model",
                commit_message=commit_message or f"Upload {WEIGHTS_FILE} with deeplab_resnet",
            )  # fmt: skip
        except (OSError, ValueError) as exc:  # HTTP errors are OSErrors; a refused repo id a ValueError
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise DeepLabError(f"pushing to {repo_id} failed: {first} (is HF_TOKEN set with write access?)") from exc
    return str(getattr(info, "commit_url", info))


def from_pretrained(
    repo_id_or_folder: str | Path, *, revision: str | None = None, device: str | torch.device = "cpu", **kwargs
) -> DeepLabV2:
    """A model from a folder written by :func:`save_pretrained` or from a Hub repository.

    An existing folder is read as it is (its weight file checked against ``config.json``'s
    SHA-256); otherwise ``repo_id_or_folder`` is a Hub id (``owner/repo``, ``hf://`` optional) and
    ``revision`` a branch, tag or commit. Other keyword arguments go to :func:`load_model`.
    """
    if Path(repo_id_or_folder).is_dir():
        if revision is not None:
            raise DeepLabError(f"{repo_id_or_folder}: a local folder has no revision")
        return _from_folder(Path(repo_id_or_folder), device, **kwargs)
    spec = str(repo_id_or_folder)
    spec = spec if is_hf_spec(spec) else f"hf://{spec}"
    repo_id, pinned = parse_hf_spec(spec)
    if pinned is not None and revision is not None:
        raise DeepLabError(f"{repo_id_or_folder}: give the revision once (in the name or as revision=)")
    revision = pinned or revision
    return load_model(f"hf://{repo_id}" + (f"@{revision}" if revision else ""), device=device, **kwargs)


def _from_folder(folder: Path, device: str | torch.device, **kwargs) -> DeepLabV2:
    config = read_config(folder / CONFIG_FILE)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or sha256_of(weights) != config["weights_sha256"]:
        raise DeepLabError(
            f"{weights}: missing or not the file {CONFIG_FILE} describes (SHA-256 differs; in a git clone, "
            "run 'git lfs pull')"
        )
    model = load_model(weights, device=device, **kwargs)
    check_config_matches(config, meta_of(model), str(folder))
    return model
