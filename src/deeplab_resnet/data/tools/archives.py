"""Safe, resumable extraction of the official tar / tgz / zip downloads.

A member is extracted only if it is a regular file or a directory whose path stays inside the
destination: absolute names, ``..`` components, links and device files are refused, because a
crafted archive could otherwise write anywhere (path traversal). The same rule holds for tar
archives (VOC, SBD) and zip archives (Cityscapes, GTA5, COCO, ADE20K).
"""

from __future__ import annotations

import json
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from ...atomic import atomic_write_text
from ...errors import DeepLabError

ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".zip")


def is_archive(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return Path(path).is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _check_member_name(name: str, archive: Path) -> None:
    """Refuse a member name that would land outside the destination (absolute, ``..``, drive letter)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DeepLabError(f"{archive}: refusing unsafe member path {name!r} (outside the destination)")


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        _check_member_name(member.name, archive)
        if member.issym() or member.islnk():
            raise DeepLabError(f"{archive}: refusing link member {member.name!r} -> {member.linkname!r}")
        if not (member.isfile() or member.isdir()):
            raise DeepLabError(f"{archive}: refusing special member {member.name!r} (device or fifo)")
        members.append(member)
    return members


def _safe_zip_members(zf: zipfile.ZipFile, archive: Path) -> list[zipfile.ZipInfo]:
    members = []
    for member in zf.infolist():
        _check_member_name(member.filename, archive)
        mode = member.external_attr >> 16  # the Unix mode, where the archiver recorded one
        if stat.S_ISLNK(mode):
            raise DeepLabError(f"{archive}: refusing link member {member.filename!r}")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise DeepLabError(f"{archive}: refusing special member {member.filename!r} (device or fifo)")
        members.append(member)
    return members


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        members = _safe_members(tar, archive)
        print(f"extracting {archive} into {dest} ({len(members)} entries) ...", flush=True)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: a second line of defence
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - older Pythons; the members were vetted above
            tar.extractall(dest, members=members)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = _safe_zip_members(zf, archive)
        print(f"extracting {archive} into {dest} ({len(members)} entries) ...", flush=True)
        zf.extractall(dest, members=members)


def _stamp(archive: Path) -> dict:
    stat = archive.stat()
    return {"archive": archive.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def extract_archive(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` under ``dest`` once; later calls with the same archive do nothing.

    A marker file records which archive (name, size, mtime) was fully extracted, so an
    interrupted extraction is redone and a completed one is not.

    Returns:
        ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / f".extracted-{archive.name}.json"
    stamp = _stamp(archive)
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == stamp:
                return dest
        except ValueError:
            pass
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DeepLabError(f"{archive}: cannot extract ({exc}); is the download complete?") from exc
    atomic_write_text(marker, json.dumps(stamp))
    return dest
