"""Where the package keeps what it can rebuild: converted weights, ONNX exports, compiled kernels.

One rule, :func:`cache_dir`, for every cache, so that they all land in the same folder:

1. ``$XDG_CACHE_HOME/deeplab_resnet`` when ``XDG_CACHE_HOME`` is set to an absolute path (the XDG
   base-directory specification says a relative or empty value is to be ignored);
2. else ``~/.cache/deeplab_resnet`` when the home folder is usable: ``$HOME`` (or, without it,
   the user's passwd entry) names an existing folder in which ``.cache`` exists or can be made;
3. else a private folder ``<tmp>/deeplab_resnet-<uid>`` (mode 0700, refused unless it is a real
   folder owned by this user), with one warning on stderr. This is the case in containers run
   as a user id without a passwd entry or home (``docker --user 12345``). That folder does not
   survive a reboot: set ``XDG_CACHE_HOME`` to keep the cache.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
import tempfile
from pathlib import Path

from .errors import DeepLabError

PACKAGE_FOLDER = "deeplab_resnet"


def cache_dir(sub: str = "") -> Path:
    """The cache folder for ``sub`` (e.g. ``"onnx"``; ``""`` for the package's top cache folder).

    Only the temporary fallback is created here (it must be made private before use); callers
    create the folder they write to.
    """
    root = _package_root()
    return root / sub if sub else root


def _package_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / PACKAGE_FOLDER
    home = _usable_home()
    if home is not None:
        return home / ".cache" / PACKAGE_FOLDER
    return _private_temp_root()


def _usable_home() -> Path | None:
    """The home folder, if there is one where ``.cache`` exists or can be created."""
    # expanduser falls back to the passwd entry when HOME is unset, and returns "~" unchanged
    # when there is neither (Path.home() would raise instead).
    home = os.environ.get("HOME") or os.path.expanduser("~")
    if not home or not os.path.isabs(home) or not os.path.isdir(home):
        return None
    dot_cache = os.path.join(home, ".cache")
    if os.path.isdir(dot_cache):
        return Path(home) if os.access(dot_cache, os.W_OK | os.X_OK) else None
    return Path(home) if os.access(home, os.W_OK | os.X_OK) else None


@functools.lru_cache(maxsize=1)
def _private_temp_root() -> Path:
    """``<tmp>/deeplab_resnet-<uid>``, created 0700; warns once per process."""
    uid = os.getuid()
    path = Path(tempfile.gettempdir()) / f"{PACKAGE_FOLDER}-{uid}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise DeepLabError(f"no usable cache folder: set XDG_CACHE_HOME to a writable folder ({exc})") from exc
    # Another user could have made the folder first (or a link to theirs): never cache there.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise DeepLabError(
            f"{path} is not a private folder of this user; set XDG_CACHE_HOME to a writable folder for the cache"
        )
    print(
        f"warning: no usable home folder and XDG_CACHE_HOME is not set; caching in {path} "
        "(set XDG_CACHE_HOME to keep the cache across reboots)",
        file=sys.stderr,
    )
    return path
