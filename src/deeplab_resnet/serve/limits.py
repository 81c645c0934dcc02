"""What one request may cost, and how requests share the network: ``deeplab serve``'s limits.

Kept apart from the application (and free of heavy imports) so that the command's ``--help``
shows these defaults without loading FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """``max_upload_bytes``: the largest request body; ``max_pixels``: the largest image, checked from
    its header before decoding; ``queue_size``: requests that may wait for the network (more are
    refused with 503); ``max_batch`` and ``batch_wait_ms``: how many same-size requests may share one
    forward pass, and how long the first waits for the others; ``upload_idle_s``: how long an upload
    may send nothing before it is refused (408), so stalled clients do not hold memory forever."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 25_000_000
    queue_size: int = 16
    max_batch: int = 4
    batch_wait_ms: float = 10.0
    upload_idle_s: float = 30.0
