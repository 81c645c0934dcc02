"""The one exception type that carries a message meant for the user.

Code at the edges (file readers, argument checks) raises :class:`DeepLabError` with a
sentence that says what is wrong and what to do; the CLI prints it on one line and exits
non-zero instead of showing a traceback.
"""

from __future__ import annotations


class DeepLabError(Exception):
    """An error caused by the user's input (a file, an argument), with a readable message."""
