"""The web application: the page, ``POST /v1/segment``, ``GET /v1/model`` and ``GET /healthz``.

:func:`create_app` builds it from a :class:`~deeplab_resnet.inference.segmenter.Segmenter`, so it
can be tested without a socket (FastAPI's TestClient). One segmenter serves every request; the
network runs in the :class:`~.batching.BatchQueue`'s worker thread, decoding and encoding in
the server's thread pool, so the event loop only moves bytes. Every refusal is a 4xx with a
one-line JSON ``{"error": ...}``; an unexpected fault is a 500 ``{"error": "internal error"}``
and one line in the log, never a traceback sent to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..crf import PRESETS, CRFParams
from ..errors import DeepLabError
from ..images import DamagedImageError, NotAnImageError, TooManyPixelsError, decode_image_bytes, to_rgb_array
from ..inference.segmenter import Segmentation, Segmenter
from ..models.spec import ModelSpec
from .batching import BatchQueue, QueueFull
from .errors import CatchAll, error_response, validation_message
from .limits import Limits
from .results import label_png, model_json, result_json
from .upload import UploadError, form_file, read_bounded

LOG = logging.getLogger("deeplab_resnet.serve")


@dataclass(frozen=True)
class _Options:
    """What a request may choose: the part of a batch's key that is not the image size."""

    flip: bool
    crf: bool


class _Network:
    """The segmenter with each request's options: one copy per option set, all sharing one network."""

    def __init__(self, segmenter: Segmenter, crf_params: CRFParams | None):
        self.segmenter = segmenter
        self.crf_params = crf_params
        self._variants: dict[_Options, Segmenter] = {}

    def variant(self, options: _Options) -> Segmenter:
        if options not in self._variants:
            variant = copy.copy(self.segmenter)  # shares the network and its weights
            variant.flip, variant.crf = options.flip, self.crf_params if options.crf else None
            self._variants[options] = variant
        return self._variants[options]

    def run_batch(self, key: Hashable, images: Sequence[np.ndarray]) -> list[Segmentation]:
        _height, _width, options = key
        return self.variant(options).segment_batch(images)


def _decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    return to_rgb_array(decode_image_bytes(data, "the uploaded image", max_pixels or None))


def create_app(
    segmenter: Segmenter, spec: ModelSpec, limits: Limits | None = None, *, crf_params: CRFParams | None = None,
    crf_default: bool = False, source: str = "", backend: str = "torch",
) -> FastAPI:  # fmt: skip
    """The application serving ``segmenter`` (whose ``flip`` and ``crf`` each request chooses).

    ``crf_params`` are the CRF parameters of requests with ``crf=1`` (default: the segmenter's, else
    the deeplab-resnet preset); ``crf_default`` is what a request without ``crf`` gets; ``source``
    names the weights in ``GET /v1/model``; ``backend`` names what runs the network.
    """
    limits = limits or Limits()
    if crf_params is None:
        crf_params = segmenter.crf or PRESETS["deeplab-resnet"]
    network = _Network(segmenter, crf_params)
    queue = BatchQueue(
        network.run_batch, max_queue=limits.queue_size, max_batch=limits.max_batch, wait_s=limits.batch_wait_ms / 1000
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close(wait_s=1.0)  # a batch still running after uvicorn's grace: deeplab serve ends without it

    app = FastAPI(title="deeplab_resnet", summary="DeepLab-v2 semantic segmentation", lifespan=lifespan)
    app.state.queue = queue
    app.state.limits = limits
    _add_error_handlers(app)
    _add_pages(app, model_json(spec, source))
    _add_segment_route(app, queue, limits, backend=backend, crf_default=crf_default)
    return app


def _add_pages(app: FastAPI, model_info: dict) -> None:
    """The page (a static file of this package), the model's description and the health check."""
    page = resources.files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model() -> dict:
        return model_info


def _add_segment_route(app: FastAPI, queue: BatchQueue, limits: Limits, *, backend: str, crf_default: bool) -> None:
    @app.post("/v1/segment", openapi_extra=_UPLOAD_SCHEMA, responses=_SEGMENT_RESPONSES)
    async def segment(
        request: Request,
        format: Literal["png", "json"] = Query("png", description="png: the label PNG; json: the class summary"),
        crf: int = Query(int(crf_default), ge=0, le=1, description="1: refine with the dense CRF"),
        flip: int = Query(0, ge=0, le=1, description="1: also run the mirrored image and average"),
        include_png: int = Query(0, ge=0, le=1, description="json: add label_png_base64"),
        include_overlay: int = Query(0, ge=0, le=1, description="json: add overlay_png_base64"),
    ) -> Response:
        """Segment the image of the multipart field ``image``."""
        clock = _Clock()
        body = await read_bounded(
            request.stream(), request.headers.get("content-length"), limits.max_upload_bytes,
            idle_s=limits.upload_idle_s,
        )  # fmt: skip
        data, _filename = await run_in_threadpool(form_file, body, request.headers.get("content-type"), "image")
        clock.lap("read")
        queue.check_room()  # before the costly decoding (the body is read: see read_bounded)
        rgb = await run_in_threadpool(_decode_upload, data, limits.max_pixels)
        clock.lap("decode")
        job = queue.submit((rgb.shape[0], rgb.shape[1], _Options(flip=bool(flip), crf=bool(crf))), rgb)
        result = await _answer_unless_gone(request, job.future)
        clock.laps["queue"] = 1000 * (job.started_at - job.queued_at)
        clock.laps["segment"] = 1000 * (job.finished_at - job.started_at)
        clock.mark()
        if format == "png":
            return Response(await run_in_threadpool(label_png, result), media_type="image/png")
        answer = await run_in_threadpool(
            result_json, rgb, result, include_png=bool(include_png), include_overlay=bool(include_overlay)
        )
        clock.lap("encode")
        answer.update(backend=backend, crf=bool(crf), flip=bool(flip), batch_size=job.batch_size, ms=clock.summary())
        return JSONResponse(answer)


async def _answer_unless_gone(request: Request, future) -> Segmentation:
    """The job's result; if the client goes away first, the job is cancelled (a job still waiting
    gives its place in the queue back and never runs) and :class:`ClientDisconnect` is raised."""
    answer = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not answer.done():
        future.cancel()
        answer.cancel()
        raise ClientDisconnect()
    return answer.result()


async def _disconnect(request: Request) -> None:
    """Returns when the client disconnects (the body is read: nothing else can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Clock:
    """Milliseconds spent in each step of a request."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def mark(self) -> None:
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = 1000 * (now - self.last)
        self.last = now

    def summary(self) -> dict[str, float]:
        total = 1000 * (time.perf_counter() - self.start)
        return {name: round(ms, 2) for name, ms in {**self.laps, "total": total}.items()}


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as ``{"error": "<one line>"}`` with the status that says why."""

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(DeepLabError)
    async def bad_input(request: Request, exc: DeepLabError) -> JSONResponse:
        status = 415 if isinstance(exc, NotAnImageError) else 413 if isinstance(exc, TooManyPixelsError) else 400
        if not isinstance(exc, (NotAnImageError, DamagedImageError, TooManyPixelsError)):
            LOG.info("refused: %s", str(exc).replace("\n", " "))
        return error_response(status, str(exc))

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> Response:
        LOG.debug("the client of %s %s left during its upload", request.method, request.url.path)
        return Response(status_code=400)  # nobody reads it

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(503, f"the server is busy ({exc}); try again shortly", headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    app.add_middleware(CatchAll, log=LOG)


_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary", "description": "the photo"}},
                }
            }
        },
    }
}

_SEGMENT_RESPONSES = {
    200: {"content": {"image/png": {}}, "description": "the label PNG (format=png) or the JSON summary"},
    400: {"description": "a damaged image or a malformed form"},
    413: {"description": "the upload or the image is too large"},
    415: {"description": "not an image"},
    422: {"description": "a bad query parameter"},
    503: {"description": "the queue is full (see Retry-After)"},
}
