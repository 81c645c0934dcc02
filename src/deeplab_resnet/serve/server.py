"""Running the application with uvicorn on a socket bound here, and saying where once it listens."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from ..errors import DeepLabError
from .errors import log_config


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); a refusal is one line naming the option."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise DeepLabError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port (0 picks a free one) "
            "or --host"
        ) from exc
    except (OverflowError, ValueError) as exc:
        raise DeepLabError(f"--port must be 0..65535, got {port}") from exc


def url_of(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, printing ``serving on URL`` on stdout once the socket accepts requests, and
    calling ``on_exit`` as soon as it is asked to stop (before it waits for the requests in flight)."""

    def __init__(self, config: uvicorn.Config, url: str, on_exit: Callable[[], object]):
        super().__init__(config)
        self.url = url
        self.on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(f"serving on {self.url}", flush=True)

    def handle_exit(self, sig: int, frame) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:  # a signal handler only schedules: the work runs on the loop
            self._loop.call_soon_threadsafe(self.on_exit)


def run_server(app: FastAPI, sock: socket.socket, host: str, *, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` (from :func:`bind`) until SIGINT or SIGTERM.

    On the signal, requests still waiting for the network are answered 503 at once (the queue
    closes); the batch running finishes if it can within uvicorn's grace of 5 s, else its
    requests are answered 503 too. uvicorn then raises the signal again, so the command ends as
    the CLI documents for it (130 or 143)."""
    config = uvicorn.Config(
        app, log_config=log_config(log_level), log_level=log_level, timeout_graceful_shutdown=5, server_header=False
    )
    try:
        _Server(config, url_of(host, sock), on_exit=lambda: app.state.queue.close(wait_s=0)).run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
