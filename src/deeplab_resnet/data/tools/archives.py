"""Safe, resumable extraction of the official tar / tgz downloads.

A member is extracted only if it is a regular file or a directory whose path stays inside the
destination: absolute names, ``..`` components, links and device files are refused, because a
crafted archive could otherwise write anywhere (path traversal).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path, PurePosixPath

from ...atomic import atomic_write_text
from ...errors import DeepLabError

ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")


def is_archive(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return Path(path).is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DeepLabError(f"{archive}: refusing unsafe member path {member.name!r} (outside the destination)")
        if member.issym() or member.islnk():
            raise DeepLabError(f"{archive}: refusing link member {member.name!r} -> {member.linkname!r}")
        if not (member.isfile() or member.isdir()):
            raise DeepLabError(f"{archive}: refusing special member {member.name!r} (device or fifo)")
        members.append(member)
    return members


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
        with tarfile.open(archive) as tar:
            members = _safe_members(tar, archive)
            print(f"extracting {archive} into {dest} ({len(members)} entries) ...", flush=True)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: a second line of defence
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; the members were vetted above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DeepLabError(f"{archive}: cannot extract ({exc}); is the download complete?") from exc
    atomic_write_text(marker, json.dumps(stamp))
    return dest
