"""Named pretrained weights (in the style of torchvision's weight enums), fetched once.

``fetch("voc12")`` downloads the authors' release zip (with progress), verifies it, extracts
only the needed ``.caffemodel`` (after rejecting any archive with unsafe member names),
converts it, and caches the result in the package's cache folder (``$XDG_CACHE_HOME/deeplab_resnet``,
by default ``~/.cache/deeplab_resnet``; see :mod:`deeplab_resnet.cache`). Later calls use the
cache and need no network. The zip is kept there too, so the other entries (same zip) convert
offline.

The release publishes no checksum and none is invented here: an entry's ``sha256`` is
``None`` and verification is structural: a valid zip whose member passes its CRC-32, and a
caffemodel that holds exactly the ResNet-101 DeepLab-v2 tensors with the expected shapes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from ..atomic import atomic_path
from ..cache import cache_dir
from ..dataset_info import VOC, DatasetInfo
from ..errors import DeepLabError
from ..models.resnet import RESNET101_BLOCKS
from ..progress import Progress
from .convert import convert
from .native import WeightsMeta, read_native

RELEASE_URL = "http://liangchiehchen.com/projects/released/deeplab_aspp_resnet101/prototxt_and_model.zip"
# A mirror of the release zip (an institute's file server, a test's local server): when set, every
# entry downloads from this URL instead of its own (they all come from the same zip).
RELEASE_URL_ENV = "DEEPLAB_RESNET_RELEASE_URL"
CITATION = (
    "L.-C. Chen, G. Papandreou, I. Kokkinos, K. Murphy, A. L. Yuille. DeepLab: Semantic Image Segmentation "
    "with Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs. TPAMI 2017."
)


@dataclass(frozen=True)
class WeightsEntry:
    """One named set of pretrained weights and everything needed to fetch and use it."""

    name: str
    description: str
    url: str
    member: str  # file name of the caffemodel inside the zip
    num_classes: int
    dataset: DatasetInfo = VOC
    convention: str = "caffe"
    not_restore_last: bool = False  # an init model: its classifier is not for these classes
    warning: str = ""
    citation: str = CITATION
    sha256: str | None = None  # of the zip; None: not published, see the module docstring
    blocks: tuple[int, ...] = RESNET101_BLOCKS
    width: int = 64

    @property
    def archive_name(self) -> str:
        return PurePosixPath(self.url.split("?")[0]).name or f"{self.name}.zip"


REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            "voc12", "DeepLab-v2 ResNet-101 trained on VOC 2012 train_aug (the paper's val model)",
            RELEASE_URL, "train_iter_20000.caffemodel", 21,
        ),
        WeightsEntry(
            "voc12-trainval", "DeepLab-v2 ResNet-101 trained on VOC 2012 train_aug + val (for the test server)",
            RELEASE_URL, "train2_iter_20000.caffemodel", 21,
            warning="voc12-trainval was trained on VOC val: never report val scores with it (they are inflated, ~86.9%)",
        ),
        WeightsEntry(
            "coco-init", "MS-COCO-pretrained ResNet-101, the original training init (classifier not included)",
            RELEASE_URL, "init.caffemodel", 21, not_restore_last=True,
        ),
    )
}  # fmt: skip


def get_entry(name: str) -> WeightsEntry:
    if name not in REGISTRY:
        raise DeepLabError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)} (or give a file)")
    return REGISTRY[name]


def cached_path(name: str) -> Path:
    return cache_dir() / f"{get_entry(name).name}.safetensors"


def release_url(entry: WeightsEntry) -> str:
    """Where ``entry``'s zip is downloaded from: ``$DEEPLAB_RESNET_RELEASE_URL`` if set, else the entry's URL."""
    return os.environ.get(RELEASE_URL_ENV) or entry.url


def manual_steps(entry: WeightsEntry, url: str) -> str:
    """What to do by hand when the download is impossible."""
    target = cached_path(entry.name)
    return (
        f"download {url} by hand (browser or 'curl -L -O {url}'), then run:\n"
        f"  deeplab weights download {entry.name} --from-zip {entry.archive_name}\n"
        f"or: unzip -j {entry.archive_name} '*{entry.member}' && "
        f"deeplab convert {entry.member} {target}" + (" --not-restore-last" if entry.not_restore_last else "")
    )


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = 30.0) -> None:
    """Stream ``url`` to ``dest`` (atomically: a failed download leaves nothing)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(dest) as tmp:
        total = int(response.headers.get("Content-Length") or 0) or None
        done = 0
        with (
            open(tmp, "wb") as out,
            Progress(f"downloading {dest.name}", total, unit="MB", scale=1e6, enabled=progress) as bar,
        ):
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                bar.set(done)
        if total is not None and done != total:
            raise DeepLabError(f"download of {url} stopped after {done} of {total} bytes; run the command again")


def _safe_member(archive: zipfile.ZipFile, entry: WeightsEntry, where: str) -> zipfile.ZipInfo:
    """The entry's member, after refusing archives with absolute or ``..`` member names."""
    for info in archive.infolist():
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DeepLabError(
                f"{where}: unsafe member name {info.filename!r} in the zip; refusing to use this archive"
            )
    found = [i for i in archive.infolist() if PurePosixPath(i.filename).name == entry.member and not i.is_dir()]
    if len(found) != 1:
        raise DeepLabError(f"{where}: expected one {entry.member} in the zip, found {len(found)}")
    return found[0]


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file, as hex (every download check in the package uses this one)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def install_from_zip(entry: WeightsEntry, zip_path: Path, target: Path, source: str) -> None:
    """Verify the zip, extract the entry's member to a temporary file, convert it to ``target``."""
    where = str(zip_path)
    if entry.sha256 is not None and sha256_of(zip_path) != entry.sha256:
        raise DeepLabError(f"{where}: SHA-256 does not match the registry's; the file is damaged or not the release")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            info = _safe_member(archive, entry, where)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".extract-") as tmp:
                member_path = Path(tmp) / entry.member
                with archive.open(info) as src, open(member_path, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)  # the CRC-32 is checked at the end
                convert(
                    member_path, target, not_restore_last=entry.not_restore_last, num_classes=entry.num_classes,
                    dataset=entry.dataset, source=source,
                    expect_architecture={"blocks": list(entry.blocks), "width": entry.width},
                    expect_convention=entry.convention,
                )  # fmt: skip
    except zipfile.BadZipFile as exc:
        raise DeepLabError(f"{where}: not a valid zip file ({exc}); delete it and download again") from exc


def fetch(
    name: str, *, url: str | None = None, from_zip: str | Path | None = None, force: bool = False,
    progress: bool = True,
) -> Path:  # fmt: skip
    """The cached native weight file for registry entry ``name``, downloading it if needed.

    Args:
        name: a key of :data:`REGISTRY` (``voc12``, ``voc12-trainval``, ``coco-init``).
        url: download from here instead of the entry's URL (a mirror; without it,
            ``$DEEPLAB_RESNET_RELEASE_URL`` if set, see :func:`release_url`).
        from_zip: use this already-downloaded release zip instead of downloading.
        force: convert again even if a cached file exists.
        progress: show download progress on stderr.
    """
    entry = get_entry(name)
    target = cached_path(name)
    if entry.warning:
        print(f"warning: {entry.warning}", file=sys.stderr)
    if target.is_file() and not force:
        return target
    url = url or release_url(entry)
    if from_zip is not None:
        zip_path = Path(from_zip)
        if not zip_path.is_file():
            raise DeepLabError(f"file not found: {zip_path}")
    else:
        zip_path = cache_dir() / entry.archive_name
        if not zip_path.is_file():
            try:
                download(url, zip_path, progress=progress)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DeepLabError(
                    f"weights {name!r} are not downloaded yet and {url} could not be fetched ({reason}).\n"
                    + manual_steps(entry, url)
                ) from exc
    try:
        install_from_zip(
            entry, zip_path, target, f"{name}: {entry.member} from {url if from_zip is None else zip_path}"
        )
    except DeepLabError:
        if from_zip is None:
            zip_path.unlink(missing_ok=True)  # a bad download must not poison the cache
        raise
    return target


def is_registered_name(spec: str) -> bool:
    return spec in REGISTRY and not Path(spec).exists()


def read_registered(spec: str) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """A reader for ``READERS``: a registry name → its (cached, or fetched now) weights."""
    return read_native(fetch(spec))
