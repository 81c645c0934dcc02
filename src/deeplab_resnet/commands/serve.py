"""``deeplab serve``: a local web page and JSON API that segment uploaded photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import missing_extra
from ..serve.limits import Limits
from .common import (
    add_backend_argument,
    add_crf_arguments,
    add_model_arguments,
    add_network_size_arguments,
    add_protocol_arguments,
    crf_params_from_args,
    int_at_least,
    int_between,
    load_model_from_args,
    pad_size_from_args,
    parse_scales,
    resolve_device,
    with_backend,
)

DESCRIPTION = (
    "Serve a web page (drop a photo, see its segmentation) and a JSON API (POST /v1/segment, GET /v1/model) "
    "on this machine. One model answers every request; requests of one image size that arrive together "
    "share a forward pass. Each request chooses crf=0|1 and flip=0|1 (--crf makes crf=1 the default; "
    "the --crf-* options set the CRF's parameters). Prints 'serving on http://HOST:PORT' once it listens; "
    "Ctrl-C stops it. "
    "Needs pip install 'deeplab_resnet[serve]'."
)

MB = 1024 * 1024
INSTALL_HINT = "deeplab serve needs FastAPI, uvicorn and python-multipart: pip install 'deeplab_resnet[serve]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument(
        "--port", type=int_between(0, 65535), default=8000, help="port (0 picks a free one; default: %(default)s)"
    )
    add_network_size_arguments(p)
    limits = Limits()
    g = p.add_argument_group("limits")
    g.add_argument(
        "--max-upload-mb", type=int_at_least(1), default=limits.max_upload_bytes // MB,
        help="largest upload in MB (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--max-pixels", type=int_at_least(1), default=limits.max_pixels,
        help="refuse images with more pixels than this, checked before decoding (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--queue-size", type=int_at_least(1), default=limits.queue_size,
        help="requests that may wait for the network; more are answered 503 (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--max-batch", type=int_at_least(1), default=limits.max_batch,
        help="most same-size requests run through the network together (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--batch-wait-ms", type=int_at_least(0), default=int(limits.batch_wait_ms),
        help="how long a request waits for others to share its batch (default: %(default)s)",
    )  # fmt: skip
    add_protocol_arguments(p)
    add_crf_arguments(p)
    add_backend_argument(p)


def _require_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from ..serve import upload  # noqa: F401  (python-multipart's parser)
    except ImportError as exc:
        raise missing_extra(exc, INSTALL_HINT) from exc


def weights_source(weights: str) -> str:
    """What ``GET /v1/model`` calls the weights: a registered name as given, a file by its name only
    (a client learns nothing of the server's directories)."""
    from ..weights.registry import is_registered_name

    return weights if is_registered_name(weights) else Path(weights).name


def build_app(args: argparse.Namespace):
    """The application ``deeplab serve`` runs for these arguments (its model loaded, its segmenter built)."""
    from ..inference.runtime import describe_engine
    from ..inference.segmenter import Segmenter
    from ..serve.app import create_app

    crf_default = args.crf
    # The CRF parameters of requests that ask for it, whether or not --crf made it their default.
    crf_args = argparse.Namespace(**{**vars(args), "crf": True})
    crf_params = crf_params_from_args(crf_args)
    args.crf_backend = crf_args.crf_backend
    scales = parse_scales(args.scales)
    device = resolve_device(args.device)
    model = load_model_from_args(args, device)
    network = with_backend(args, model, device)
    segmenter = Segmenter(
        network, model.spec, device=device, scales=scales, max_size=args.max_size or None,
        crf_backend=args.crf_backend, pad_size=pad_size_from_args(args, model.convention),
    )  # fmt: skip
    limits = Limits(
        max_upload_bytes=args.max_upload_mb * MB, max_pixels=args.max_pixels, queue_size=args.queue_size,
        max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
    )  # fmt: skip
    return create_app(
        segmenter, model.spec, limits, crf_params=crf_params, crf_default=crf_default,
        source=weights_source(args.weights),
        backend=describe_engine(network)["backend"],
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    _require_serve_extra()
    from ..serve.server import bind, run_server

    sock = bind(args.host, args.port)  # first: a taken port is said before the model loads
    try:
        app = build_app(args)
    except BaseException:
        sock.close()
        raise
    try:
        run_server(app, sock, args.host)
    finally:
        # A forward pass cannot be interrupted: if the network thread is still in one (a second
        # Ctrl-C), the process ends at once, as a normal exit would tear PyTorch down under it.
        args.exit_at_once = not app.state.queue.close(wait_s=1.0)
    return 0
