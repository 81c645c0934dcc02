"""Where results are written, checked before any work: no output replaces an input or another output.

``deeplab segment`` names each input's results by one rule:

- an input's outputs are named after its path relative to the deepest folder that holds all the
  inputs, without the suffix: ``photos/a.jpg`` → ``OUT/a.png``, and with ``trip/day1/x.jpg
  trip/day2/x.jpg`` → ``OUT/day1/x.png`` and ``OUT/day2/x.png``;
- inputs that would still share a name (``y.jpg`` and ``y.png`` in one folder) keep their suffix in
  it: ``OUT/y_jpg.png`` and ``OUT/y_png.png``;
- each output kind adds its own ending to that name (``NAME.png``, ``NAME_overlay.jpg``, ...).

A file given twice (a glob and a list naming the same image) is segmented once
(:func:`unique_inputs`). No output may be an input file or be written twice: :func:`plan_outputs`
refuses both, with one line, before any image is read.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .errors import DeepLabError

# The ending each kind of result adds to the input's output name.
ENDINGS: dict[str, str] = {
    "labels": ".png",
    "overlay": "_overlay.jpg",
    "mask": "_mask.png",
    "probs": "_probs.npy",
    "logits": "_logits.npy",
    "video_overlay": "_overlay.mp4",  # a video input's results (inference/video.py)
    "video_labels": "_labels.mkv",
}


def unique_inputs(inputs: Sequence[Path]) -> list[Path]:
    """``inputs`` without repeats of the same file (first occurrence kept, order kept)."""
    seen: set[str] = set()
    unique = []
    for path in inputs:
        key = _key(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _common_root(inputs: Sequence[Path]) -> Path:
    folders = {os.path.abspath(p.parent) for p in inputs}
    return Path(os.path.commonpath(sorted(folders)))


def output_names(inputs: Sequence[Path]) -> list[Path]:
    """The output name of each input (a relative path without an ending), in input order."""
    root = _common_root(inputs)
    relative = [Path(os.path.abspath(p)).relative_to(root) for p in inputs]
    names = [r.with_suffix("") for r in relative]
    counts = Counter(names)
    return [r.with_name(r.stem + "_" + r.suffix.lstrip(".")) if counts[n] > 1 else n for r, n in zip(relative, names)]


def plan_outputs(
    inputs: Sequence[Path], out_dir: Path, kinds: Sequence[str], *, extra: Sequence[Path] = ()
) -> list[dict[str, Path]]:
    """For each input, the path of each kind of output in ``out_dir``.

    ``extra`` are further files the command writes (a JSON summary). Raises :class:`DeepLabError`
    if an output would replace an input or if two outputs would share a path.
    """
    plans = [{kind: out_dir / (str(name) + ENDINGS[kind]) for kind in kinds} for name in output_names(inputs)]
    writes = [(source, path) for source, plan in zip(inputs, plans) for path in plan.values()]
    refuse_clashes(inputs, writes + [(None, path) for path in extra])
    return plans


def _key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def refuse_clashes(inputs: Sequence[Path], writes: Sequence[tuple[Path | None, Path]]) -> None:
    """Raise :class:`DeepLabError` if a write (``(the input it belongs to or None, path)``) would
    replace an input file or another write."""
    seen: dict[str, tuple[Path | None, Path]] = {}
    for source, path in writes:
        key = _key(path)
        if key in seen:
            raise DeepLabError(f"{path} would be written twice (for {seen[key][0]} and {source}): give each input once")
        seen[key] = (source, path)
    for source in inputs:
        if _key(source) in seen:
            written = seen[_key(source)][1]
            raise DeepLabError(f"writing {written} would replace the input {source}: choose another output path")


def check_writable_dir(folder: Path, option: str) -> None:
    """Fail now, naming ``folder``, if results cannot be written there (it is created later, by the
    first write, so that a refused run leaves nothing behind)."""
    if folder.exists() and not folder.is_dir():
        raise DeepLabError(f"{folder}: not a directory, cannot write results there ({option})")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DeepLabError(f"{existing}: not a directory, cannot create {folder} there ({option})")
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only(existing):
        raise OSError(errno.EROFS if _read_only(existing) else errno.EACCES, "cannot write", str(folder))


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
