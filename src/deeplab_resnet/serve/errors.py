"""Errors as the web server answers them: ``{"error": "<one line>"}``, never a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse


def one_line(text: str) -> str:
    """``text`` on one line (a client reads one sentence; logs keep one line per event)."""
    return " ".join(str(text).split()) or "error"


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=dict(headers or {}))


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """FastAPI's list of validation errors as one sentence, e.g. ``query parameter crf: Input should be ...``."""
    parts = []
    for error in errors:
        where = [str(p) for p in error.get("loc", ())]
        place = f"{where[0]} parameter {'.'.join(where[1:])}" if len(where) > 1 else ".".join(where) or "request"
        parts.append(f"{place}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class CatchAll:
    """ASGI middleware: an exception nothing else handled becomes a 500 ``{"error": "internal error"}``
    and one log line (Starlette's own last resort would print a traceback); a request the server
    cancels as it stops becomes a 503."""

    def __init__(self, app, log: logging.Logger):
        self.app = app
        self.log = log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:  # the server stopped before the request was done (grace over)
            self.log.warning("stopped before answering %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await error_response(503, "the server is shutting down")(scope, receive, send)
        except Exception as exc:
            self.log.error(
                "internal error in %s %s: %s: %s", scope.get("method"), scope.get("path"), type(exc).__name__,
                one_line(str(exc)),
            )  # fmt: skip
            if not started:  # else the client already has a status line; the connection just ends
                await error_response(500, "internal error")(scope, receive, send)


class OneLineFormatter(logging.Formatter):
    """Log records as one line each: an exception's type and message in place of its traceback
    (the server's log says what happened; a traceback is for a debugger)."""

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if message.startswith("Traceback (most recent call last):"):  # a traceback logged as text: its last line
            message = [line for line in message.splitlines() if line.strip()][-1]
        fields = {"msg": message, "args": None, "exc_info": None, "exc_text": None, "stack_info": None}
        record = logging.makeLogRecord({**record.__dict__, **fields})
        line = super().format(record)
        if exc is not None:
            line += f" ({type(exc).__name__}: {str(exc)})" if str(exc) else f" ({type(exc).__name__})"
        return one_line(line)


def log_config(level: str) -> dict:
    """uvicorn's and this package's server logs on stderr, one line per event at ``level`` and above."""
    handler = {"class": "logging.StreamHandler", "formatter": "one_line", "stream": "ext://sys.stderr"}
    logger = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"one_line": {"()": OneLineFormatter, "fmt": "%(levelname)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": logger,
            "uvicorn.access": {**logger, "level": "WARNING"},
            "deeplab_resnet.serve": logger,
        },
    }
